"""One in-process Hugging Face causal LM and its batched decode loop.

Why a hand-written loop instead of ``model.generate``: every row of a batch is a different
request, so it needs its *own* temperature/top-p, seed (a ``torch.Generator`` per row, so seeded
sampling is exact even in a batch), stop strings (the step delimiter is checked on decoded text
after every token) and log-probabilities, and a finished row must stop growing at once. The loop
is plain: left-padded prefill (logits of the last position only), then one token per step with a
KV cache; rows that finish are dropped from the cache so the batch shrinks as steps end.

Thread safety: :meth:`LocalEngine.generate` holds a lock, so sync callers from several threads and
the async batcher (which runs in the engine's single worker thread) never run two batches at once.
"""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass, field
from typing import Any

from roro_sdk._extras import require

require("torch", extra="local")  # one line naming the extra, not a torch traceback
import torch

from roro_sdk.hf import cache_kwarg
from roro_sdk.local.prompting import render_prompt
from roro_sdk.local.stops import find_stop

# End-of-turn markers that should end generation when the tokenizer has them as special tokens.
_END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "</s>")


@dataclass
class GenerationRequest:
    """One chat completion request in the engine's terms (OpenAI meanings and defaults)."""

    messages: list[Any]
    max_tokens: int | None = None  # None: the engine's default_max_tokens
    temperature: float = 1.0  # <= 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class GenerationResult:
    """What one row produced. ``completion_tokens`` counts every generated token up to and
    including the one that triggered the stop (EOS and the delimiter token included: they were
    computed); ``logprobs`` covers only the tokens that contribute to ``text``."""

    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    prefix_mode: bool
    batch_size: int
    logprobs: list[dict[str, Any]] | None = None
    token_ids: list[int] = field(default_factory=list)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"bf16"``/``"bfloat16"``/``"fp32"``/... or a torch dtype; ``None`` is bf16 (2-3x faster on CPU)."""
    if dtype is None:
        return torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16", "half": "float16", "float": "float32"}
    value = getattr(torch, names.get(str(dtype).lower(), str(dtype).lower()), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use bfloat16, float32 or float16")
    return value


class LocalEngine:
    """A loaded model + tokenizer with a thread-safe batched :meth:`generate`.

    ``generate_calls`` and ``batch_sizes`` record how many batched runs happened and how big they
    were (tests and the benchmark read them).
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "local", default_max_tokens: int = 512):
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.default_max_tokens = default_max_tokens
        self.eos_ids = self._eos_ids()
        self.pad_id = self._pad_id()
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.generate_calls = 0
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._cache_kw = cache_kwarg(self.model)

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: str | torch.dtype | None = None, **kw: Any) -> "LocalEngine":
        """Load a Hugging Face folder (config + safetensors + tokenizer), from local files only: a
        missing file is an error here, never a hub lookup (which retries for ~47 s offline)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..hf import require_safetensors

        require_safetensors(path)
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(dtype), use_safetensors=True,
                                                     local_files_only=True)
        return cls(model, tok, **kw)

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The single worker thread async batches run in (keeps the event loop free)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"roro-local-{self.name}")
        return self._executor

    # ---- token bookkeeping -------------------------------------------------------------------
    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen_cfg = getattr(self.model, "generation_config", None)
        for source in (getattr(gen_cfg, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        specials = set(getattr(self.tokenizer, "all_special_tokens", []) or [])
        for marker in _END_MARKERS:
            if marker in specials:
                tid = self.tokenizer.convert_tokens_to_ids(marker)
                if isinstance(tid, int) and tid >= 0:
                    ids.add(tid)
        return ids

    def _pad_id(self) -> int:
        for cand in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, *sorted(self.eos_ids)):
            if cand is not None:
                return int(cand)
        return 0

    def encode(self, messages: list[Any]) -> tuple[list[int], bool]:
        """Prompt token ids and whether this is prefix mode."""
        text, prefix_mode, templated = render_prompt(self.tokenizer, messages)
        ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        return list(ids), prefix_mode

    def decode_continuation(self, context_id: int | None, ids: list[int]) -> str:
        """Text of generated ``ids``. Decoding after one context token keeps a leading space that
        SentencePiece-style decoders would drop at the start of a sequence."""
        if context_id is None:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        head = self.tokenizer.decode([context_id], skip_special_tokens=True)
        full = self.tokenizer.decode([context_id, *ids], skip_special_tokens=True)
        if head and full.startswith(head):
            return full[len(head) :]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _token_text(self, tid: int) -> str:
        return self.tokenizer.decode([tid], skip_special_tokens=False)

    # ---- generation -------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Run ``requests`` as one batch (left padding); raise the first request's error, if any."""
        results = self.generate_many(requests)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    def generate_many(self, requests: list[GenerationRequest]) -> list[GenerationResult | Exception]:
        """Like :meth:`generate`, but a request that is invalid on its own (prompt too long,
        bad ``max_tokens``, unreadable messages) gets its exception in its slot instead of failing
        the other rows of the batch."""
        slots: list[GenerationResult | Exception | None] = [None] * len(requests)
        prepared = []
        for k, r in enumerate(requests):
            try:
                ids, prefix_mode = self.encode(r.messages)
                prepared.append((k, r, ids, prefix_mode, self._limit(r, ids)))
            except (ValueError, TypeError, KeyError) as exc:
                slots[k] = exc if isinstance(exc, ValueError) else ValueError(str(exc))
        if prepared:
            with self._lock:
                self.generate_calls += 1
                self.batch_sizes.append(len(prepared))
                outs = self._run([p[1] for p in prepared], [p[2] for p in prepared],
                                 [p[3] for p in prepared], [p[4] for p in prepared])
            for p, out in zip(prepared, outs):
                slots[p[0]] = out
        return slots  # type: ignore[return-value]

    def _limit(self, r: GenerationRequest, prompt: list[int]) -> int:
        if not prompt:
            raise ValueError("the rendered prompt is empty")
        room = self.max_context - len(prompt)
        if room <= 0:
            raise ValueError(f"the prompt has {len(prompt)} tokens; {self.name!r} takes at most {self.max_context}")
        want = self.default_max_tokens if r.max_tokens is None else int(r.max_tokens)
        if want < 1:
            raise ValueError(f"max_tokens must be >= 1, got {want}")
        return min(want, room)

    @torch.inference_mode()
    def _run(self, requests: list[GenerationRequest], prompts: list[list[int]], prefix_modes: list[bool],
             limits: list[int]) -> list[GenerationResult]:
        from transformers import DynamicCache

        n = len(requests)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            if p:
                input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                mask[i, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator().manual_seed(int(r.seed)) if r.seed is not None else None for r in requests]

        try:
            cache = DynamicCache(config=self.model.config)
        except TypeError:  # older transformers: the cache builds its layers lazily
            cache = DynamicCache()
        out = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions,
            use_cache=True, logits_to_keep=1, **{self._cache_kw: cache},
        )
        logits = out.logits[:, -1, :].float()
        active = list(range(n))  # request index of each batch row
        generated: list[list[int]] = [[] for _ in range(n)]
        lp_raw: list[list[tuple[float, list[int], list[float]]]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        texts = [""] * n
        context = [p[-1] if p else None for p in prompts]

        while True:
            tokens = self._choose(logits, [requests[i] for i in active], [generators[i] for i in active])
            want_lp = [j for j, i in enumerate(active) if requests[i].logprobs]
            logp = torch.log_softmax(logits[want_lp], dim=-1) if want_lp else None
            keep: list[int] = []
            for j, i in enumerate(active):
                tid = int(tokens[j])
                generated[i].append(tid)
                if requests[i].logprobs:
                    row = logp[want_lp.index(j)]
                    k = min(max(int(requests[i].top_logprobs or 0), 0), row.shape[-1])
                    top = torch.topk(row, k) if k else None
                    lp_raw[i].append((float(row[tid]), top.indices.tolist() if top else [], top.values.tolist() if top else []))
                if tid in self.eos_ids:
                    finish[i] = "stop"
                    continue
                texts[i] = self.decode_continuation(context[i], generated[i])
                if find_stop(texts[i], requests[i].stop) is not None:
                    finish[i] = "stop"
                elif len(generated[i]) >= limits[i]:
                    finish[i] = "length"
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows: the batch shrinks as steps end
                idx = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(idx)
                mask, positions, tokens = mask[idx], positions[idx], tokens[idx]
                active = [active[j] for j in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
            out = self.model(
                input_ids=tokens.view(-1, 1), attention_mask=mask, position_ids=positions,
                use_cache=True, **{self._cache_kw: cache},
            )
            logits = out.logits[:, -1, :].float()

        return [
            self._result(requests[i], prompts[i], prefix_modes[i], generated[i], texts[i], finish[i], lp_raw[i], context[i], n)
            for i in range(n)
        ]

    def _choose(self, logits: torch.Tensor, reqs: list[GenerationRequest], gens: list[Any]) -> torch.Tensor:
        """Next token per row: argmax when temperature <= 0, else temperature + top-p sampling."""
        tokens = logits.argmax(dim=-1)
        for j, r in enumerate(reqs):
            temp = 1.0 if r.temperature is None else float(r.temperature)
            if temp <= 0:
                continue
            probs = torch.softmax(logits[j] / temp, dim=-1)
            top_p = 1.0 if r.top_p is None else float(r.top_p)
            if top_p < 1.0:
                sorted_p, order = torch.sort(probs, descending=True)
                drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # keeps the smallest set reaching top_p
                sorted_p[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
            tokens[j] = torch.multinomial(probs, 1, generator=gens[j])[0]
        return tokens

    def _result(self, req, prompt, prefix_mode, gen, text, finish, lp_raw, context_id, batch_size) -> GenerationResult:
        match = find_stop(text, req.stop)
        content = match.content if match is not None else text
        logprobs = None
        if req.logprobs:
            logprobs = []
            start = 0
            for k, (lp, top_ids, top_vals) in enumerate(lp_raw):
                if start >= len(content):  # this token starts in the delimiter/after the cut, or is EOS
                    break
                end = len(self.decode_continuation(context_id, gen[: k + 1]))
                tok = self._token_text(gen[k])
                logprobs.append({
                    "token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8")),
                    "top_logprobs": [
                        {"token": (t := self._token_text(tid)), "logprob": v, "bytes": list(t.encode("utf-8"))}
                        for tid, v in zip(top_ids, top_vals)
                    ],
                })
                start = max(start, end)
        return GenerationResult(
            text=content, finish_reason=finish or "length", prompt_tokens=len(prompt),
            completion_tokens=len(gen), prefix_mode=prefix_mode, batch_size=batch_size,
            logprobs=logprobs, token_ids=list(gen),
        )
