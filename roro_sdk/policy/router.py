"""``PolicyRouter``: a causal LM (+ LoRA) that reads the routing state and picks the next model.

The state is rendered *append-only* (see :class:`PolicyTemplate`): a header with the models and
the question, then for every step ``Step n model:`` + the action label + the step's text + a
line with the cost so far. Decision ``d``'s state is therefore a prefix of decision ``d+1``'s,
which buys two things: at inference the KV cache carries over from step to step (only the new
tokens are run), and in training one forward pass over a whole trajectory scores all of its
decisions (:func:`roro_sdk.policy.scoring.action_logits`). Segments are tokenised one by one and
concatenated, so training and inference see exactly the same token ids.

The K models are scored by the next-token logits of K action-label tokens (``A``, ``B``, ...) read
from the LM head rows alone (never the full vocabulary), or by an optional linear head.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from .._extras import require

require("torch", extra="train")  # one line naming the extra, not a torch traceback
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, RouterError
from ..pool import ModelPool
from ..routers.base import Decision, Router, RoutingState
from ..types import Query, Step, Trajectory
from ..hf import cache_kwarg
from .scoring import action_head_rows, decoder_of

LABELS = "ABCDEFGHIJKLMNOP"


class PolicyTemplate(BaseModel):
    """How the routing state is written for the policy. Every part is append-only by design."""

    model_config = ConfigDict(extra="forbid")

    header: str = "route each step to a model . models : {models}\nquestion : {question}\n"
    model_entry: str = "{label} = {name}"
    decision: str = "step {n} model :"
    # The label, then what the step cost, then its text: the text ends right before the next
    # decision, so whatever the last step says about what comes next sits closest to the choice.
    step: str = " {label}\n"
    stats: str = "cost so far {cost} {budget}\n"
    text: str = "{text}\n"


class EncodedTrajectory(BaseModel):
    """Token ids of a rendered trajectory, the decision positions and the actions taken."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ids: list[int]
    positions: list[int] = Field(description="index of the last token of each decision's state")
    actions: list[int] = Field(description="index of the chosen model per decision (0..K-1)")
    steps: list[int] = Field(default_factory=list, description="index of the step each decision routes")


class PolicyRouter(Router):
    """A learned router. ``mode``: ``sample`` (training rollouts), ``argmax``, or ``threshold``
    (escalate to the last model when its probability is at least ``threshold``; two-model pools).

    ``free_steps``: when set, the router chooses the model of the first ``free_steps`` steps only;
    the model of the last free step then writes every later step (a *committed* step, recorded
    with ``forced=True``, no forward pass, skipped by the trainer). A router trained on a routing
    tree of depth D has ``free_steps = D + 1``, the choices the tree records; it keeps that rule
    live, so what it does live is what it was trained and evaluated on."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        models: Sequence[str],
        *,
        template: PolicyTemplate | None = None,
        max_length: int = 1024,
        mode: Literal["sample", "argmax", "threshold"] = "argmax",
        threshold: float = 0.5,
        temperature: float = 1.0,
        seed: int = 0,
        head: torch.nn.Linear | None = None,
        batch_window_s: float = 0.002,
        name: str = "policy",
        free_steps: int | None = None,
    ) -> None:
        if len(models) < 2:
            raise ConfigError("a PolicyRouter needs at least two models to choose from")
        if len(models) > len(LABELS):
            raise ConfigError(f"a PolicyRouter supports at most {len(LABELS)} models")
        if mode not in ("sample", "argmax", "threshold"):
            raise ConfigError(f"mode must be sample, argmax or threshold, not {mode!r}")
        self.model, self.tokenizer, self.models = model, tokenizer, list(models)
        self.template = template or PolicyTemplate()
        self.max_length, self.mode, self.threshold = max_length, mode, threshold
        self.temperature, self.seed, self.head = temperature, seed, head
        self.batch_window_s, self.name = batch_window_s, name
        if free_steps is not None and (isinstance(free_steps, bool) or not isinstance(free_steps, int) or free_steps < 1):
            raise ConfigError(f"free_steps must be a positive whole number of steps (or None: every step free), "
                              f"not {free_steps!r}")
        self.free_steps = free_steps
        self.labels = list(LABELS[: len(self.models)])
        self.action_ids = self._label_ids()
        self._queue: asyncio.Queue | None = None
        self._queue_loop: asyncio.AbstractEventLoop | None = None
        self._scores: dict[tuple[int, ...], torch.Tensor] | None = None  # only in a with_mode view
        self.forward_calls = 0

    def with_mode(self, mode: Literal["sample", "argmax", "threshold"], *, seed: int | None = None) -> PolicyRouter:
        """This router deciding in another ``mode`` (and, when given, with another sampling
        ``seed``), as a view: it shares the model, tokenizer and head, and this router itself is
        left unchanged. The trainer samples its rollouts, and :func:`evaluate_router` evaluates,
        through such views rather than by switching the router they were given."""
        if mode not in ("sample", "argmax", "threshold"):
            raise ConfigError(f"mode must be sample, argmax or threshold, not {mode!r}")
        view = copy.copy(self)
        view.mode = mode
        if seed is not None:
            view.seed = seed
        view._queue, view._queue_loop, view.forward_calls = None, None, 0  # its own batching of decisions
        # A view lives for one set of weights (a trainer makes one per update): the scores of a
        # state seen before are reused, so the rollouts of a group that reach the same state (all
        # of them at the first step; most of them on a replayed tree) cost one forward.
        view._scores = {}
        return view

    # ----- rendering ---------------------------------------------------------------------------
    def _label_ids(self) -> list[int]:
        ids = []
        for label in self.labels:
            toks = self.tokenizer(self.template.step.format(label=label).rstrip("\n"), add_special_tokens=False)["input_ids"]
            if not toks or toks[-1] == getattr(self.tokenizer, "unk_token_id", None):
                raise ConfigError(f"the tokenizer has no token for the action label {label!r}; add it to the vocabulary")
            ids.append(toks[-1])
        if len(set(ids)) != len(ids):
            raise ConfigError("the action labels do not map to distinct tokens in this tokenizer")
        return ids

    def _tok(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _header(self, query: Query) -> list[int]:
        models = ", ".join(self.template.model_entry.format(label=lab, name=m) for lab, m in zip(self.labels, self.models))
        return self._tok(self.template.header.format(models=models, question=query.question))

    def _step_tokens(self, step: Step, cost_so_far: float, budget: float | None) -> list[int]:
        label = self.labels[self.models.index(step.model)] if step.model in self.models else self.labels[0]
        left = "" if budget is None else f"budget left {max(budget - cost_so_far, 0.0):.2e}"
        return (self._tok(self.template.step.format(label=label))
                + self._tok(self.template.stats.format(cost=f"{cost_so_far:.2e}", budget=left))
                + self._tok(self.template.text.format(text=step.text)))

    def encode(self, query: Query, steps: Sequence[Step], *, budget: float | None = None, final_decision: bool = True) -> EncodedTrajectory:
        """Render a state (or a whole trajectory) to ids, the decision positions and actions."""
        ids = self._header(query)
        positions: list[int] = []
        actions: list[int] = []
        cost = 0.0
        for n, step in enumerate(steps):
            ids += self._tok(self.template.decision.format(n=n + 1))
            positions.append(len(ids) - 1)
            actions.append(self.models.index(step.model) if step.model in self.models and not step.forced else -1)
            cost += step.usage.cost_usd
            ids += self._step_tokens(step, cost, budget)
        if final_decision:
            ids += self._tok(self.template.decision.format(n=len(steps) + 1))
            positions.append(len(ids) - 1)
        return EncodedTrajectory(ids=ids, positions=positions, actions=actions, steps=list(range(len(positions))))

    def encode_trajectory(self, traj: Trajectory, *, budget: float | None = None) -> EncodedTrajectory:
        """A finished trajectory for the update: one position and action per step, left-truncated
        to ``max_length`` (decisions that fall off the window are dropped)."""
        enc = self.encode(traj.query, traj.steps, budget=budget, final_decision=False)
        free = [p for p, a in zip(enc.positions, enc.actions) if a >= 0]
        if free:  # nothing after the last choice is read: committed steps cost no forward pass
            enc.ids = enc.ids[: free[-1] + 1]
        cut = max(0, len(enc.ids) - self.max_length)
        keep = [(p - cut, a, s) for p, a, s in zip(enc.positions, enc.actions, enc.steps) if a >= 0 and p - cut >= 0]
        return EncodedTrajectory(ids=enc.ids[cut:], positions=[p for p, _, _ in keep], actions=[a for _, a, _ in keep],
                                 steps=[s for _, _, s in keep])

    # ----- scoring -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> PolicyRouter:
        """Move the model and its head to ``device`` (in place; returns the router)."""
        self.model.to(device)
        if self.head is not None:
            self.head.to(device)
        return self

    def _logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.head is not None:
            return self.head(hidden.to(self.head.weight.dtype)).float()
        w, b = action_head_rows(self.model, torch.tensor(self.action_ids, device=hidden.device))
        out = hidden.float() @ w.float().t()
        return out + b.float() if b is not None else out

    @torch.no_grad()
    def _score_one(self, ids: list[int], memo: dict[str, Any]) -> torch.Tensor:
        """Action logits for one state, reusing this query's KV cache for the prefix already run."""
        dec = decoder_of(self.model)
        if len(ids) > self.max_length:
            memo.pop("policy_kv", None)
            ids = ids[-self.max_length:]
            out = dec(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
            return self._logits_from_hidden(out.last_hidden_state[0, -1])
        done, cache = memo.get("policy_kv", (0, None))
        new = ids[done:]
        if cache is None or not new:
            done, cache, new = 0, None, ids
        out = dec(input_ids=torch.tensor([new], device=self.device), use_cache=True,
                  position_ids=torch.arange(done, done + len(new), device=self.device).unsqueeze(0),
                  **{cache_kwarg(dec): cache})
        memo["policy_kv"] = (len(ids), getattr(out, "cache", None) or out.past_key_values)
        self.forward_calls += 1
        return self._logits_from_hidden(out.last_hidden_state[0, -1])

    @torch.no_grad()
    def score_states(self, states: Sequence[list[int]]) -> torch.Tensor:
        """Action logits ``[N, K]`` for N states in one right-padded forward (left-truncated)."""
        states = [s[-self.max_length:] for s in states]
        width = max(len(s) for s in states)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(states), width), pad, dtype=torch.long)
        mask = torch.zeros((len(states), width), dtype=torch.long)
        for i, s in enumerate(states):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        out = decoder_of(self.model)(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        last = torch.tensor([len(s) - 1 for s in states], device=self.device)
        self.forward_calls += 1
        return self._logits_from_hidden(out.last_hidden_state[torch.arange(len(states), device=self.device), last])

    # ----- deciding --------------------------------------------------------------------------------
    def check(self, pool: ModelPool) -> None:
        missing = [m for m in self.models if m not in pool]
        if missing:
            raise RouterError(f"{self.name} was trained for models {self.models}; the pool lacks {missing} (it has {pool.names})")

    def _choose(self, logits: torch.Tensor, state: RoutingState) -> Decision:
        probs = torch.softmax(logits.float() / max(self.temperature, 1e-6), dim=-1).tolist()
        if self.mode == "sample":
            rng = random.Random(f"{self.seed}:{state.query.id}:{state.step_index}")
            k = rng.choices(range(len(probs)), weights=probs)[0]
        elif self.mode == "threshold":
            k = len(probs) - 1 if probs[-1] >= self.threshold else max(range(len(probs) - 1), key=lambda i: probs[i])
        else:
            k = max(range(len(probs)), key=lambda i: probs[i])
        return Decision(self.models[k], dict(zip(self.models, probs)), f"policy p({self.models[k]})={probs[k]:.2f} [{self.mode}]")

    def _committed(self, state: RoutingState) -> Decision | None:
        if self.free_steps is None or len(state.steps) < self.free_steps:  # free_steps >= 1: a step to keep
            return None
        m = state.steps[-1].model
        return Decision(m, {n: float(n == m) for n in self.models}, f"committed to {m} after {self.free_steps} free steps",
                        forced=True)

    def _settled(self, state: RoutingState) -> tuple[Decision | None, Any, tuple[int, ...]]:
        """The decision when it needs no forward (committed, or this state was scored before), else
        None; with the state's encoding and its key in the score cache."""
        if (d := self._committed(state)) is not None:
            return d, None, ()
        enc = self.encode(state.query, state.steps, budget=state.cost_budget)
        key = tuple(enc.ids)
        if self._scores is not None and key in self._scores:
            return self._choose(self._scores[key], state), enc, key
        return None, enc, key

    def _scored(self, key: tuple[int, ...], logits: Any, state: RoutingState) -> Decision:
        if self._scores is not None:
            self._scores[key] = logits
        return self._choose(logits, state)

    def decide(self, state: RoutingState) -> Decision:
        d, enc, key = self._settled(state)
        if d is not None:
            return d
        return self._scored(key, self._score_one(enc.ids, state.memo), state)

    async def adecide(self, state: RoutingState) -> Decision:
        """Concurrent decisions (``run_many``) are gathered for ``batch_window_s`` and scored in one
        forward; a lone decision uses its query's KV cache instead."""
        d, enc, key = self._settled(state)
        if d is not None:
            return d
        loop = asyncio.get_running_loop()
        if self._queue is None or self._queue_loop is not loop:
            self._queue, self._queue_loop = asyncio.Queue(), loop
            loop.create_task(self._batch_worker(self._queue))
        fut: asyncio.Future = loop.create_future()
        await self._queue.put((enc.ids, state.memo, fut))
        return self._scored(key, await fut, state)

    async def _batch_worker(self, queue: asyncio.Queue) -> None:
        while True:
            batch = [await queue.get()]
            await asyncio.sleep(self.batch_window_s)
            while not queue.empty():
                batch.append(queue.get_nowait())
            try:
                if len(batch) == 1:
                    ids, memo, fut = batch[0]
                    results = [self._score_one(ids, memo)]
                else:  # identical states (a group's first steps) are scored once
                    distinct: dict[tuple[int, ...], int] = {}
                    for ids, _, _ in batch:
                        distinct.setdefault(tuple(ids), len(distinct))
                    scored = list(await asyncio.to_thread(self.score_states, [list(k) for k in distinct]))
                    results = [scored[distinct[tuple(ids)]] for ids, _, _ in batch]
                for (_, _, fut), r in zip(batch, results):
                    if not fut.done():
                        fut.set_result(r)
            except Exception as e:  # a failed forward fails the waiting decisions, not the worker
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)

    # ----- persistence -------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Adapter (or full tiny model) + tokenizer + ``router.json``, all safetensors/JSON."""
        from ..hf import has_adapter, save_adapter

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {
            "models": self.models, "template": self.template.model_dump(), "max_length": self.max_length,
            "mode": self.mode, "threshold": self.threshold, "temperature": self.temperature,
            "base": getattr(self, "base_name", None), "head": self.head is not None, "free_steps": self.free_steps,
        }
        if has_adapter(self.model):
            save_adapter(self.model, folder / "adapter")
        if meta["base"] is None:  # a base that cannot be re-created by name travels with the router
            base = self.model.get_base_model() if has_adapter(self.model) else self.model
            # LoRA layers are injected into the base: save the plain base weights under their own names
            clean = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
            base.save_pretrained(folder / "base", state_dict=clean, safe_serialization=True)
            meta["base"] = "base"
        self.tokenizer.save_pretrained(folder / "tokenizer")
        if self.head is not None:
            from safetensors.torch import save_file

            save_file({"weight": self.head.weight.detach().contiguous(), "bias": self.head.bias.detach().contiguous()}, folder / "head.safetensors")
        (folder / "router.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, **overrides: Any) -> PolicyRouter:
        """A router saved by :meth:`save` (or trained by ``roro train-router``); safetensors only."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .._quiet import quiet_progress_bars
        from ..hf import load_adapter, load_causal_lm, require_safetensors

        folder = Path(folder)
        meta_path = folder / "router.json"
        if not meta_path.is_file():
            raise ConfigError(f"{folder} is not a saved policy router (no router.json); train one with 'roro train-router'")
        meta = json.loads(meta_path.read_text())
        tokenizer = None
        if (folder / "tokenizer").is_dir():
            tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        elif meta["base"] == "base":
            raise ConfigError(f"{folder} has no tokenizer/ folder; save the router again with PolicyRouter.save")
        if meta["base"] == "base":
            require_safetensors(folder / "base", "router's base model")
            try:
                with quiet_progress_bars():
                    model = AutoModelForCausalLM.from_pretrained(folder / "base", use_safetensors=True, local_files_only=True)
            except OSError as e:
                raise ConfigError(f"{folder / 'base'}: cannot load the router's base model ({e}); save the router "
                                  "again with PolicyRouter.save") from None
        else:  # a router exported without its tokenizer uses its base model's (the one it was trained with)
            model, base_tokenizer = load_causal_lm(meta["base"])
            tokenizer = base_tokenizer if tokenizer is None else tokenizer
        if (folder / "adapter").is_dir():
            model = load_adapter(model, folder / "adapter")
        model.eval()
        head = None
        if meta.get("head"):
            from safetensors.torch import load_file

            if not (folder / "head.safetensors").is_file():
                require_safetensors(folder, "router's head")
                raise ConfigError(f"{folder} has no head.safetensors though router.json says it has a head")
            w = load_file(folder / "head.safetensors")
            head = torch.nn.Linear(w["weight"].shape[1], w["weight"].shape[0])
            head.load_state_dict(w)
        kw = {k: meta[k] for k in ("max_length", "mode", "threshold", "temperature")}
        kw["free_steps"] = meta.get("free_steps")  # absent in routers saved before it existed
        kw.update(overrides)
        router = cls(model, tokenizer, meta["models"], template=PolicyTemplate(**meta["template"]), head=head, **kw)
        router.base_name = None if meta["base"] == "base" else meta["base"]
        return router
