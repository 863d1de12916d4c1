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
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._extras import require

require("torch", extra="train")  # one line naming the extra, not a torch traceback
import torch

from ..errors import TrainingConfigError
from ..eval.summary import summarize
from ..policy.router import PolicyRouter
from ..policy.scoring import action_logits, decoder_hidden_states, grpo_policy_loss
from ..pool import ModelPool
from ..rewards import group_advantages, group_rewards, step_advantages
from ..runtime import StepwiseRuntime
from ..types import Query, Trajectory
from .grpo_config import GRPOConfig

__all__ = ["train_router", "evaluate_router", "build_policy", "GRPOResult"]

# Words the tiny router's on-the-fly vocabulary needs besides the queries' own words.
_TINY_VOCAB = ("route each step to a model . models : = , question cost so far budget left e-01 e-02 e-03 e-04 e-05 e-06 "
               "e-07 e+00 step [ ] ]: hard easy ok mistake recovered carried answer next first " + " ".join(map(str, range(100)))
               + " " + " ".join("ABCDEFGHIJKLMNOP"))


class GRPOResult(dict):
    """``history`` (one dict of metrics per update), ``eval`` (held-out metrics), ``router_dir``."""


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


def _process_scores(judge, rubricor, rubrics: dict, trajs: Sequence[Trajectory]) -> list[tuple[float | None, list[float] | None]]:
    if judge is None:
        return [(None, None)] * len(trajs)

    async def all_scores():
        out = []
        for t in trajs:
            base_id = t.query.id.split("~")[0]
            if base_id not in rubrics:
                rubrics[base_id] = await rubricor.arubric(t.query)
            r = await judge.ascore(t.query, rubrics[base_id], t)
            out.append((r.score, r.step_scores))
        return out

    from .._sync import run_sync

    return run_sync(all_scores())


# ------------------------------------------------------------------------------ checkpoints
def _trainable(router: PolicyRouter) -> dict[str, torch.nn.Parameter]:
    named = {f"model.{n}": p for n, p in router.model.named_parameters() if p.requires_grad}
    if router.head is not None:
        named.update({f"head.{n}": p for n, p in router.head.named_parameters()})
    return named


def save_checkpoint(folder: Path, router: PolicyRouter, opt: torch.optim.Optimizer, update: int, history: list) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    params = _trainable(router)
    save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, tmp / "trainable.safetensors")
    state = {}
    for i, p in enumerate(params.values()):
        for k, v in opt.state.get(p, {}).items():
            state[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    save_file(state, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"update": update, "history": history}))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)  # a crash mid-save leaves the previous checkpoint intact


def load_checkpoint(folder: Path, router: PolicyRouter, opt: torch.optim.Optimizer) -> tuple[int, list]:
    from safetensors.torch import load_file

    params = _trainable(router)
    saved = load_file(folder / "trainable.safetensors")
    if set(saved) != set(params):
        raise TrainingConfigError(f"checkpoint {folder} does not match this router's parameters; use another out_dir or resume=false")
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
def train_router(cfg: GRPOConfig, *, pool: ModelPool | None = None, queries: tuple[list[Query], list[Query]] | None = None,
                 judge: Any = None, rubricor: Any = None, log: Callable[[dict], None] | None = None) -> GRPOResult:
    """Train a LoRA router with GRPO. ``pool``/``queries``/``judge``/``rubricor`` override the config's."""
    from ..hf import set_seed
    from ..rubric import StaticRubricor

    # ---- setup: data, pool, judge, policy, optimiser, maybe a checkpoint to resume from
    out = Path(cfg.out_dir)
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
    if cfg.resume and (ckpt / "state.json").is_file():
        start, history = load_checkpoint(ckpt, router, opt)
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

        # 2. rewards and 3. group-normalised advantages
        scores = _process_scores(judge, rubricor, rubrics, trajs)
        parts, advantages, zero_groups = [], [], 0
        for g in range(len(batch)):
            group = slice(g * G, (g + 1) * G)
            p = group_rewards(trajs[group], [s for s, _ in scores[group]], cfg.rewards)
            a = group_advantages([x.total for x in p])
            zero_groups += all(x == 0.0 for x in a)
            parts += p
            advantages += step_advantages(a, [ss for _, ss in scores[group]], cfg.step_process_weight)
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
        n = len(trajs)
        record = {
            "update": update,
            "reward": sum(p.total for p in parts) / n,
            "outcome": sum(p.outcome for p in parts) / n,
            "process": sum(p.process for p in parts) / n,
            "cost_norm": sum(p.cost_norm for p in parts) / n,
            "accuracy": sum(bool(t.correct) for t in trajs) / n,
            "large_share": sum(s.model == pool.large for t in trajs for s in t.steps) / max(1, sum(len(t.steps) for t in trajs)),
            "zero_adv_groups": zero_groups / len(batch),
            "kl": stats["kl"] / max(steps, 1),
            "clip_fraction": stats["clip_fraction"] / max(steps, 1),
            "loss": stats["loss"] / max(steps, 1),
            "entropy": entropy,
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
    result = GRPOResult(history=history, router_dir=str(router_dir), router=router)
    if eval_qs:
        result["eval"] = evaluate_router(router, pool, eval_qs, max_steps=cfg.max_steps, concurrency=cfg.concurrency)
        (out / "eval.json").write_text(json.dumps(result["eval"], indent=2))
    return result
