"""Rubrics and the Rubricor: query -> rubric of numbered criteria about *routing quality*.

A :class:`Rubric` is a numbered list of :class:`Criterion` objects, each tagged *hard rule* (an
explicit requirement) or *principle* (a general quality) and weighted (Rubric-ARM / RUBRIC-ARROW
format, DESIGN.md section 1). The Judge (:mod:`roro_sdk.judge`) scores a trajectory against it.

Backends share one small interface, :class:`Rubricor` (``arubric(query) -> Rubric``, a sync
``rubric``, and ``arubric_many`` that returns a result *or* a typed error per query):

* :class:`StaticRubricor` / :class:`FunctionRubricor`: a fixed rubric or any function (tests,
  hand-written rubrics).
* :class:`LiteLLMRubricor`: any LiteLLM chat model. It asks for JSON, validates it with pydantic
  and re-asks (with the validation error) up to ``max_reasks`` times before raising
  :class:`~roro_sdk.errors.OutputValidationError` for that query (the loop is
  :func:`roro_sdk.structured.ask_structured`, shared with the LiteLLM Judge).
* :class:`LocalRubricor`: a local Hugging Face causal LM (optionally with a LoRA adapter). Its
  default *library* mode is a policy over a library of candidate criteria: one forward pass puts
  every candidate in the prompt and reads, after each, the next-token logits of the action tokens
  ``no`` / ``1`` / ``2`` / ``3`` (exclude, or include with that weight). Sampling those gives
  rubrics whose log-probability is exact and differentiable, which is what the alternating
  trainer's policy gradient needs, and even a tiny random model yields valid rubrics. The
  *generate* mode lets a real instruction model write free text in the numbered format.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._sync import gather_settled, run_sync
from .errors import ConfigError, OutputValidationError, RoroError
# The JSON re-ask loop and the spend helpers live in roro_sdk.structured; they are imported here
# under their old names too (roro_sdk.rubric.ask_structured, ...), which stay importable.
from .structured import (  # noqa: F401
    MAX_JSON_CHARS,
    MAX_JSON_DEPTH,
    REASK,
    as_model_pool,
    ask_structured,
    extract_json_object,
    short_error,
    spent_of,
    usage_delta,
)
from .types import ModelSpec, Query, Usage

if TYPE_CHECKING:  # pragma: no cover
    from .pool import ModelPool

CriterionKind = Literal["hard_rule", "principle"]
T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Criterion(_Model):
    """One criterion. ``kind`` is ``"hard_rule"`` (explicit requirement) or ``"principle"``."""

    text: str = Field(min_length=1, max_length=500)
    kind: CriterionKind = "principle"
    weight: float = Field(1.0, gt=0.0, le=10.0)

    @field_validator("text")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("a criterion needs some text")
        return v

    @property
    def tag(self) -> str:
        return "hard rule" if self.kind == "hard_rule" else "principle"

    def line(self, number: int) -> str:
        w = f" (weight {self.weight:g})" if self.weight != 1.0 else ""
        return f"{number}. [{self.tag}]{w} {self.text}"


class Rubric(_Model):
    """A numbered list of criteria (numbered from 1 in list order) for one query."""

    criteria: list[Criterion] = Field(min_length=1, max_length=64)
    query_id: str | None = None
    source: str = ""

    def render(self) -> str:
        """The numbered text form: ``1. [hard rule] (weight 2) text``; :func:`parse_rubric_text` reads it back."""
        return "\n".join(c.line(i) for i, c in enumerate(self.criteria, 1))

    def __len__(self) -> int:
        return len(self.criteria)

    @property
    def weights(self) -> list[float]:
        return [c.weight for c in self.criteria]

    def aggregate(self, p_met: Sequence[float], *, hard_gate: bool = False) -> float:
        """Weight-averaged P(met), in [0, 1]. With ``hard_gate`` the average is multiplied by the
        smallest P(met) of the hard rules, so a broken hard rule caps the score."""
        if len(p_met) != len(self.criteria):
            raise ConfigError(f"{len(p_met)} probabilities for a rubric of {len(self.criteria)} criteria")
        total = sum(self.weights)
        score = sum(w * p for w, p in zip(self.weights, p_met)) / total
        if hard_gate:
            hard = [p for c, p in zip(self.criteria, p_met) if c.kind == "hard_rule"]
            if hard:
                score *= min(hard)
        return float(min(1.0, max(0.0, score)))


DEFAULT_CRITERIA: tuple[Criterion, ...] = (
    Criterion(kind="hard_rule", text="The trajectory reaches a final answer."),
    Criterion(kind="hard_rule", text="Every hard step is written by the large model."),
    Criterion(kind="hard_rule", text="No mistake is left uncorrected before the final answer."),
    Criterion(kind="principle", text="Easy steps are written by the small model, with no wasted escalations."),
    Criterion(kind="principle", text="After a mistake, the next step escalates to the large model."),
    Criterion(kind="principle", text="The large model is used only where the small model is likely to fail."),
    Criterion(kind="principle", text="The total cost is low for the difficulty of the problem."),
    Criterion(kind="principle", text="Steps are short, clear and do not repeat."),
)

_LINE = re.compile(
    r"^\s*(\d+)\s*[.)]\s*(?:\[\s*(hard[ _-]?rule|principle)\s*\])?\s*(?:\(\s*weight\s*[:=]?\s*([0-9]*\.?[0-9]+)\s*\))?\s*(.*\S)\s*$",
    re.I,
)


def parse_rubric_text(text: str, *, query_id: str | None = None, source: str = "") -> Rubric:
    """Read the numbered text form (``1. [hard rule] (weight 2) ...``); raises ``ValueError``
    naming the problem when no valid criterion is found."""
    crits: list[Criterion] = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        tag, weight, body = m.group(2), m.group(3), m.group(4)
        kind = "hard_rule" if tag and tag.lower().startswith("hard") else "principle"
        try:
            crits.append(Criterion(text=body, kind=kind, weight=float(weight) if weight else 1.0))
        except ValidationError as e:
            raise ValueError(f"line {raw.strip()!r}: {short_error(e)}") from None
    if not crits:
        raise ValueError("no numbered criteria found; write one per line as '1. [hard rule] text' or '2. [principle] text'")
    return Rubric(criteria=crits, query_id=query_id, source=source)


# ----------------------------------------------------------------------------- interface
def _question(query: Query | str) -> tuple[str, str | None]:
    if isinstance(query, Query):
        return query.question, query.id
    if isinstance(query, str):
        return query, None
    raise ConfigError(f"a query must be a Query or a question string, not {type(query).__name__}")


class Rubricor(ABC):
    """Query -> :class:`Rubric`. Implement :meth:`arubric`; the rest comes for free."""

    name: str = "rubricor"

    @property
    def spent(self) -> Usage:
        """Tokens and dollars of every model call this Rubricor made so far, re-asks and failed
        queries included (zero for backends that call no paid model)."""
        return spent_of(self, own=True)

    def _charge(self, usage: Usage) -> None:
        self._spent = self.spent + usage

    @abstractmethod
    async def arubric(self, query: Query | str) -> Rubric: ...

    def rubric(self, query: Query | str) -> Rubric:
        return run_sync(self.arubric(query))

    async def arubric_many(self, queries: Sequence[Query | str], *, concurrency: int = 8) -> list[Rubric | RoroError]:
        """One result per query, in order: a :class:`Rubric`, or the typed error that query raised
        (the other queries go on)."""
        return await gather_settled(self.arubric, queries, concurrency)

    def rubric_many(self, queries: Sequence[Query | str], **kw: Any) -> list[Rubric | RoroError]:
        return run_sync(self.arubric_many(queries, **kw))


class StaticRubricor(Rubricor):
    """The same rubric for every query (default: :data:`DEFAULT_CRITERIA`)."""

    def __init__(self, rubric: Rubric | Sequence[Criterion] | None = None, *, name: str = "static"):
        if rubric is None:
            rubric = Rubric(criteria=list(DEFAULT_CRITERIA), source=name)
        elif not isinstance(rubric, Rubric):
            rubric = Rubric(criteria=list(rubric), source=name)
        self._rubric, self.name = rubric, name

    async def arubric(self, query: Query | str) -> Rubric:
        _, qid = _question(query)
        return self._rubric.model_copy(update={"query_id": qid})


class FunctionRubricor(Rubricor):
    """Wraps ``fn(query) -> Rubric | list[Criterion] | str`` (sync or async); a string is parsed
    with :func:`parse_rubric_text`."""

    def __init__(self, fn: Callable[[Query | str], Rubric | Sequence[Criterion] | str | Awaitable[Any]], *,
                 name: str = "function"):
        self.fn, self.name = fn, name

    async def arubric(self, query: Query | str) -> Rubric:
        _, qid = _question(query)
        out = self.fn(query)
        if asyncio.iscoroutine(out) or isinstance(out, Awaitable):
            out = await out
        if isinstance(out, Rubric):
            return out if out.query_id else out.model_copy(update={"query_id": qid})
        if isinstance(out, str):
            try:
                return parse_rubric_text(out, query_id=qid, source=self.name)
            except ValueError as e:
                raise OutputValidationError(f"{self.name}: {e}") from None
        return Rubric(criteria=list(out), query_id=qid, source=self.name)


# ----------------------------------------------------------------------------- LiteLLM backend
RUBRICOR_SYSTEM = (
    "You write grading rubrics for how a reasoning solution was ROUTED between models: a cheap small "
    "model and an expensive large model take turns writing the steps. Good routing reaches a correct "
    "answer, sends hard steps (where the small model would go wrong) to the large model, keeps easy "
    "steps on the small model, recovers quickly after a mistake, and keeps the cost low."
)
RUBRICOR_USER = (
    "Question to be solved:\n{question}\n\n"
    "Write a rubric of {min_criteria} to {max_criteria} criteria for judging the routing of a solution to this "
    "question. Each criterion is one sentence of at most {max_chars} characters. Tag each criterion 'hard_rule' (an "
    "explicit requirement) or 'principle' (a general quality), and give it an integer weight from 1 (minor) to 5 "
    "(crucial).\n"
    "Reply with only a JSON object of this form:\n"
    '{{"criteria": [{{"text": "<one sentence>", "kind": "hard_rule", "weight": 3}}, ...]}}'
)


# What a model-written criterion may be. Its text reaches the Judge's prompt, so it is bounded
# here (and quoted as data there, see roro_sdk.judge); the weight range is the one RUBRICOR_USER
# asks for, so one criterion cannot outweigh the rest by an arbitrary factor.
RUBRICOR_WEIGHT_RANGE = (1.0, 5.0)
MAX_RUBRICOR_CRITERION_CHARS = 300
MAX_RUBRICOR_CRITERIA = 16


class _CriterionOut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str = Field(min_length=3, max_length=MAX_RUBRICOR_CRITERION_CHARS)
    kind: CriterionKind
    weight: float = Field(1.0, ge=RUBRICOR_WEIGHT_RANGE[0], le=RUBRICOR_WEIGHT_RANGE[1])

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        if isinstance(v, str):
            s = v.strip().lower().replace(" ", "_").replace("-", "_")
            return {"hard": "hard_rule", "rule": "hard_rule"}.get(s, s)
        return v


class _RubricOut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    criteria: list[_CriterionOut]


class LiteLLMRubricor(Rubricor):
    """A rubric from any LiteLLM chat model, as validated JSON (bounded re-asks, then a typed error).

    ``model``: a :class:`~roro_sdk.pool.ModelPool` (with ``model_name``), a :class:`ModelSpec` or
    its dict, or a LiteLLM model string like ``"openai/gpt-4o-mini"``."""

    def __init__(self, model: ModelPool | ModelSpec | dict | str, *, model_name: str | None = None, max_reasks: int = 2,
                 min_criteria: int = 3, max_criteria: int = 8, temperature: float = 0.0, max_tokens: int = 1024,
                 system: str = RUBRICOR_SYSTEM, user: str = RUBRICOR_USER, name: str | None = None):
        if not 1 <= min_criteria <= max_criteria <= MAX_RUBRICOR_CRITERIA:
            raise ConfigError(f"need 1 <= min_criteria <= max_criteria <= {MAX_RUBRICOR_CRITERIA}, got {min_criteria}, "
                              f"{max_criteria}")
        self.pool, self.model_name = as_model_pool(model, model_name, default_name="rubricor")
        self.max_reasks, self.min_criteria, self.max_criteria = max_reasks, min_criteria, max_criteria
        self.temperature, self.max_tokens, self.system, self.user = temperature, max_tokens, system, user
        self.name = name or f"litellm:{self.model_name}"
        self.last_usage = Usage()

    def messages(self, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user.format(question=question, min_criteria=self.min_criteria,
                                                             max_criteria=self.max_criteria,
                                                             max_chars=MAX_RUBRICOR_CRITERION_CHARS)}]

    def _validate(self, qid: str | None) -> Callable[[str], Rubric]:
        def check(text: str) -> Rubric:
            out = _RubricOut.model_validate(extract_json_object(text))
            n = len(out.criteria)
            if not self.min_criteria <= n <= self.max_criteria:
                raise ValueError(f"the rubric has {n} criteria; write between {self.min_criteria} and {self.max_criteria}")
            return Rubric(criteria=[Criterion(text=c.text, kind=c.kind, weight=c.weight) for c in out.criteria],
                          query_id=qid, source=self.name)
        return check

    async def arubric(self, query: Query | str) -> Rubric:
        question, qid = _question(query)
        try:
            rubric, _, _, usage = await ask_structured(self.pool, self.model_name, self.messages(question),
                                                       self._validate(qid), max_reasks=self.max_reasks,
                                                       max_tokens=self.max_tokens, temperature=self.temperature,
                                                       what="rubric")
        except OutputValidationError as e:  # the re-asks were paid for too
            self._charge(getattr(e, "usage", Usage()))
            raise
        self.last_usage = usage
        self._charge(usage)
        return rubric


# ----------------------------------------------------------------------------- local backend
LOCAL_RUBRICOR_INSTRUCTION = (
    "Task: choose the criteria of a rubric that judges how the steps of a solution were routed between a small "
    "and a large model. After each candidate answer no to leave it out, or a weight 1, 2 or 3 to include it."
)


@dataclass
class SampledRubric:
    """A rubric sampled by :class:`LocalRubricor` with the actions that produced it.

    ``actions[c]`` is 0 (candidate ``c`` left out) or ``1 + j`` (included with ``weights[j]``);
    ``rubric`` is None when every candidate was left out."""

    rubric: Rubric | None
    actions: list[int]
    query_index: int


class LocalRubricor(Rubricor):
    """A local causal LM as the Rubricor (see the module docstring for the two modes).

    Library mode prompt, per candidate (the next-token logits after ``Include?`` of ``no`` and of
    the weight digits give the action distribution; the question's KV cache is shared by all
    candidates, so a query costs one question plus C short suffixes)::

        {instruction}
        Question: {question}
        Candidate [hard rule]: {text}
        Include?
    """

    def __init__(self, model: Any, tokenizer: Any, *, library: Sequence[Criterion] = DEFAULT_CRITERIA,
                 weights: Sequence[int] = (1, 2, 3), mode: Literal["library", "generate"] = "library",
                 temperature: float = 0.0, instruction: str = LOCAL_RUBRICOR_INSTRUCTION, max_question_tokens: int = 256,
                 max_new_tokens: int = 256, max_reasks: int = 2, name: str = "local-rubricor", seed: int = 0):
        from .hf import single_token_ids

        if mode not in ("library", "generate"):
            raise ConfigError(f"mode must be 'library' or 'generate', got {mode!r}")
        if mode == "library" and not library:
            raise ConfigError("library mode needs at least one candidate criterion")
        self.model, self.tokenizer, self.library = model, tokenizer, list(library)
        self.weights, self.mode, self.temperature = [int(w) for w in weights], mode, temperature
        self.instruction, self.max_question_tokens = instruction, max_question_tokens
        self.max_new_tokens, self.max_reasks, self.name, self.seed = max_new_tokens, max_reasks, name, seed
        groups = [single_token_ids(tokenizer, [" no", "no", " No", "No"])]
        groups += [single_token_ids(tokenizer, [f" {w}", f"{w}"]) for w in self.weights]
        if any(not g for g in groups):
            raise ConfigError("the tokenizer has no single token for 'no' or for a weight digit; pick other weights")
        self.action_tokens = groups
        self._suffix_ids: list[list[int]] | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, adapter: str | None = None, device: str = "cpu", **kw: Any
                        ) -> LocalRubricor:
        from .hf import load_causal_lm

        model, tok = load_causal_lm(name_or_path, adapter=adapter, device=device)
        return cls(model, tok, **kw)

    # ----- library mode ------------------------------------------------------------------------
    def _encode(self, question: str) -> tuple[list[int], list[list[int]]]:
        """Prefix ids (instruction + question) and one suffix per candidate (ends at ``Include?``)."""
        tok = self.tokenizer
        head = tok.encode(f"{self.instruction}\nQuestion: ", add_special_tokens=False)
        q = tok.encode(question, add_special_tokens=False)[: self.max_question_tokens]
        if self._suffix_ids is None:
            self._suffix_ids = [tok.encode(f"\nCandidate [{c.tag}]: {c.text}\nInclude?", add_special_tokens=False)
                                for c in self.library]
        return head + q, self._suffix_ids

    def action_logits(self, queries: Sequence[Query | str]):
        """``[len(queries), len(library), 1 + len(weights)]`` action logits (differentiable when
        grad is enabled). Each candidate is decided from the question and that candidate alone; the
        question is encoded once per query and shared (:func:`roro_sdk.hf.prefix_suffix_states`)."""
        from .hf import prefix_suffix_states, token_logits_from_states

        enc = [self._encode(_question(q)[0]) for q in queries]
        owner = [i for i in range(len(enc)) for _ in self.library]
        sfx = [s for _, sx in enc for s in sx]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        _, _, states = prefix_suffix_states(self.model, [p for p, _ in enc], sfx, owner, pad)
        logits = token_logits_from_states(self.model, states, [[len(x) - 1] for x in sfx], self.action_tokens)
        return logits.view(len(enc), len(self.library), len(self.action_tokens))

    def decode(self, actions: Sequence[int], query_id: str | None = None) -> Rubric | None:
        crits = [self.library[c].model_copy(update={"weight": float(self.weights[a - 1])})
                 for c, a in enumerate(actions) if a > 0]
        return Rubric(criteria=crits, query_id=query_id, source=self.name) if crits else None

    def sample(self, queries: Sequence[Query | str], n: int, *, temperature: float = 1.0, generator: Any = None,
               logits: Any = None) -> list[list[SampledRubric]]:
        """``n`` rubrics per query, sampled from the action distribution (no grad needed)."""
        import torch

        with torch.no_grad():
            lg = self.action_logits(queries) if logits is None else logits.detach()
            probs = torch.softmax(lg.float() / max(temperature, 1e-6), -1)
            # Drawn on the CPU: a seeded CPU generator then gives the same rubrics on any device.
            flat = probs.reshape(-1, probs.shape[-1]).cpu()
            draws = torch.multinomial(flat, n, replacement=True, generator=generator)  # [Q*C, n]
            draws = draws.view(len(queries), len(self.library), n)
        out = []
        for qi, q in enumerate(queries):
            qid = _question(q)[1]
            row = []
            for s in range(n):
                acts = draws[qi, :, s].tolist()
                row.append(SampledRubric(self.decode(acts, qid), acts, qi))
            out.append(row)
        return out

    @staticmethod
    def log_prob(logits: Any, actions: Any) -> Any:
        """Sum over candidates of log p(action): ``logits [Q, C, A]``, ``actions [Q, S, C]`` -> ``[Q, S]``."""
        import torch

        lp = torch.log_softmax(logits, -1)  # [Q, C, A]
        lp = lp.unsqueeze(1).expand(-1, actions.shape[1], -1, -1)  # [Q, S, C, A]
        return lp.gather(-1, actions.unsqueeze(-1)).squeeze(-1).sum(-1)

    def greedy(self, queries: Sequence[Query | str]) -> list[Rubric]:
        """The most likely rubric per query; if every candidate is most likely left out, the
        candidate most likely to be included is kept (a rubric is never empty)."""
        import torch

        with torch.no_grad():
            lg = self.action_logits(queries)
        out = []
        for qi, q in enumerate(queries):
            acts = lg[qi].argmax(-1).tolist()
            if not any(acts):
                p = torch.softmax(lg[qi], -1)
                c = int(p[:, 1:].sum(-1).argmax())
                acts[c] = 1 + int(p[c, 1:].argmax())
            out.append(self.decode(acts, _question(q)[1]))  # type: ignore[arg-type]
        return out

    # ----- generate mode -------------------------------------------------------------------------
    def _generate_text(self, prompt: str) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
        dev = next(self.model.parameters()).device
        with torch.no_grad():
            out = self.model.generate(ids.to(dev), attention_mask=torch.ones_like(ids).to(dev),
                                      max_new_tokens=self.max_new_tokens, do_sample=self.temperature > 0,
                                      temperature=self.temperature or None, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    def _generate(self, query: Query | str) -> Rubric:
        question, qid = _question(query)
        prompt = (f"{RUBRICOR_SYSTEM}\n\nQuestion to be solved:\n{question}\n\nWrite a rubric of 3 to 8 criteria, one per "
                  "line, numbered, each tagged [hard rule] or [principle] with an optional (weight N), e.g.\n"
                  "1. [hard rule] (weight 3) Every hard step is written by the large model.\n"
                  "2. [principle] The total cost stays low.\n\nRubric:\n")
        last = ""
        for _ in range(self.max_reasks + 1):
            text = self._generate_text(prompt)
            try:
                return parse_rubric_text(text, query_id=qid, source=self.name)
            except ValueError as e:
                last = str(e)
                prompt += f"{text}\n\nThat rubric could not be read: {last}\nWrite it again.\nRubric:\n"
        raise OutputValidationError(f"{self.name}: the generated rubric stayed unreadable after {self.max_reasks + 1} "
                                    f"attempt(s): {last}")

    def _rubric_sync(self, query: Query | str) -> Rubric:
        if self.mode == "generate":
            return self._generate(query)
        if self.temperature > 0:
            import torch

            g = torch.Generator().manual_seed(self.seed)
            for s in self.sample([query], 8, temperature=self.temperature, generator=g)[0]:
                if s.rubric is not None:
                    return s.rubric
        return self.greedy([query])[0]

    async def arubric(self, query: Query | str) -> Rubric:
        return await asyncio.to_thread(self._rubric_sync, query)

    async def arubric_many(self, queries: Sequence[Query | str], *, concurrency: int = 8) -> list[Rubric | RoroError]:
        if self.mode == "library" and self.temperature == 0:  # one batched forward
            return list(await asyncio.to_thread(self.greedy, list(queries)))
        return await super().arubric_many(queries, concurrency=1)


# ----------------------------------------------------------------------------- config
def rubricor_from_config(cfg: dict[str, Any]) -> Rubricor:
    """A Rubricor from a config mapping (the ``rubricor:`` section of a judge config file).

    ``{backend: litellm, model: {name, model, api_key_env, prices...} | "openai/..", max_reasks: 2}``,
    ``{backend: local, model: <folder or registry name>, adapter: <folder>, mode: library}`` or
    ``{backend: static, criteria: [{text, kind, weight}, ...]}``."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"rubricor config: expected a mapping (backend, model, ...), not {type(cfg).__name__}")
    cfg = dict(cfg)
    backend = cfg.pop("backend", "litellm")
    if backend == "litellm":
        if "model" not in cfg:
            raise ConfigError("rubricor config: backend litellm needs 'model'")
        return _build(LiteLLMRubricor, cfg.pop("model"), **cfg)
    if backend == "local":
        if "model" not in cfg:
            raise ConfigError("rubricor config: backend local needs 'model' (a folder or a local-registry name)")
        lib = cfg.pop("library", None)
        if lib is not None:
            cfg["library"] = [Criterion.model_validate(c) for c in lib]
        return _build(LocalRubricor.from_pretrained, cfg.pop("model"), adapter=cfg.pop("adapter", None), **cfg)
    if backend == "static":
        crits = cfg.get("criteria")
        return StaticRubricor([Criterion.model_validate(c) for c in crits] if crits else None)
    raise ConfigError(f"rubricor config: unknown backend {backend!r}; use litellm, local or static")


def _build(make: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``make(*args, **kw)`` with an unknown or misspelled option reported as a config error."""
    try:
        return make(*args, **kw)
    except TypeError as e:
        raise ConfigError(f"rubricor config: {e}; see examples/configs/judge_openai.yaml for the options") from None
