"""One in-process Hugging Face causal LM: prompts, sampling, per-row stop logic and logprobs.

Why a hand-written loop instead of ``model.generate``: every row of a batch is a different
request, so it needs its *own* temperature/top-p, seed (a ``torch.Generator`` per row, so seeded
sampling is exact even in a batch), stop strings (the step delimiter is checked on decoded text
after every token) and log-probabilities, and a finished row must stop growing at once.

Two ways to run requests share those semantics (:class:`RowState`):

* :meth:`LocalEngine.generate` / :meth:`LocalEngine.submit` go through the engine's
  :class:`~roro_sdk.local.scheduler.ContinuousBatcher`: prefix KV reuse and continuous batching
  (requests join the running batch between tokens, finished rows leave at once).
* :meth:`LocalEngine.generate_static` runs one left-padded batch from scratch, with no cache: the
  reference the fast path is tested against, and the path for models whose KV cache cannot be
  reused (sliding-window layers, custom modules).

Thread safety: the engine lock is held for every forward pass, so sync callers from several
threads, the async provider and the static path never run the model at the same time. Engines on
the CPU share one lock (:data:`CPU_LOCK`): models take turns instead of fighting over the cores.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

from roro_sdk._extras import require

require("torch", extra="local")  # one line naming the extra, not a torch traceback
import torch

from roro_sdk.hf import cache_kwarg
from roro_sdk.local.cpu import CPU_LOCK, FairLock  # noqa: F401 -- FairLock: its old home
from roro_sdk.local.rows import EngineStats, GenerationRequest, GenerationResult, RowState
from roro_sdk.local.scheduler import ContinuousBatcher
from roro_sdk.local.text import END_MARKERS, RowText

_END_MARKERS = END_MARKERS  # its old name


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it bf16 matmuls are
    emulated: measured on such a 2-core machine, fp32 prefills 2.4x and decodes a batch of 8
    1.6x faster than bf16 (docs/benchmarks/local.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: keep bf16, the smaller choice
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"auto"``/``"bf16"``/``"bfloat16"``/``"fp32"``/... or a torch dtype. ``None`` and ``"auto"``:
    bf16 where the CPU computes it natively, else fp32 (faster there, at twice the memory)."""
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16", "half": "float16", "float": "float32"}
    value = getattr(torch, names.get(str(dtype).lower(), str(dtype).lower()), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use auto, bfloat16, float32 or float16")
    return value


class LocalEngine(RowText):
    """A loaded model + tokenizer with a thread-safe :meth:`generate` (continuous batching with
    prefix KV reuse, see :mod:`roro_sdk.local.scheduler`).

    ``max_batch_size``: rows decoded together; ``window_s``: how long an idle engine waits for
    more requests before it starts (so a wave of concurrent requests prefills before decoding);
    ``prefix_cache_mb``: the bound on the prefix KV cache (0 turns it off); ``batching``:
    ``"continuous"`` (the default) or ``"static"`` (waves of up to ``max_batch_size`` requests run
    from scratch until their longest row ends, no prefix reuse: the engine before continuous
    batching, kept as the reference for tests and benchmarks).
    ``generate_calls`` counts busy periods (idle -> busy -> idle) and ``batch_sizes`` holds the
    largest batch of each (the last 1000); ``stats`` has token counters.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "local", default_max_tokens: int = 512,
                 max_batch_size: int = 8, window_s: float = 0.005, prefix_cache_mb: float = 1024,
                 batching: str = "continuous"):
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.default_max_tokens = default_max_tokens
        self.eos_ids = self._eos_ids()
        self.pad_id = self._pad_id()
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.generate_calls = 0
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)
        self.stats = EngineStats()
        on_cpu = all(p.device.type == "cpu" for p in self.model.parameters())
        self.lock = CPU_LOCK if on_cpu else FairLock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._cache_kw = cache_kwarg(self.model)
        self._scheduler: Any = None
        self._scheduler_lock = threading.Lock()
        self._closed = False
        self.max_batch_size = int(max_batch_size)
        self.window_s = float(window_s)
        self.prefix_cache_mb = float(prefix_cache_mb)
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.window_s < 0 or self.prefix_cache_mb < 0:
            raise ValueError("window_s and prefix_cache_mb must be >= 0")
        if batching not in ("continuous", "static"):
            raise ValueError(f"batching must be 'continuous' or 'static', got {batching!r}")
        self.batching = batching

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
    def compute_kind(self) -> str:
        """What computes this engine's logits, as trees record it: the torch dtype (``float32``)."""
        return next((str(p.dtype).removeprefix("torch.") for p in self.model.parameters()), "no weights")

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """Deprecated: nothing in roro-sdk runs on it any more (the scheduler has its own thread)."""
        import warnings

        warnings.warn("LocalEngine.executor is deprecated and unused: requests run on the engine's scheduler "
                      "thread (LocalEngine.submit / asubmit)", DeprecationWarning, stacklevel=2)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"roro-local-{self.name}")
        return self._executor

    @property
    def scheduler(self):
        """The engine's :class:`~roro_sdk.local.scheduler.ContinuousBatcher` (started on first use)."""
        if self._scheduler is None:
            with self._scheduler_lock:
                if self._closed:
                    raise RuntimeError(f"local engine {self.name!r} is closed; load it again")
                if self._scheduler is None:
                    self._scheduler = ContinuousBatcher(self)
        return self._scheduler

    def close(self) -> None:
        """Stop the scheduler thread (pending requests fail) and drop the prefix cache; final."""
        with self._scheduler_lock:
            self._closed = True
        if self._scheduler is not None:
            self._scheduler.close()

    # ---- token bookkeeping -------------------------------------------------------------------
    def _config_eos_ids(self) -> list[int]:
        source = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(source, int):
            return [source]
        return [int(i) for i in source] if source else []

    def _pad_id(self) -> int:
        for cand in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, *sorted(self.eos_ids)):
            if cand is not None:
                return int(cand)
        return 0

    # ---- generation -------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> concurrent.futures.Future:
        """Queue ``request`` on the scheduler; the future holds its :class:`GenerationResult`."""
        return self.scheduler.submit(request)

    def generate_static(self, requests: list[GenerationRequest]) -> list[GenerationResult | Exception]:
        """Run ``requests`` as one left-padded batch from scratch: no prefix cache, nobody joins.
        Invalid requests get their exception in their slot."""
        rows: list[RowState | None] = []
        slots: list[GenerationResult | Exception | None] = [None] * len(requests)
        for k, r in enumerate(requests):
            try:
                rows.append(self.new_row(r))
            except ValueError as exc:
                rows.append(None)
                slots[k] = exc
        live = [row for row in rows if row is not None]
        if live:
            with self.lock:
                self.generate_calls += 1
                self.batch_sizes.append(len(live))
                self.run_static(live)
        for k, row in enumerate(rows):
            if row is not None:
                slots[k] = self.result(row)
        return slots  # type: ignore[return-value]

    def new_row(self, r: GenerationRequest, future: concurrent.futures.Future | None = None) -> RowState:
        """Validate and encode one request (raises ``ValueError`` on bad input)."""
        ids, prefix_mode, limit = self.checked(r)
        gen = torch.Generator().manual_seed(int(r.seed)) if r.seed is not None else None
        self.stats.requests += 1
        self.stats.prompt_tokens += len(ids)
        return RowState(request=r, prompt=ids, prefix_mode=prefix_mode, limit=limit, generator=gen,
                    context_id=ids[-1] if ids else None, future=future)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                cache: Any, *, last_only: bool = False) -> torch.Tensor:
        """Logits of the last position ``[B, V]`` (fp32); ``cache`` is extended in place.
        ``last_only``: a prompt (only its last position's logits are computed), else a decode step."""
        kw = {"logits_to_keep": 1} if last_only else {}
        t0 = time.perf_counter()
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **{self._cache_kw: cache}, **kw)
        logits = out.logits[:, -1, :].float()
        if last_only:
            self.stats.prefill_s += time.perf_counter() - t0
        else:
            self.stats.decode_s += time.perf_counter() - t0
        return logits

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # older transformers: the cache builds its layers lazily
            return DynamicCache()

    def step(self, rows: list[RowState], logits: torch.Tensor) -> list[bool]:
        """Choose each row's next token from its logits row; return which rows are finished."""
        tokens = self._choose(logits, [r.request for r in rows], [r.generator for r in rows])
        want_lp = [j for j, r in enumerate(rows) if r.request.logprobs]
        logp = torch.log_softmax(logits[want_lp], dim=-1) if want_lp else None
        done = []
        for j, row in enumerate(rows):
            tid = int(tokens[j])
            if row.request.logprobs:
                lp = logp[want_lp.index(j)]
                k = min(max(int(row.request.top_logprobs or 0), 0), lp.shape[-1])
                top = torch.topk(lp, k) if k else None
                row.lp_raw.append((float(lp[tid]), top.indices.tolist() if top else [], top.values.tolist() if top else []))
            done.append(self.advance(row, tid))
        return done

    @torch.inference_mode()
    def run_static(self, rows: list[RowState]) -> None:
        n = len(rows)
        width = max(len(r.prompt) for r in rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt, dtype=torch.long)
            mask[i, width - len(r.prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self.new_cache()
        self.stats.prefill_tokens += sum(len(r.prompt) for r in rows)
        logits = self.forward(input_ids, mask, positions, cache, last_only=True)
        active = list(rows)
        for r in rows:
            r.peak_batch = n
        while True:
            done = self.step(active, logits)
            keep = [j for j, d in enumerate(done) if not d]
            if not keep:
                break
            tokens = torch.tensor([active[j].generated[-1] for j in keep], dtype=torch.long)
            if len(keep) < len(active):  # drop finished rows: the batch shrinks as steps end
                idx = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(idx)
                mask, positions = mask[idx], positions[idx]
                active = [active[j] for j in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
            self.stats.decode_steps += 1
            self.stats.decode_rows += len(active)
            logits = self.forward(tokens.view(-1, 1), mask, positions, cache)

    def _choose(self, logits: torch.Tensor, reqs: list[GenerationRequest], gens: list[Any]) -> torch.Tensor:
        """Next token per row: argmax when temperature <= 0, else temperature + top-p sampling."""
        tokens = logits.argmax(dim=-1)
        for j, r in enumerate(reqs):
            temp = 1.0 if r.temperature is None else float(r.temperature)
            if temp < 1e-5 or (r.top_p is not None and float(r.top_p) <= 0):
                continue  # greedy: a tinier temperature overflows the logits, top_p 0 keeps only the top token
            probs = torch.softmax(logits[j] / temp, dim=-1)
            top_p = 1.0 if r.top_p is None else float(r.top_p)
            if top_p < 1.0:
                sorted_p, order = torch.sort(probs, descending=True)
                drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # keeps the smallest set reaching top_p
                drop[0] = False
                sorted_p[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
            tokens[j] = torch.multinomial(probs, 1, generator=gens[j])[0]
        return tokens
