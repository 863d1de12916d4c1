"""GRPO for the stepwise router: one loop, top to bottom.

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

Everything random is seeded from (config seed, update index), and checkpoints hold the trainable
weights and the optimiser state, so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._extras import require

require("torch", extra="train")  # one line naming the extra, not a torch traceback
import torch

from ..errors import ProcessScoringError, RoroError, TrainingConfigError
from ..eval.summary import summarize
from ..policy.router import PolicyRouter
from ..policy.scoring import action_logits, decoder_hidden_states, grpo_policy_loss
from ..pool import ModelPool
from ..rewards import group_advantages, group_rewards, step_advantages
from ..rubric import usage_delta
from ..runtime import StepwiseRuntime
from ..types import Query, Trajectory, Usage
from .grpo_config import GRPOConfig
from .outdir import check_output_folder, remove_run_files

__all__ = ["train_router", "evaluate_router", "build_policy", "GRPOResult", "save_checkpoint", "load_checkpoint",
           "find_checkpoint"]

# Words the tiny router's on-the-fly vocabulary needs besides the queries' own words.
_TINY_VOCAB = ("route each step to a model . models : = , question cost so far budget left e-01 e-02 e-03 e-04 e-05 e-06 "
               "e-07 e+00 step [ ] ]: hard easy ok mistake recovered carried answer next first " + " ".join(map(str, range(100)))
               + " " + " ".join("ABCDEFGHIJKLMNOP"))


class GRPOResult(dict):
    """``history`` (one dict of metrics per update), ``eval`` (held-out metrics), ``router_dir``,
    ``updates_run`` (updates this call made; fewer than ``len(history)`` after a resume),
    ``judge_failures`` (rollouts left out of their group because the Judge or Rubricor failed on
    them) and ``judge_usage`` (tokens and dollars the Judge and Rubricor spent, as a dict; None
    without a judge)."""


# ------------------------------------------------------------------------------------ setup
def build_policy(cfg: GRPOConfig, models: Sequence[str], queries: Sequence[Query]) -> PolicyRouter:
    """A fresh router: the base model (tiny random, or loaded) with a new LoRA adapter."""
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
                          temperature=cfg.policy.temperature, head=head, seed=cfg.seed)
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
    router.model.to(device)
    if router.head is not None:
        router.head.to(device)
    trainable = {id(p) for p in _trainable(router).values()}
    for p in router.model.parameters():
        if p.is_floating_point():
            p.data = p.data.float() if id(p) in trainable else p.data.to(dtype)


def _pool_and_queries(cfg: GRPOConfig) -> tuple[ModelPool, list[Query], list[Query]]:
    from ..tasks import load_dataset

    if cfg.pool:
        pool = ModelPool.from_file(cfg.pool)
    elif cfg.dataset.startswith("sim"):
        from ..sim import parse_sim_spec, sim_pool

        pool = sim_pool(parse_sim_spec(cfg.dataset))
    else:
        from ..defaults import default_pool

        pool = default_pool()
    queries = load_dataset(cfg.dataset, limit=cfg.train_queries + cfg.eval_queries, seed=cfg.seed)
    return pool, queries[: cfg.train_queries], queries[cfg.train_queries:]


def sim_rule_judge():
    """The sim bench's ground-truth process judge: full marks for escalating exactly on the hard
    steps (a stand-in for a trained Judge when testing the trainer; never for real work)."""
    from ..judge import FunctionJudge
    from ..sim import grade_routing, is_hard_step

    def score(query, rubric, traj: Trajectory) -> float:
        g = grade_routing(traj)
        n = max(1, len([s for s in traj.steps if "Answer" not in s.text]))
        return max(0.0, 1.0 - (g["missed"] + g["wasted"]) / n)

    def step(s, traj: Trajectory) -> float:
        if "Answer" in s.text:
            return 1.0
        return 1.0 if (s.model == "large") == is_hard_step(traj.query, s.index) else 0.0

    return FunctionJudge(score_fn=score, step_fn=step, name="sim-rule")


def _judge_for(cfg: GRPOConfig):
    if cfg.judge == "none":
        return None
    if cfg.judge == "sim-rule":
        return sim_rule_judge()
    from ..judge import LocalJudge

    return LocalJudge.from_pretrained(cfg.judge)


# ---------------------------------------------------------------------------- scoring helpers
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
    one forward over each trajectory (never the full-vocabulary logits)."""
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


ProcessScore = tuple[float | None, list[float] | None]


def _process_scores(judge, rubricor, rubrics: dict, trajs: Sequence[Trajectory]
                    ) -> tuple[list[ProcessScore | None], list[RoroError]]:
    """Per rollout ``(score, step scores)``, or None where the Rubricor or the Judge failed on it
    (after their own bounded re-asks); and those errors. One bad reply costs one rollout, not the run."""
    if judge is None:
        return [(None, None)] * len(trajs), []
    from .._sync import gather_settled

    def base(t: Trajectory) -> str:
        return t.query.id.split("~")[0]

    async def all_scores():
        errors: list[RoroError] = []
        todo = {}
        for t in trajs:
            if base(t) not in rubrics:
                todo.setdefault(base(t), t.query)
        if not todo:
            got = []
        elif hasattr(rubricor, "arubric_many"):  # a local Rubricor batches them in one forward
            got = await rubricor.arubric_many(list(todo.values()))
        else:
            got = await gather_settled(rubricor.arubric, list(todo.values()), 8)
        for b, r in zip(todo, got):
            if isinstance(r, RoroError):
                errors.append(r)  # not cached: the next update asks again
            else:
                rubrics[b] = r
        idx = [i for i, t in enumerate(trajs) if base(t) in rubrics]
        items = [(trajs[i].query, rubrics[base(trajs[i])], trajs[i]) for i in idx]
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

    from .._sync import run_sync

    return run_sync(all_scores())


def _spent(judge, rubricor) -> Usage:
    from ..rubric import spent_of

    return spent_of(judge) + spent_of(rubricor)


# ------------------------------------------------------------------------------ checkpoints
def _trainable(router: PolicyRouter) -> dict[str, torch.nn.Parameter]:
    named = {f"model.{n}": p for n, p in router.model.named_parameters() if p.requires_grad}
    if router.head is not None:
        named.update({f"head.{n}": p for n, p in router.head.named_parameters()})
    return named


def _aside(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def _fsync_tree(folder: Path) -> None:
    """Flush the files of a checkpoint to disk before it is renamed in (a rename can reach the disk
    before the data it names)."""
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


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
    _fsync_tree(tmp)
    if folder.exists():
        if aside.exists():
            shutil.rmtree(aside)  # left by a crash after the last swap: the main checkpoint is newer
        folder.rename(aside)
    tmp.rename(folder)
    _fsync_dir(folder.parent)
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


# ------------------------------------------------------------------------------ run folder
# What a train-router run writes in its folder (``overwrite`` deletes these, and nothing else).
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.jsonl.tmp", "checkpoint", "checkpoint.tmp", "checkpoint.old",
             "router", "eval.json")
# Fields a resumed run may change: how long and how it runs, not what it learns.
RESUMABLE_CHANGES = frozenset({"updates", "out_dir", "resume", "overwrite", "concurrency", "checkpoint_every", "device"})


def _prepare_run_folder(cfg: GRPOConfig, out: Path) -> None:
    """Refuse to continue or replace an earlier run unless asked (``resume`` / ``overwrite``); on
    resume, refuse a config that changes what the run learns."""
    if cfg.overwrite:
        remove_run_files(out, RUN_FILES)
    check_output_folder(out, resume=cfg.resume or cfg.overwrite, what="run", overwrite_hint=True)
    old = out / "config.json"
    if cfg.resume and old.is_file():
        try:
            before = json.loads(old.read_text())
        except ValueError:
            before = None
        if isinstance(before, dict):
            now = json.loads(cfg.model_dump_json())
            # fields the earlier run's version did not have yet are not compared
            changed = sorted(k for k in before if k in now and k not in RESUMABLE_CHANGES and before[k] != now[k])
            if changed:
                raise TrainingConfigError(f"cannot resume the run in {out}: its config differs in {', '.join(changed)}; "
                                          "use the same config (only updates, concurrency, checkpoint_every and device "
                                          "may change), or choose a new --out")


def _rewrite_metrics(path: Path, history: list[dict]) -> None:
    """``metrics.jsonl`` as the checkpoint knows it: one record per update it holds. Records an
    interrupted run wrote after its last checkpoint are dropped, since the resumed run writes
    those updates again."""
    if not history and not path.exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for record in history:
            fh.write(json.dumps(record) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------ eval
def evaluate_router(router: PolicyRouter, pool: ModelPool, queries: Sequence[Query], *, mode: str = "argmax",
                    max_steps: int = 16, concurrency: int = 32) -> dict[str, Any]:
    """Held-out accuracy, cost, large-model share; on the sim bench also where the escalations went."""
    saved_mode, router.mode = router.mode, mode
    try:
        router.model.eval()
        trajs = StepwiseRuntime(pool, router, max_steps=max_steps).run_many(list(queries), concurrency=concurrency)
    finally:
        router.mode = saved_mode
    s = summarize(trajs, large=pool.large, router=router.name)
    out = {"accuracy": s.accuracy, "mean_cost_usd": s.mean_cost_usd, "large_step_share": s.large_step_share, "n": s.n}
    if queries and queries[0].metadata.get("sim_task"):
        from ..sim import is_hard_step

        hard = easy = hard_large = easy_large = 0
        for t in trajs:
            for st in t.steps:
                if "Answer" in st.text:
                    continue
                h = is_hard_step(t.query, st.index)
                hard, easy = hard + h, easy + (not h)
                hard_large += h and st.model == pool.large
                easy_large += (not h) and st.model == pool.large
        out["hard_steps_to_large"] = hard_large / hard if hard else 0.0
        out["easy_steps_to_large"] = easy_large / easy if easy else 0.0
    return out


# ------------------------------------------------------------------------------------ train
def _history_usage(history: list[dict]) -> dict[str, Any]:
    """The Judge's and Rubricor's spend over every update of the run (resumed parts included)."""
    return {"cost_usd": sum(h.get("judge_cost_usd", 0.0) for h in history),
            "input_tokens": sum(h.get("judge_input_tokens", 0) for h in history),
            "output_tokens": sum(h.get("judge_output_tokens", 0) for h in history),
            "priced": all(h.get("judge_priced", True) for h in history)}


def train_router(cfg: GRPOConfig, *, pool: ModelPool | None = None, queries: tuple[list[Query], list[Query]] | None = None,
                 judge: Any = None, rubricor: Any = None, log: Callable[[dict], None] | None = None) -> GRPOResult:
    """Train a LoRA router with GRPO. ``pool``/``queries``/``judge``/``rubricor`` override the config's."""
    from ..hf import set_seed
    from ..rubric import StaticRubricor

    # ---- setup: data, pool, judge, policy, optimiser, maybe a checkpoint to resume from
    out = Path(cfg.out_dir)
    _prepare_run_folder(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.dump(out / "config.json")
    if pool is None or queries is None:
        cfg_pool, train_qs, eval_qs = _pool_and_queries(cfg)
        pool = pool or cfg_pool
        if queries is not None:
            train_qs, eval_qs = queries
    else:
        train_qs, eval_qs = queries
    judge = judge if judge is not None else _judge_for(cfg)
    if cfg.rewards.lambda_p > 0 and judge is None:
        raise TrainingConfigError("rewards.lambda_p > 0 needs a judge")
    rubricor = rubricor or StaticRubricor()
    device = _device(cfg)
    router = build_policy(cfg, pool.names, list(train_qs) + list(eval_qs))
    _place(router, device, _dtype(cfg, device))
    params = list(_trainable(router).values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    ckpt = out / "checkpoint"
    found = find_checkpoint(ckpt) if cfg.resume else None
    if found is not None:
        start, history = load_checkpoint(found, router, opt)
    _rewrite_metrics(out / "metrics.jsonl", history)
    runtime = StepwiseRuntime(pool, router, max_steps=cfg.max_steps, cost_budget=cfg.cost_budget)
    rubrics: dict[str, Any] = {}
    G = cfg.group_size

    for update in range(start, cfg.updates):
        t0 = time.perf_counter()
        seed = zlib.crc32(f"{cfg.seed}:{update}".encode())
        set_seed(seed)

        # 1. rollouts: G per query, sampled from the current policy, in the real runtime
        first = (update * cfg.queries_per_update) % len(train_qs)
        batch = [train_qs[(first + i) % len(train_qs)] for i in range(cfg.queries_per_update)]
        rollout_qs = [q.model_copy(update={"id": f"{q.id}~{j}"}) for q in batch for j in range(G)]
        router.model.eval()
        router.mode, router.seed = "sample", seed
        trajs = runtime.run_many(rollout_qs, concurrency=cfg.concurrency)

        # 2. rewards and 3. group-normalised advantages; a rollout the Judge failed on is left out
        # of its group (advantage 0), the rest of the group is compared as usual
        spent_before = _spent(judge, rubricor)
        scores, failures = _process_scores(judge, rubricor, rubrics, trajs)
        if failures and all(s is None for s in scores):
            raise ProcessScoringError(f"update {update}: the judge failed on all {len(trajs)} rollouts; first error: "
                                      f"{type(failures[0]).__name__}: {str(failures[0])[:300]}. Check the judge (its "
                                      "model, key or config), or set judge: none with rewards.lambda_p: 0")
        judge_usage = usage_delta(_spent(judge, rubricor), spent_before)
        parts, advantages, zero_groups = [], [], 0
        for g in range(len(batch)):
            ok = [i for i in range(g * G, (g + 1) * G) if scores[i] is not None]
            if len(ok) < 2:  # nothing left to compare this query's rollouts with
                zero_groups += 1
                advantages += [0.0] * G
                continue
            p = group_rewards([trajs[i] for i in ok], [scores[i][0] for i in ok], cfg.rewards)
            a = group_advantages([x.total for x in p])
            parts += p
            zero_groups += all(x == 0.0 for x in a)
            kept = dict(zip(ok, step_advantages(a, [scores[i][1] for i in ok], cfg.step_process_weight)))
            advantages += [kept.get(i, 0.0) for i in range(g * G, (g + 1) * G)]
        b, steps = _encode(router, trajs, device)
        dmax = b["act"].shape[1]
        adv = torch.tensor(decision_advantages(advantages, steps, dmax), dtype=torch.float32, device=device)

        # 4. old (rollout-policy) and reference (adapter disabled) log-probs, no gradients
        with torch.no_grad():
            old, old_full = _decision_log_probs(router, b)
            with router.model.disable_adapter():
                ref, _ = _decision_log_probs(router, b)

        # 5. PPO-clip steps with a KL penalty, on the adapter (and head) only
        router.model.train()
        gen = torch.Generator().manual_seed(seed)
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        steps = 0
        for _ in range(cfg.epochs):
            for idx in torch.randperm(len(trajs), generator=gen).split(cfg.minibatch_size):
                idx = idx.to(device)
                mb = _slice(b, idx)
                new, _ = _decision_log_probs(router, mb)
                res = grpo_policy_loss(new, old[idx], ref[idx], adv[idx], mb["act"] >= 0, clip=cfg.clip, kl_coef=cfg.kl_coef)
                opt.zero_grad(set_to_none=True)
                res.loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                for k in stats:
                    stats[k] += float(getattr(res, k).detach())
                steps += 1

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
            "large_share": sum(s.model == pool.large for t in trajs for s in t.steps) / max(1, sum(len(t.steps) for t in trajs)),
            "zero_adv_groups": zero_groups / len(batch),
            "kl": stats["kl"] / max(steps, 1),
            "clip_fraction": stats["clip_fraction"] / max(steps, 1),
            "loss": stats["loss"] / max(steps, 1),
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

    # ---- held-out evaluation and the final router
    router.mode = "argmax"
    router_dir = router.save(out / "router")
    result = GRPOResult(history=history, router_dir=str(router_dir), router=router, updates_run=max(0, cfg.updates - start),
                        judge_failures=sum(h.get("judge_failures", 0) for h in history),
                        judge_usage=_history_usage(history) if judge is not None else None)
    if eval_qs:
        result["eval"] = evaluate_router(router, pool, eval_qs, max_steps=cfg.max_steps, concurrency=cfg.concurrency)
        (out / "eval.json").write_text(json.dumps(result["eval"], indent=2))
    return result
