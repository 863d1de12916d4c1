"""The GRPO trainer's configuration: typed, validated up front, with messages that say what to fix;
and what its names stand for (:func:`pool_and_queries`, :func:`config_judge`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import TrainingConfigError
from ..rewards import RewardWeights
from ..scale.options import RayOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..pool import ModelPool
    from ..types import Query


class PolicyConfig(BaseModel):
    """The router model: ``base="tiny"`` builds a small random model (tests, the sim bench);
    otherwise a folder, a cached hub id, or a local-registry name (e.g. ``qwen2.5-coder-0.5b-instruct``)."""

    model_config = ConfigDict(extra="forbid")

    base: str = "tiny"
    tiny_hidden_size: int = Field(64, ge=8)
    tiny_layers: int = Field(2, ge=1)
    tiny_window: int | None = Field(16, ge=2, description="sliding attention window of the tiny router (None: full)")
    lora_r: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1)
    max_length: int = Field(1024, ge=16)
    head: Literal["lm", "linear"] = "lm"
    temperature: float = Field(1.0, gt=0.0)
    free_steps: int | None = Field(None, ge=1, description="choose the model of the first N steps only, then keep "
                                   "the last one (committed steps); default: every step free, or depth + 1 on a "
                                   "routing tree of that depth (the choices it records)")


class GRPOConfig(BaseModel):
    """Everything ``roro train-router`` needs. Defaults train a tiny router on the sim bench."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("sim:careful,hint_accuracy=0.95",
                         description="'sim[:preset,...]', 'rg:<name>', 'sample', 'tree:PATH' (a recorded tree's queries) or a .jsonl path")
    pool: str | None = Field(None, description="pool file or 'tree:PATH' (replay a recorded routing tree); default: the sim "
                                              "pool for sim datasets, else the local pool")
    train_queries: int = Field(64, ge=1)
    eval_queries: int = Field(32, ge=0)
    seed: int = 0

    group_size: int = Field(8, description="G rollouts per query")
    queries_per_update: int = Field(4, ge=1)
    updates: int = Field(30, ge=1)
    epochs: int = Field(1, ge=1, le=8, description="passes over each batch of rollouts (1 = strictly on-policy)")
    minibatch_size: int = Field(16, ge=1, description="trajectories per gradient step")
    lr: float = 5e-3
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    clip: float = Field(0.2, gt=0.0, lt=1.0)
    kl_coef: float = Field(0.02, ge=0.0)
    entropy_coef: float = Field(0.0, ge=0.0, description="> 0 adds -entropy_coef x the mean entropy of the routing "
                                "decisions to the loss: keeps a router exploring instead of collapsing onto one "
                                "model before the rewards of the others were seen")
    advantage_norm: Literal["std", "none"] = Field(
        "std", description="'std': (reward - group mean) / group std (GRPO); 'none': reward - group mean (Dr. GRPO). "
                           "With a cost term, 'std' scales a group that differs only in cost to the size of an "
                           "outcome flip, which pushes a router to the cheap model where it cannot tell such groups apart")

    rewards: RewardWeights = Field(default_factory=RewardWeights)
    judge: str = Field("sim-rule", description="'none', 'sim-rule' (sim bench ground truth), 'tree:PATH' (exact step "
                                               "labels of a recorded training tree), or a LocalJudge folder / "
                                               "'roro train-judge' run")
    judge_cache: str | None = Field(None, description="a JSONL file that keeps the Judge's scores of rollouts: another "
                                    "seed or a rerun with the same Judge reads them instead of judging again (a file "
                                    "written for another Judge is refused)")
    step_process_weight: float = Field(0.0, ge=0.0, description="> 0 adds step-level process advantages from per-step Judge scores")

    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    max_steps: int = Field(16, ge=1)
    cost_budget: float | None = Field(None, ge=0.0)
    concurrency: int = Field(32, ge=1)
    ray: RayOptions | None = Field(None, description="run the rollouts on Ray workers: 'auto', a Ray address, or "
                                                     "{address, workers, num_cpus, num_gpus, ...} (roro-sdk[ray]); "
                                                     "the policy trains here and its weights go to the workers")

    out_dir: str = "runs/grpo"
    checkpoint_every: int = Field(5, ge=1)
    resume: bool = Field(False, description="continue the run in out_dir from its checkpoint; without it (or "
                                            "overwrite) a folder that already holds files is refused")
    overwrite: bool = Field(False, description="start afresh in out_dir, deleting an earlier run's files there")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="the frozen base's dtype (auto: bfloat16 on CUDA, float32 on CPU); the LoRA adapter and "
                            "the optional head always train in float32")

    @field_validator("ray", mode="before")
    @classmethod
    def _ray(cls, v: Any) -> Any:
        return {"address": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> GRPOConfig:
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2: GRPO's advantage compares rollouts of the same query")
        rollouts = self.queries_per_update * self.group_size
        if rollouts % self.minibatch_size:
            raise ValueError(f"queries_per_update x group_size = {rollouts} rollouts per update must be divisible by "
                             f"minibatch_size = {self.minibatch_size}; pick a minibatch_size that divides {rollouts}")
        if not 0.0 < self.lr <= 0.1:
            raise ValueError(f"lr = {self.lr} is outside (0, 0.1]; LoRA learning rates are usually 1e-5..1e-3 for real "
                             "models (up to ~1e-2 for the tiny test routers)")
        if self.queries_per_update > self.train_queries:
            raise ValueError(f"queries_per_update ({self.queries_per_update}) exceeds train_queries ({self.train_queries})")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run in out_dir, or replace it")
        if self.rewards.lambda_p > 0 and self.judge == "none":
            raise ValueError("rewards.lambda_p > 0 needs a judge: set judge to 'sim-rule' or a LocalJudge folder, or "
                             "set rewards.lambda_p = 0 for the outcome-only ablation")
        return self

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2))


def apply_overrides(data: dict, overrides: dict) -> dict:
    """``data`` with ``overrides`` merged in. A dotted key (``"rewards.lambda_p"``) sets one field
    of a section and keeps its other fields; a mapping value is merged into the section the same way."""
    out = dict(data)
    for key, value in overrides.items():
        head, _, rest = str(key).partition(".")
        if not head:
            raise TrainingConfigError(f"override {key!r}: empty field name; write section.field=value")
        if rest:
            value = {rest: value}
        if isinstance(value, dict) and (rest or isinstance(out.get(head), dict)):
            section = out.get(head, {})
            if section is None:
                section = {}
            if not isinstance(section, dict):
                raise TrainingConfigError(f"override {key!r}: {head} is a value ({section!r}), not a section with fields")
            value = apply_overrides(section, value)
        out[head] = value
    return out


def load_grpo_config(path: str | Path | None = None, **overrides) -> GRPOConfig:
    """A config from a YAML/JSON/TOML file plus keyword overrides (dotted keys such as
    ``"rewards.lambda_p"`` set one field of a section); errors name the field."""
    data: dict = {}
    if path is not None:
        from .._files import load_mapping_file

        data = load_mapping_file(path, what="training config", error=TrainingConfigError)
    data = apply_overrides(data, overrides)
    try:
        return GRPOConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc'])) or 'config'}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors()]
        raise TrainingConfigError("invalid training config:\n" + "\n".join(lines)) from None


def pool_and_queries(cfg: GRPOConfig) -> tuple[ModelPool, list[Query], list[Query]]:
    """The pool and the (train, held-out) queries the config names: its ``pool`` file, else the sim
    pool for a ``sim`` dataset, else the default pool; ``train_queries`` + ``eval_queries`` of
    ``dataset``, seeded by ``seed``."""
    from ..pool import ModelPool
    from ..tasks import load_dataset

    from ..tree.replay import is_tree_spec, tree_of_spec

    if is_tree_spec(cfg.pool):  # a recorded routing tree: rollouts replay it, no model is called
        pool = tree_of_spec(cfg.pool).pool()
    elif cfg.pool:
        pool = ModelPool.from_file(cfg.pool)
    elif cfg.dataset.startswith("sim"):
        from ..sim import parse_sim_spec, sim_pool

        pool = sim_pool(parse_sim_spec(cfg.dataset))
    else:
        from ..defaults import default_pool

        pool = default_pool()
    n = cfg.train_queries + cfg.eval_queries
    queries = tree_of_spec(cfg.dataset).queries[:n] if is_tree_spec(cfg.dataset) else load_dataset(cfg.dataset, limit=n, seed=cfg.seed)
    return pool, queries[: cfg.train_queries], queries[cfg.train_queries:]


def tree_limits(cfg: GRPOConfig, pool: ModelPool) -> int | None:
    """The router's ``free_steps`` for ``pool``: the config's; on a replayed routing tree of depth D
    at most D + 1 (by default exactly that), and ``max_steps`` at most what the tree recorded."""
    from ..tree import RoutingTree

    tree = RoutingTree.of_pool(pool)
    if tree is None:
        return cfg.policy.free_steps
    tree.check_max_steps(cfg.max_steps, option="max_steps", error=TrainingConfigError)
    if cfg.policy.free_steps is not None and cfg.policy.free_steps > tree.free_steps:
        raise TrainingConfigError(f"policy.free_steps = {cfg.policy.free_steps}, but {tree.folder} records every model's "
                                  f"choice for the first {tree.free_steps} steps only (depth {tree.free_steps - 1}); set "
                                  f"policy.free_steps <= {tree.free_steps}, or record a deeper tree")
    return cfg.policy.free_steps or tree.free_steps


def config_judge(cfg: GRPOConfig) -> Any:
    """The process Judge the config names: None for ``none``, the sim bench's rule judge for
    ``sim-rule``, else a :class:`~roro_sdk.judge.LocalJudge` from the named folder or model."""
    if cfg.judge == "none":
        return None
    if cfg.judge == "sim-rule":
        from .sim_bench import sim_rule_judge

        return sim_rule_judge()
    from ..tree.replay import is_tree_spec, tree_of_spec

    if is_tree_spec(cfg.judge):
        from ..tree.labels import tree_judge

        return tree_judge(tree_of_spec(cfg.judge))
    from ..judge import LocalJudge

    return LocalJudge.from_pretrained(cfg.judge, device=cfg.device)
