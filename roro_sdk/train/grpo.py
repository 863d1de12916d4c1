"""GRPO for the stepwise router: one loop, top to bottom, in this one file.

    for each update:
      1. take a batch of queries; run G rollouts of each with the current policy (sampling) in
         the real runtime, concurrently;
      2. reward each rollout: outcome + lambda_p * Judge process score (gated by correctness)
         - lambda_c * cost normalised within its group (roro_sdk.rewards);
      3. advantages: (r - mean_G) / std_G per group (+ optional step-level process advantages);
      4. score every decision of every rollout in ONE forward per trajectory batch: old log-probs
         (the rollout policy) and reference log-probs (LoRA adapter disabled), no gradients;
      5. PPO-clip steps with a KL penalty to the reference, on LoRA (and head) parameters only;
      6. log, checkpoint (safetensors + JSON), go on.

Below: the result, setup, advantages (3), the loss (5), scoring a batch (4), process scores (2),
checkpoints (6), evaluation, then :func:`train_router`. Shared with inference, and kept there: the
state's encoding and action logits (:mod:`roro_sdk.policy`), rewards (:mod:`roro_sdk.rewards`).

Everything random is seeded from (config seed, update index), and checkpoints hold the trainable
weights and the optimiser state, so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
import warnings
import zlib
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from .._extras import require

require("torch", extra="train")  # one line naming the extra, not a torch traceback
import torch
from torch import Tensor

from ..errors import ProcessScoringError, RoroError, TrainingConfigError
from ..eval.summary import summarize
from ..policy.router import PolicyRouter
from ..policy.scoring import action_logits, decoder_hidden_states
from ..pool import ModelPool
from ..rewards import group_rewards
from ..runtime import StepwiseRuntime
from ..structured import spent_of, usage_delta
from ..types import Query, Trajectory, Usage
from .grpo_config import GRPOConfig, config_judge, pool_and_queries, tree_limits
from .grpo_rollouts import RayRollouts, trainable_parameters
from .judged_scores import JudgedScores, judge_fingerprint
from .outdir import fsync_dir, fsync_tree, prepare_run_folder, rewrite_jsonl
from .sim_bench import sim_escalation_shares, sim_rule_judge  # noqa: F401  (sim_rule_judge: its old path)

# Words the tiny router's on-the-fly vocabulary needs besides the queries' own words.
_TINY_VOCAB = ("route each step to a model . models : = , question cost so far budget left e-01 e-02 e-03 e-04 e-05 e-06 "
               "e-07 e+00 step [ ] ]: hard easy ok mistake recovered carried answer next first " + " ".join(map(str, range(100)))
               + " " + " ".join("ABCDEFGHIJKLMNOP"))


# ----------------------------------------------------------------------------------- result
@dataclass
class GRPOResult:
    """What :func:`train_router` returns.

    ``history``: one dict of metrics per update (the records of ``metrics.jsonl``, resumed updates
    included). ``router_dir``: the folder the trained router was saved to (``PolicyRouter.load``,
    or ``--router policy:<dir>``). ``updates_run``: updates this call made (fewer than
    ``len(history)`` after a resume; 0 when the checkpoint already held them all).
    ``judge_failures``: rollouts left out of their group because the Judge or Rubricor failed on
    them. ``judge_usage``: what the Judge and Rubricor spent over the run (``cost_usd``,
    ``input_tokens``, ``output_tokens``, ``priced``); None without a judge. ``eval``: held-out
    metrics (:func:`evaluate_router`); None without held-out queries. ``router``: the trained
    router, ready for inference (argmax, eval mode).

    It used to be a dict: ``result["history"]``, ``result.get(...)`` and ``"eval" in result``
    still work for one release, with a DeprecationWarning; use the attributes.
    """

    history: list[dict[str, Any]]
    router_dir: str
    updates_run: int
    judge_failures: int = 0
    judge_usage: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    router: PolicyRouter | None = field(default=None, repr=False)

    def _as_dict(self, how: str) -> dict[str, Any]:
        warnings.warn(f"GRPOResult is no longer a dict: {how} is deprecated and will be removed in the next release; "
                      "use its attributes (result.history, result.eval, ...)", DeprecationWarning, stacklevel=3)
        # the dict had no "eval" key without held-out queries (nor "router" when built by hand)
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.name in ("eval", "router") and getattr(self, f.name) is None)}

    def __getitem__(self, key: str) -> Any:
        return self._as_dict(f"result[{key!r}]")[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._as_dict(f"result.get({key!r})").get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._as_dict(f"{key!r} in result")

    def keys(self) -> list[str]:
        return list(self._as_dict("result.keys()"))


# ------------------------------------------------------------------------------------ setup
def build_policy(cfg: GRPOConfig, models: Sequence[str], queries: Sequence[Query], *,
                 free_steps: int | None = None) -> PolicyRouter:
    """A fresh router: the base model (tiny random, or loaded) with a new LoRA adapter;
    ``free_steps`` (default the config's): see :class:`PolicyRouter`."""
    from ..hf import add_lora, load_causal_lm, set_seed, tiny_model_and_tokenizer

    set_seed(cfg.seed)
    if cfg.policy.base == "tiny":
        corpus = [q.question for q in queries] + [_TINY_VOCAB] + list(models)
        model, tok = tiny_model_and_tokenizer(corpus, seed=cfg.seed, hidden_size=cfg.policy.tiny_hidden_size,
                                              num_layers=cfg.policy.tiny_layers, sliding_window=cfg.policy.tiny_window)
        base_name = None
    else:
        model, tok = load_causal_lm(cfg.policy.base)
        base_name = cfg.policy.base
    model = add_lora(model, r=cfg.policy.lora_r, alpha=cfg.policy.lora_alpha)
    head = torch.nn.Linear(model.config.hidden_size, len(models)) if cfg.policy.head == "linear" else None
    router = PolicyRouter(model, tok, models, max_length=cfg.policy.max_length, mode="sample",
                          temperature=cfg.policy.temperature, head=head, seed=cfg.seed,
                          free_steps=cfg.policy.free_steps if free_steps is None else free_steps)
    router.base_name = base_name
    return router


def _device(cfg: GRPOConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _dtype(cfg: GRPOConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]


def _place(router: PolicyRouter, device: torch.device, dtype: torch.dtype) -> None:
    """Move the router to ``device``; the frozen base weights take ``dtype``, while what trains
    stays float32 (AdamW on bf16 weights would round LoRA-sized updates away). Buffers such as
    rotary frequencies keep their dtype."""
    router.to(device)
    trainable = {id(p) for p in _trainable(router).values()}
    for p in router.model.parameters():
        if p.is_floating_point():
            p.data = p.data.float() if id(p) in trainable else p.data.to(dtype)


_pool_and_queries = pool_and_queries  # the old private name, kept for scripts that used it


# ------------------------------------------------------------------------- 3. advantages
def group_advantages(rewards: Sequence[float], eps: float = 1e-6, *, scale: bool = True) -> list[float]:
    """GRPO's advantages of one group: each reward minus the group mean, divided by the group's
    standard deviation when ``scale`` (zeros when the rewards are all equal). Without ``scale``
    (Dr. GRPO), a group whose rollouts differ only in cost keeps the small advantages of a cost
    difference, instead of having them blown up to the size of an outcome flip."""
    n = len(rewards)
    if n == 0:
        return []
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    if std < eps:
        return [0.0] * n
    return [(r - mean) / (std + eps) if scale else r - mean for r in rewards]


def step_advantages(traj_adv: Sequence[float], step_scores: Sequence[Sequence[float] | None], weight: float) -> list[list[float] | float]:
    """Optional step-level process advantages: each decision gets its trajectory's advantage plus
    ``weight`` x its step score normalised over all the steps of the group. Trajectories without
    step scores keep the trajectory-level advantage."""
    flat = [s for ss in step_scores if ss for s in ss]
    if weight == 0.0 or not flat:
        return list(traj_adv)
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((s - mean) ** 2 for s in flat) / len(flat)) or 1.0
    out: list[list[float] | float] = []
    for a, ss in zip(traj_adv, step_scores):
        out.append([a + weight * (s - mean) / std for s in ss] if ss else a)
    return out


def decision_advantages(advantages: Sequence[float | list[float]], steps: Sequence[Sequence[int]], dmax: int) -> list[list[float]]:
    """``[B, dmax]`` advantages per decision. A trajectory-level advantage applies to all of its
    decisions; a per-step list is read at the step each decision routes (``steps``, as
    :meth:`PolicyRouter.encode_trajectory` keeps them after dropping decisions), 0 past its end."""
    rows = []
    for a, idx in zip(advantages, steps):
        if not isinstance(a, list):
            rows.append([a] * dmax)
            continue
        row = [a[i] if i < len(a) else 0.0 for i in idx]
        rows.append(row + [0.0] * (dmax - len(row)))
    return rows


# ------------------------------------------------------------------------------- 5. the loss
class GRPOLoss(NamedTuple):
    """The scalar loss to back-propagate plus detached diagnostics."""

    loss: Tensor
    policy_loss: Tensor
    kl: Tensor
    clip_fraction: Tensor


def _decision_entropy(full_logp: Tensor, mask: Tensor) -> Tensor:
    """Mean entropy of the routing distributions ``[B, D, M]`` over the valid decisions ``mask [B, D]``."""
    ent = -(full_logp.exp() * full_logp).sum(-1)
    return (ent * mask).sum() / mask.sum().clamp(min=1)


def grpo_policy_loss(new_logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, advantages: Tensor,
                     mask: Tensor | None = None, *, clip: float = 0.2, kl_coef: float = 0.04) -> GRPOLoss:
    """PPO-clip surrogate plus the k3 KL estimator, per decision, averaged over valid decisions.

    All log-prob tensors are the log-probabilities of the *taken* action, shape ``[B, D]`` (or any
    shape, with ``mask`` alike). ``old_logp`` comes from the rollout policy, ``ref_logp`` from the
    reference policy (LoRA adapter disabled); both are treated as constants. ``advantages`` is
    ``[B]`` (one per trajectory, broadcast over its decisions: GRPO's group-normalised reward) or
    already per decision. ``ref_logp=None`` or ``kl_coef=0`` drops the KL term.

    Per decision: ``ratio = exp(new - old)``, ``surrogate = min(ratio * A, clip(ratio, 1-e, 1+e) * A)``,
    ``k3 = exp(ref - new) - (ref - new) - 1`` (unbiased, always >= 0), and the loss is
    ``-(surrogate - kl_coef * k3)``. The mean is over all valid decisions of the batch (every
    decision weighs the same, so long trajectories are not down-weighted).
    """
    old_logp = old_logp.detach()
    if advantages.dim() < new_logp.dim():
        advantages = advantages.reshape(*advantages.shape, *([1] * (new_logp.dim() - advantages.dim())))
    advantages = advantages.detach().to(new_logp.dtype).expand_as(new_logp)
    if mask is None:
        mask = torch.ones_like(new_logp, dtype=torch.bool)
    weight = mask.to(new_logp.dtype)
    count = weight.sum().clamp(min=1.0)

    log_ratio = torch.where(mask, new_logp - old_logp, torch.zeros_like(new_logp))
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    policy = -(torch.minimum(unclipped, clipped) * weight).sum() / count

    if ref_logp is not None and kl_coef != 0.0:
        delta = torch.where(mask, ref_logp.detach() - new_logp, torch.zeros_like(new_logp))
        k3 = delta.exp() - delta - 1.0
        kl = (k3 * weight).sum() / count
    else:
        kl = new_logp.new_zeros(())
    loss = policy + kl_coef * kl
    clipped_frac = (((ratio - 1.0).abs() > clip).to(new_logp.dtype) * weight).sum() / count
    return GRPOLoss(loss, policy.detach(), kl.detach(), clipped_frac.detach())


# ------------------------------------------------------------------- 4. scoring a batch
def _encode(router: PolicyRouter, trajs: Sequence[Trajectory],
            device: torch.device) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
    """Right-padded ids, decision positions (-1 pads) and actions (-1 pads) of a batch; and the
    step each decision routes, per trajectory."""
    encs = [router.encode_trajectory(t) for t in trajs]
    width = max(len(e.ids) for e in encs)
    dmax = max(1, max(len(e.positions) for e in encs))
    pad = router.tokenizer.pad_token_id or 0
    ids = torch.full((len(encs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    pos = torch.full((len(encs), dmax), -1, dtype=torch.long)
    act = torch.full((len(encs), dmax), -1, dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = 1
        pos[i, : len(e.positions)] = torch.tensor(e.positions, dtype=torch.long)
        act[i, : len(e.actions)] = torch.tensor(e.actions, dtype=torch.long)
    tensors = {"ids": ids.to(device), "mask": mask.to(device), "pos": pos.to(device), "act": act.to(device)}
    return tensors, [e.steps for e in encs]


def _decision_log_probs(router: PolicyRouter, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(a | state) of the taken actions ``[B, D]`` and the full ``[B, D, K]`` log-probs, in
    one forward over each distinct trajectory (never the full-vocabulary logits): rollouts that
    rendered to the same ids and decision positions (a group's rollouts share their first states,
    and on a replayed tree most of them are the same few sequences) share one forward."""
    key = torch.cat([b["ids"], b["mask"], b["pos"]], dim=1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    if len(uniq) < len(key):
        first = torch.full((len(uniq),), len(key), dtype=torch.long, device=key.device)
        first = first.scatter_reduce(0, inverse, torch.arange(len(key), device=key.device), reduce="amin")
        one = {k: v[first] for k, v in b.items()}
        _, logp = _decision_log_probs(router, one)
        logp = logp[inverse]
        chosen = logp.gather(-1, b["act"].clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return chosen * (b["act"] >= 0), logp
    if router.head is None:
        logits = action_logits(router.model, b["ids"], b["mask"], b["pos"], router.action_ids).logits
    else:
        hidden = decoder_hidden_states(router.model, b["ids"], b["mask"])
        index = b["pos"].clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        logits = router.head(hidden.gather(1, index).to(router.head.weight.dtype)).float()
    logp = torch.log_softmax(logits / router.temperature, dim=-1)
    chosen = logp.gather(-1, b["act"].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return chosen * (b["act"] >= 0), logp


def _slice(b: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in b.items()}


# --------------------------------------------------------------------- 2. process scores
ProcessScore = tuple[float | None, list[float] | None]


def _judged_key(query_id: str, traj: Trajectory) -> tuple:
    return query_id, traj.stop_reason, tuple((s.model, s.text) for s in traj.steps)


def _process_scores(judge, rubricor, rubrics: dict, trajs: Sequence[Trajectory], queries: Sequence[Query],
                    judged: MutableMapping | None = None) -> tuple[list[ProcessScore | None], list[RoroError]]:
    """Per rollout ``(score, step scores)``, or None where the Rubricor or the Judge failed on it
    (after their own bounded re-asks); and those errors. One bad reply costs one rollout, not the run.
    ``queries[i]`` is the query rollout ``i`` answers: its rubric is asked for once and cached in
    ``rubrics`` under that query's id. ``judged`` caches the scores of the run by rollout content
    (query, models and texts of the steps): a rollout that repeats one already judged (common with
    greedy steps, and the rule on a replayed tree) is not judged again."""
    if judged is not None:
        keys = [_judged_key(q.id, t) for q, t in zip(queries, trajs)]
        new = [i for i, k in enumerate(keys) if k not in judged]
        first: dict[tuple, int] = {}
        for i in new:
            first.setdefault(keys[i], i)
        todo = sorted(first.values())
        got, errors = _process_scores(judge, rubricor, rubrics, [trajs[i] for i in todo], [queries[i] for i in todo])
        for i, g in zip(todo, got):
            if g is not None:
                judged[keys[i]] = g
        return [judged.get(k) for k in keys], errors
    if judge is None:
        return [(None, None)] * len(trajs), []
    from .._sync import gather_settled, run_sync

    async def all_scores():
        errors: list[RoroError] = []
        todo: dict[str, Query] = {}
        for q in queries:
            if q.id not in rubrics:
                todo.setdefault(q.id, q)
        if not todo:
            got = []
        elif hasattr(rubricor, "arubric_many"):  # a local Rubricor batches them in one forward
            got = await rubricor.arubric_many(list(todo.values()))
        else:
            got = await gather_settled(rubricor.arubric, list(todo.values()), 8)
        for qid, r in zip(todo, got):
            if isinstance(r, RoroError):
                errors.append(r)  # not cached: the next update asks again
            else:
                rubrics[qid] = r
        idx = [i for i, q in enumerate(queries) if q.id in rubrics]
        items = [(trajs[i].query, rubrics[queries[i].id], trajs[i]) for i in idx]
        if not items:
            results = []
        elif hasattr(judge, "ascore_many"):
            results = await judge.ascore_many(items)
        else:
            results = await gather_settled(lambda it: judge.ascore(*it), items, 8)
        out: list[ProcessScore | None] = [None] * len(trajs)
        for i, r in zip(idx, results):
            if isinstance(r, RoroError):
                errors.append(r)
            else:
                out[i] = (r.score, r.step_scores)
        return out, errors

    return run_sync(all_scores())


def _spent(judge, rubricor) -> Usage:
    return spent_of(judge) + spent_of(rubricor)


def _history_usage(history: list[dict]) -> dict[str, Any]:
    """The Judge's and Rubricor's spend over every update of the run (resumed parts included)."""
    return {"cost_usd": sum(h.get("judge_cost_usd", 0.0) for h in history),
            "input_tokens": sum(h.get("judge_input_tokens", 0) for h in history),
            "output_tokens": sum(h.get("judge_output_tokens", 0) for h in history),
            "priced": all(h.get("judge_priced", True) for h in history)}


# --------------------------------------------------------------------------- 6. checkpoints
_trainable = trainable_parameters  # one naming of the trainable weights, shared with the rollout workers


def _aside(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def save_checkpoint(folder: Path, router: PolicyRouter, opt: torch.optim.Optimizer, update: int, history: list) -> None:
    """Write the checkpoint to ``<folder>.tmp`` (``state.json`` last), then swap it in: the old
    checkpoint is renamed aside to ``<folder>.old``, the new one renamed in, and only then the old
    one deleted. At every moment a complete checkpoint exists under one of the two names, and
    :func:`find_checkpoint` reads the aside one when a crash came between the renames."""
    from safetensors.torch import save_file

    tmp, aside = folder.with_name(folder.name + ".tmp"), _aside(folder)
    if tmp.exists():
        shutil.rmtree(tmp)  # the remains of a save that was interrupted
    tmp.mkdir(parents=True)
    params = _trainable(router)
    save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, tmp / "trainable.safetensors")
    state = {}
    for i, p in enumerate(params.values()):
        for k, v in opt.state.get(p, {}).items():
            state[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    save_file(state, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"update": update, "history": history}))
    fsync_tree(tmp)
    if folder.exists():
        if aside.exists():
            shutil.rmtree(aside)  # left by a crash after the last swap: the main checkpoint is newer
        folder.rename(aside)
    tmp.rename(folder)
    fsync_dir(folder.parent)
    if aside.exists():
        shutil.rmtree(aside)


def find_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint to resume from: ``folder``, or the previous one set aside by a save
    that crashed between its renames; None when there is none."""
    for f in (folder, _aside(folder)):
        if (f / "state.json").is_file():
            return f
    return None


def load_checkpoint(folder: Path, router: PolicyRouter, opt: torch.optim.Optimizer) -> tuple[int, list]:
    """Load a checkpoint's weights into ``router`` and its state into ``opt``; returns the update to
    continue from and the history so far."""
    from safetensors.torch import load_file

    params = _trainable(router)
    saved = load_file(folder / "trainable.safetensors")
    if set(saved) != set(params):
        raise TrainingConfigError(f"checkpoint {folder} does not match this router's parameters; choose a new out_dir "
                                  "or start afresh with overwrite")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n].to(p.device, p.dtype))
    ost = load_file(folder / "optimizer.safetensors")
    for i, p in enumerate(params.values()):
        entries = {k.split(".", 1)[1]: v.to(p.device) for k, v in ost.items() if k.split(".", 1)[0] == str(i)}
        if entries:
            opt.state[p] = entries
    state = json.loads((folder / "state.json").read_text())
    return state["update"] + 1, state["history"]


# What a train-router run writes in its folder (``overwrite`` deletes these, and nothing else).
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.jsonl.tmp", "checkpoint", "checkpoint.tmp", "checkpoint.old",
             "router", "eval.json")
# Fields a resumed run may change: how long and how it runs, not what it learns.
RESUMABLE_CHANGES = frozenset({"updates", "out_dir", "resume", "overwrite", "concurrency", "checkpoint_every", "device",
                               "ray", "judge_cache"})


# ------------------------------------------------------------------------------------ eval
def evaluate_router(router: PolicyRouter, pool: ModelPool, queries: Sequence[Query], *, mode: str = "argmax",
                    max_steps: int = 16, concurrency: int = 32) -> dict[str, Any]:
    """Held-out accuracy, cost, large-model share; on the sim bench also where the escalations went.

    The router is run in ``mode`` through a view (:meth:`PolicyRouter.with_mode`) with its model in
    eval mode; the router passed in is left as it was (its mode, and its model's train/eval flag)."""
    was_training = router.model.training
    router.model.eval()
    try:
        trajs = StepwiseRuntime(pool, router.with_mode(mode), max_steps=max_steps).run_many(list(queries),
                                                                                            concurrency=concurrency)
    finally:
        router.model.train(was_training)
    s = summarize(trajs, large=pool.large, router=router.name)
    out = {"accuracy": s.accuracy, "mean_cost_usd": s.mean_cost_usd, "large_step_share": s.large_step_share, "n": s.n}
    if queries and queries[0].metadata.get("sim_task"):
        out.update(sim_escalation_shares(trajs, pool.large))
    return out


# ------------------------------------------------------------------------------------ train
def train_router(cfg: GRPOConfig, *, pool: ModelPool | None = None, queries: tuple[list[Query], list[Query]] | None = None,
                 judge: Any = None, rubricor: Any = None, log: Callable[[dict], None] | None = None) -> GRPOResult:
    """Train a LoRA router with GRPO. ``pool``/``queries``/``judge``/``rubricor`` override the config's.

    The router is built here from ``cfg.policy`` (:func:`build_policy`), trained in place, saved to
    ``<out_dir>/router`` and returned as ``result.router``; nothing passed in is modified (the
    Judge and Rubricor only count their spend)."""
    from ..hf import set_seed
    from ..rubric import StaticRubricor

    # ---- setup: data, pool, judge, policy, optimiser, maybe a checkpoint to resume from
    out = Path(cfg.out_dir)
    prepare_run_folder(out, json.loads(cfg.model_dump_json()), resume=cfg.resume, overwrite=cfg.overwrite,
                       run_files=RUN_FILES, resumable=RESUMABLE_CHANGES)
    out.mkdir(parents=True, exist_ok=True)
    cfg.dump(out / "config.json")
    if pool is None or queries is None:
        cfg_pool, train_qs, eval_qs = pool_and_queries(cfg)
        pool = pool or cfg_pool
        if queries is not None:
            train_qs, eval_qs = queries
    else:
        train_qs, eval_qs = queries
    # a Judge given in Python is named by its class in the judge cache; one from the config by its files
    fingerprint = f"object:{type(judge).__module__}.{type(judge).__qualname__}" if judge is not None else None
    judge = judge if judge is not None else config_judge(cfg)
    if cfg.rewards.lambda_p > 0 and judge is None:
        raise TrainingConfigError("rewards.lambda_p > 0 needs a judge")
    rubricor = rubricor or StaticRubricor()
    free_steps = tree_limits(cfg, pool)
    device = _device(cfg)
    router = build_policy(cfg, pool.names, list(train_qs) + list(eval_qs), free_steps=free_steps)
    _place(router, device, _dtype(cfg, device))
    params = list(_trainable(router).values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    ckpt = out / "checkpoint"
    found = find_checkpoint(ckpt) if cfg.resume else None
    if found is not None:
        start, history = load_checkpoint(found, router, opt)
    # metrics.jsonl as the checkpoint knows it: records an interrupted run wrote after its last
    # checkpoint are dropped, since the resumed run writes those updates again
    rewrite_jsonl(out / "metrics.jsonl", history)
    rubrics: dict[str, Any] = {}
    judged: MutableMapping[tuple, ProcessScore] = {}
    if cfg.judge_cache and judge is not None:
        judged = JudgedScores(cfg.judge_cache, fingerprint or judge_fingerprint(cfg.judge))
    G = cfg.group_size
    # rollouts on Ray workers: each builds this same router once (build_policy is seeded) and gets
    # the trainable weights at every update; the policy itself stays here
    on_ray = None if cfg.ray is None else RayRollouts(
        cfg.ray, pool, functools.partial(build_policy, cfg, pool.names, list(train_qs) + list(eval_qs), free_steps=free_steps),
        concurrency=cfg.concurrency, max_steps=cfg.max_steps, cost_budget=cfg.cost_budget)

    for update in range(start, cfg.updates):
        t0 = time.perf_counter()
        seed = zlib.crc32(f"{cfg.seed}:{update}".encode())
        set_seed(seed)

        # 1. rollouts: G per query, sampled from the current policy, in the real runtime. Rollout i
        # is rollout j of batch query g, (g, j) = rollouts[i]; its id "<query id>~j" only names the
        # rollout (and seeds its sampling), the group is read from rollouts, never from the id.
        first = (update * cfg.queries_per_update) % len(train_qs)
        batch = [train_qs[(first + i) % len(train_qs)] for i in range(cfg.queries_per_update)]
        rollouts = [(g, j) for g in range(len(batch)) for j in range(G)]
        rollout_qs = [batch[g].model_copy(update={"id": f"{batch[g].id}~{j}"}) for g, j in rollouts]
        router.model.eval()
        if on_ray is None:
            runtime = StepwiseRuntime(pool, router.with_mode("sample", seed=seed), max_steps=cfg.max_steps,
                                      cost_budget=cfg.cost_budget)
            trajs = runtime.run_many(rollout_qs, concurrency=cfg.concurrency)
        else:
            trajs = on_ray.run(router, seed, rollout_qs)

        # 2. rewards and 3. group-normalised advantages; a rollout the Judge failed on is left out
        # of its group (advantage 0), the rest of the group is compared as usual
        spent_before = _spent(judge, rubricor)
        scores, failures = _process_scores(judge, rubricor, rubrics, trajs, [batch[g] for g, _ in rollouts], judged)
        if failures and all(s is None for s in scores):
            raise ProcessScoringError(f"update {update}: the judge failed on all {len(trajs)} rollouts; first error: "
                                      f"{type(failures[0]).__name__}: {str(failures[0])[:300]}. Check the judge (its "
                                      "model, key or config), or set judge: none with rewards.lambda_p: 0")
        judge_usage = usage_delta(_spent(judge, rubricor), spent_before)
        parts, advantages, zero_groups = [], [], 0
        for g in range(len(batch)):
            members = [i for i, (gi, _) in enumerate(rollouts) if gi == g]
            ok = [i for i in members if scores[i] is not None]
            if len(ok) < 2:  # nothing left to compare this query's rollouts with
                zero_groups += 1
                advantages += [0.0] * len(members)
                continue
            p = group_rewards([trajs[i] for i in ok], [scores[i][0] for i in ok], cfg.rewards)
            a = group_advantages([x.total for x in p], scale=cfg.advantage_norm == "std")
            parts += p
            zero_groups += all(x == 0.0 for x in a)
            kept = dict(zip(ok, step_advantages(a, [scores[i][1] for i in ok], cfg.step_process_weight)))
            advantages += [kept.get(i, 0.0) for i in members]
        b, steps = _encode(router, trajs, device)
        dmax = b["act"].shape[1]
        adv = torch.tensor(decision_advantages(advantages, steps, dmax), dtype=torch.float32, device=device)

        # 4. old (rollout-policy) and reference (adapter disabled) log-probs, no gradients. One
        # strictly on-policy step over the whole batch needs no separate pass for the old ones:
        # before that step the policy is the rollout policy, so they are its own, detached.
        one_step = cfg.epochs == 1 and cfg.minibatch_size >= len(trajs)
        with torch.no_grad():
            old, old_full = (None, None) if one_step else _decision_log_probs(router, b)
            ref = None
            if cfg.kl_coef > 0:
                with router.model.disable_adapter():
                    ref, _ = _decision_log_probs(router, b)

        # 5. PPO-clip steps with a KL penalty, on the adapter (and head) only
        router.model.train()
        gen = torch.Generator().manual_seed(seed)
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        n_steps = 0
        for _ in range(cfg.epochs):
            for idx in torch.randperm(len(trajs), generator=gen).split(cfg.minibatch_size):
                idx = idx.to(device)
                mb = _slice(b, idx)
                new, new_full = _decision_log_probs(router, mb)
                if one_step:  # idx is the whole batch, in some order
                    old = torch.empty_like(new).index_copy_(0, idx, new.detach())
                    old_full = torch.empty_like(new_full).index_copy_(0, idx, new_full.detach())
                res = grpo_policy_loss(new, old[idx], None if ref is None else ref[idx], adv[idx], mb["act"] >= 0,
                                       clip=cfg.clip, kl_coef=cfg.kl_coef)
                loss = res.loss
                if cfg.entropy_coef > 0:
                    loss = loss - cfg.entropy_coef * _decision_entropy(new_full, mb["act"] >= 0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                for k in stats:
                    stats[k] += float(getattr(res, k).detach())
                n_steps += 1

        # 6. log and checkpoint
        valid = b["act"] >= 0
        probs = old_full.exp()
        entropy = float((-(probs * old_full).sum(-1))[valid].mean())
        n, m = len(trajs), max(1, len(parts))
        record = {
            "update": update,
            "reward": sum(p.total for p in parts) / m,
            "outcome": sum(p.outcome for p in parts) / m,
            "process": sum(p.process for p in parts) / m,
            "cost_norm": sum(p.cost_norm for p in parts) / m,
            "accuracy": sum(bool(t.correct) for t in trajs) / n,
            "rollout_errors": sum(t.stop_reason == "error" for t in trajs),  # e.g. a rollout that left a replayed tree
            "large_share": sum(s.model == pool.large for t in trajs for s in t.steps) / max(1, sum(len(t.steps) for t in trajs)),
            "zero_adv_groups": zero_groups / len(batch),
            "kl": stats["kl"] / max(n_steps, 1),
            "clip_fraction": stats["clip_fraction"] / max(n_steps, 1),
            "loss": stats["loss"] / max(n_steps, 1),
            "entropy": entropy,
            "judge_failures": sum(s is None for s in scores),
            "judge_cost_usd": judge_usage.cost_usd,
            "judge_input_tokens": judge_usage.input_tokens,
            "judge_output_tokens": judge_usage.output_tokens,
            "judge_priced": judge_usage.priced,
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if log:
            log(record)
        if (update + 1) % cfg.checkpoint_every == 0 or update + 1 == cfg.updates:
            save_checkpoint(ckpt, router, opt, update, history)

    if on_ray is not None:
        on_ray.close()

    # ---- the trained router: ready for inference, saved, evaluated on the held-out queries
    router.mode = "argmax"
    router.model.eval()
    router_dir = router.save(out / "router")
    ev = None
    if eval_qs:
        ev = evaluate_router(router, pool, eval_qs, max_steps=cfg.max_steps, concurrency=cfg.concurrency)
        (out / "eval.json").write_text(json.dumps(ev, indent=2))
    return GRPOResult(history=history, router_dir=str(router_dir), updates_run=max(0, cfg.updates - start),
                      judge_failures=sum(h.get("judge_failures", 0) for h in history),
                      judge_usage=_history_usage(history) if judge is not None else None, eval=ev, router=router)
