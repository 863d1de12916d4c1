"""A local engine on llama.cpp: the registry's GGUF files computed as they ship (quantised), with
prefix KV reuse and continuous batching over llama.cpp's multi-sequence KV cache.

Why: on a CPU, decoding is bound by reading the weights. llama.cpp reads the 4-bit GGUF weights
directly (the torch engine de-quantises them to fp32, 8x the bytes) with hand-written kernels, and
its C API decodes many sequences in one call. Measured on a 2-core machine (docs/benchmarks/local.md):
Qwen2.5-Coder 1.5B decodes ~3.5x and 0.5B ~2.3x the tokens per second of the torch engine at
batch 8, in a quarter of the memory. llama-cpp-python's high-level ``Llama`` runs one sequence at
a time, so this module drives the low-level API itself, the way llama.cpp's own server does:

* **Slots.** The context holds ``max_batch_size + max(2, max_batch_size // 2)`` sequences, each in
  its own stream of KV cells. A sequence keeps the tokens whose KV it holds after its request
  ends, so the next step of the same trajectory (its prompt = the last prompt + the step just
  written) prefills only the new text. A new request takes the idle sequence whose tokens share
  the longest prefix with its prompt; when a longer prefix sits in a busy sequence, that stream is
  copied into an idle one and trimmed (a memory copy, far cheaper than computing the prefix).
  llama.cpp computes a decoding call in one forward pass per run of consecutive sequence ids,
  so a row is moved next to the busy sequences first (``_compact``: two streams swapped through
  one scratch stream kept for it, or a cache moved into a stream given up; no cache is lost).
* **Continuous batching.** Each step decodes one token for every decoding row in one
  ``llama_decode`` call, then computes prompt chunks of newly admitted rows; rows leave as soon
  as they stop.
* **Bounded memory.** Each sequence has a fixed number of cells (``prefix_cache_mb`` over the
  sequences, at least 4096 and at most the model's training context), allocated once.
* **Exactness.** Each sequence has its own KV stream (no attention over a shared cache), flash
  attention is off (it rounds differently with the batch) and each prompt chunk is a call of its
  own. What remains is llama.cpp's matmul code path, which depends on how many rows a call has:
  plain kernels differ between calls of fewer than 8 rows and calls of 8 or more, and the
  repacked kernels (weights re-laid for SIMD at load) compute rows in tiles of 4 and the rest one
  by one. A token's hidden states are bit-identical whenever it is computed on the same path, and
  differ at rounding level otherwise (logits by up to ~1%, measured). So with prefix reuse (the
  default, repacked kernels on: 1.2-1.5x the decoding speed of the 1.5B at 4-8 rows here) a cached prefix computed
  in other chunks than an uncached prompt gives results that agree to rounding, not to the bit
  (greedy text can differ at near-ties, as bf16 does in the torch engine). With
  ``prefix_cache_mb=0`` (exact mode, repacked kernels off) every prompt is computed from scratch
  in chunks fixed by its length and decoded in calls of at most 7 rows, so the output is a pure
  function of the request: bit-identical alone, in any batch, at any concurrency (tested).

Text handling (prompt rendering, stop rules, logprob alignment) is :class:`RowText`, the same code
as the torch engine; only the logits differ (quantised weights: greedy text can differ from the
torch engine's, so recorded trees name the engine, see :attr:`compute_kind`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roro_sdk._extras import require

require("llama_cpp", extra="llamacpp")
import llama_cpp._logger as _llama_logger  # noqa: E402
import llama_cpp.llama_cpp as L  # noqa: E402
import numpy as np  # noqa: E402

from roro_sdk.local.cpu import CPU_LOCK  # noqa: E402
from roro_sdk.local.rows import EngineStats, GenerationRequest, RowState, settle  # noqa: E402
from roro_sdk.local.text import RowText  # noqa: E402

_llama_logger.set_verbose(False)
log = logging.getLogger("roro_sdk.local.llamacpp")


@L.llama_log_callback
def _to_logging(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp writes every tensor it loads, and warnings about the registry's GGUF files that
    # change nothing, to stderr; they go to this logger at debug level instead
    log.debug("%s", text.decode("utf-8", "replace").rstrip())


L.llama_log_set(_to_logging, ctypes.c_void_p(0))

#: Tokens per llama_decode call (decode rows + prompt chunks); the batch buffer is this size.
_N_BATCH = 512
_MIN_SEQ_CELLS = 4096
#: llama.cpp's CPU matmuls take one code path for calls of fewer rows than this and another from
#: it up (measured: a prompt's last token gets other logits when its chunk has < 8 tokens).
_VEC_ROWS = 8
#: A prefix in another sequence is copied over (a memory copy of its stream) only when it spares
#: at least this many tokens of prefill.
_COPY_MIN = 16
#: An idle sequence is extended in place when it holds the new prompt but for at most this many
#: tokens at its end (the stop token and re-tokenisation at the step boundary); otherwise it is
#: another trajectory's cache, and the prompt goes to an empty or least recently used sequence.
_TAIL_SLACK = 8
_IDLE_EXIT_S = 30.0
_backend_ready = False
_backend_lock = threading.Lock()


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            L.llama_backend_init()
            _backend_ready = True


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(eq=False)
class _Seq:
    """One llama.cpp sequence: the tokens whose KV it holds, and the row using it (None: idle)."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    row: RowState | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to prefill
    last_used: float = 0.0


class LlamaCppEngine(RowText):
    """One GGUF model served by llama.cpp; the same face as :class:`~roro_sdk.local.engine.LocalEngine`
    (``submit``/``asubmit``/``generate``/``generate_many``/``encode``/``close``/``stats``).

    ``tokenizer``: the model's Hugging Face tokenizer (its chat template renders prompts exactly as
    the torch engine does; its ids are llama.cpp's ids for the registry's models). ``repack``:
    llama.cpp's repacked weight layout (faster batched matmuls, but a row's logits then depend on
    how many rows share its call); ``None`` (the default) turns it on with prefix reuse and off in
    exact mode (``prefix_cache_mb=0``), whose promise it would break.
    """

    def __init__(self, gguf: str | os.PathLike, tokenizer: Any, *, name: str = "local", default_max_tokens: int = 512,
                 max_batch_size: int = 8, window_s: float = 0.005, prefix_cache_mb: float = 1024,
                 threads: int | None = None, batching: str = "continuous", repack: bool | None = None):
        if int(max_batch_size) < 1:
            raise ValueError("max_batch_size must be >= 1")
        if window_s < 0 or prefix_cache_mb < 0:
            raise ValueError("window_s and prefix_cache_mb must be >= 0")
        if batching not in ("continuous", "static"):
            raise ValueError(f"batching must be 'continuous' or 'static', got {batching!r}")
        n_seqs = min(int(max_batch_size) + max(2, int(max_batch_size) // 2), 256)
        if n_seqs <= int(max_batch_size):
            raise ValueError(f"max_batch_size must be below {n_seqs} for llama.cpp")
        _init_backend()
        self.name = name
        self.tokenizer = tokenizer
        self.gguf = Path(gguf)
        self.default_max_tokens = default_max_tokens
        self.max_batch_size = int(max_batch_size)
        self.window_s = float(window_s)
        self.prefix_cache_mb = float(prefix_cache_mb)
        self.batching = batching
        self.reuses_kv = batching == "continuous" and prefix_cache_mb > 0
        self.stats = EngineStats()
        self.generate_calls = 0
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)
        self.lock = CPU_LOCK
        self._seqs: list[_Seq] = []
        self._waiting: collections.deque[RowState] = collections.deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._done: list[tuple[concurrent.futures.Future, Any, bool]] = []
        self._model = self._ctx = self._batch = None
        try:
            self._load(threads, self.reuses_kv if repack is None else bool(repack), n_seqs)
        except BaseException:
            self.close()
            raise

    def _load(self, threads: int | None, repack: bool, n_seqs: int) -> None:
        mparams = L.llama_model_default_params()
        # llama.cpp's repacked CPU kernels take other code paths from 4 rows up: a row's logits
        # depend on how many rows share its call
        mparams.use_extra_bufts = repack
        self.repack = repack
        self._model = L.llama_model_load_from_file(str(self.gguf).encode(), mparams)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {self.gguf}")
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self.kv_bytes_per_token = self._kv_bytes_per_token()
        # one stream more than the rows' sequences: the scratch stream a swap of two streams goes through
        self.n_seqs = min(n_seqs, int(L.llama_max_parallel_sequences()) - 1)
        self._scratch = self.n_seqs
        n_train = int(L.llama_model_n_ctx_train(self._model)) or 1 << 15
        budget = int(self.prefix_cache_mb * 2**20 // self.kv_bytes_per_token // (self.n_seqs + 1))
        # llama.cpp pads contexts to 256 tokens; every sequence can hold a long trajectory
        self.seq_cells = max(min(_MIN_SEQ_CELLS, n_train), min(n_train, budget)) // 256 * 256
        self.n_cells = self.seq_cells * (self.n_seqs + 1)
        self.max_context = self.seq_cells
        cparams = L.llama_context_default_params()
        cparams.n_ctx = self.n_cells
        cparams.n_batch = cparams.n_ubatch = _N_BATCH
        cparams.n_seq_max = self.n_seqs + 1
        cparams.n_threads = cparams.n_threads_batch = int(threads or default_threads())
        cparams.kv_unified = False  # a stream per sequence: its cells sit the same way however it was filled
        cparams.flash_attn_type = 0  # off: llama.cpp's CPU flash attention rounds differently per batch
        cparams.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise ValueError(f"llama.cpp could not create a context of {self.n_cells} tokens for {self.gguf}")
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(_N_BATCH, 0, 1)
        self.eos_ids = self._eos_ids() | {int(L.llama_vocab_eos(self._vocab))} - {-1}
        self._seqs = [_Seq(i) for i in range(self.n_seqs)]

    @property
    def compute_kind(self) -> str:
        """What computes the logits, as trees record it: ``llama.cpp`` and the GGUF file's name."""
        return f"llama.cpp:{self.gguf.name}"

    def _kv_bytes_per_token(self) -> int:
        layers = int(L.llama_model_n_layer(self._model))
        heads, kv_heads = int(L.llama_model_n_head(self._model)), int(L.llama_model_n_head_kv(self._model))
        k_dim = self._meta_int("attention.key_length") or int(L.llama_model_n_embd(self._model)) // max(1, heads)
        v_dim = self._meta_int("attention.value_length") or k_dim
        return layers * kv_heads * (k_dim + v_dim) * 2  # float16 K and V

    def _meta_int(self, key: str) -> int | None:
        """``<arch>.<key>`` from the GGUF metadata (models whose head size is not n_embd / n_head)."""
        buf = ctypes.create_string_buffer(256)
        if L.llama_model_meta_val_str(self._model, b"general.architecture", buf, 256) < 0:
            return None
        arch = buf.value.decode()
        if L.llama_model_meta_val_str(self._model, f"{arch}.{key}".encode(), buf, 256) < 0:
            return None
        try:
            return int(buf.value.decode())
        except ValueError:
            return None

    # ---- requests ----------------------------------------------------------------------------
    def new_row(self, r: GenerationRequest, future: concurrent.futures.Future | None = None) -> RowState:
        """Validate and encode one request (raises ``ValueError`` on bad input)."""
        ids, prefix_mode, limit = self.checked(r)
        gen = np.random.default_rng(int(r.seed)) if r.seed is not None else np.random.default_rng()
        self.stats.requests += 1
        self.stats.prompt_tokens += len(ids)
        return RowState(request=r, prompt=ids, prefix_mode=prefix_mode, limit=limit, generator=gen,
                        context_id=ids[-1] if ids else None, future=future)

    def submit(self, request: GenerationRequest) -> concurrent.futures.Future:
        """Queue ``request``; the future holds its :class:`GenerationResult` (or its error)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            row = self.new_row(request, future)
        except ValueError as exc:
            future.set_exception(exc)
            return future
        with self._cv:
            if self._closed:
                raise RuntimeError(f"local engine {self.name!r} is closed; load it again")
            self._waiting.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name=f"roro-llamacpp-{self.name}")
                self._thread.start()
            self._cv.notify_all()
        return future

    def close(self) -> None:
        """Fail pending requests, stop the worker and free the model; final."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)
        with self._cv:
            pending = list(self._waiting) + [s.row for s in self._seqs if s.row is not None]
            self._waiting.clear()
        for row in pending:
            if row.future is not None:
                settle(row.future, RuntimeError(f"local engine {self.name!r} was closed"), False)
        with self.lock:
            if self._batch is not None:
                L.llama_batch_free(self._batch)
            if self._ctx:
                L.llama_free(self._ctx)
            if self._model:
                L.llama_model_free(self._model)
            self._ctx = self._model = self._batch = None

    def __del__(self) -> None:  # an engine dropped without close() must not keep its worker
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- interpreter shutdown
            pass

    # ---- the worker ----------------------------------------------------------------------------
    def _active(self) -> list[_Seq]:
        return [s for s in self._seqs if s.row is not None]

    def _loop(self) -> None:
        while True:
            with self._cv:
                idle_since = time.monotonic()
                starting = not self._active()
                while not self._waiting and not self._active() and not self._closed:
                    self._cv.wait(timeout=1.0)
                    if time.monotonic() - idle_since > _IDLE_EXIT_S and not self._waiting:
                        self._thread = None  # the next submit starts a new worker (under the same lock)
                        return
                if self._closed:
                    return
            if starting and self.window_s > 0:
                time.sleep(self.window_s)  # let a wave of concurrent requests arrive together
            try:
                with self.lock:
                    if not self._active():  # a busy period starts: it gets its largest batch
                        self.generate_calls += 1
                        self.batch_sizes.append(0)
                    self._admit()
                    self._step()
            except Exception as exc:  # noqa: BLE001 -- a failed llama_decode fails its rows, not the engine
                for s in self._active():
                    self._finish(s, exc)
            self._resolve()

    def _admit(self) -> None:
        """Give waiting rows a sequence while the batch has room (static: only when it is empty)."""
        busy = len(self._active())
        if self.batching == "static" and busy:
            return
        room = min(self.max_batch_size, self.n_seqs - 1)  # max_batch_size may be raised after loading
        deferred: list[RowState] = []
        while busy < room:
            with self._cv:
                if not self._waiting:
                    break
                row = self._waiting.popleft()
            if row.future is not None and row.future.cancelled():
                continue
            if self._prefix_coming(row):
                deferred.append(row)
                continue
            try:
                self._place(row)
            except Exception as exc:  # noqa: BLE001 -- this row fails, the batch goes on
                if row.future is not None:
                    self._done.append((row.future, exc, False))
                continue
            busy += 1
        if deferred:
            with self._cv:
                self._waiting.extendleft(reversed(deferred))
        if busy and self.batch_sizes:
            self.batch_sizes[-1] = max(self.batch_sizes[-1], busy)

    def _prefix_coming(self, row: RowState) -> bool:
        """Whether a row admitted in this step will prefill a longer prefix of ``row``'s prompt
        than any sequence holds now (a wave of first steps shares the preamble): then ``row``
        waits one step and copies it instead of computing it again."""
        if not self.reuses_kv:
            return False
        now = max((_common_prefix(s.tokens, row.prompt) for s in self._seqs), default=0)
        soon = max((_common_prefix(s.tokens + s.pending, row.prompt) for s in self._seqs if s.pending), default=0)
        return soon >= now + _COPY_MIN

    def _place(self, row: RowState) -> None:
        prompt = row.prompt
        idle = [s for s in self._seqs if s.row is None]
        if not self.reuses_kv:  # nothing is kept between requests: the stream nearest the decoding rows
            busy = self._busy()
            dst, src = min(idle, key=lambda s: (self._runs_with(s, busy), s.seq_id)), None
        else:
            common = {s.seq_id: _common_prefix(s.tokens, prompt) for s in self._seqs}
            own = max(idle, key=lambda s: common[s.seq_id])
            if 0 < len(own.tokens) - common[own.seq_id] <= _TAIL_SLACK or len(own.tokens) == common[own.seq_id] > 0:
                dst = own  # it holds this prompt up to its last few tokens (the trajectory's last step): extend it
            else:  # keep other trajectories' caches: take an empty or the least recently used sequence
                dst = min(idle, key=lambda s: (len(s.tokens) > 0, s.last_used))
            src = max(self._seqs, key=lambda s: common[s.seq_id])
            if common[src.seq_id] < common[dst.seq_id] + _COPY_MIN:
                src = dst  # copying a stream costs more than computing a few tokens
            dst, src = self._compact(dst, src, extends=dst is own and src is dst)
        shared = _common_prefix(src.tokens, prompt) if src is not None else 0
        keep = min(shared, len(prompt) - 1)  # at least one prompt token is computed: its logits start the row
        if dst is not src:
            L.llama_memory_seq_rm(self._mem, dst.seq_id, -1, -1)
            dst.tokens = []
            if src is not None and keep > 0:  # streams copy whole; the tail is trimmed below
                L.llama_memory_seq_cp(self._mem, src.seq_id, dst.seq_id, -1, -1)
                dst.tokens = list(src.tokens)
        if len(dst.tokens) > keep:
            if L.llama_memory_seq_rm(self._mem, dst.seq_id, keep, -1):
                dst.tokens = dst.tokens[:keep]
            else:  # memory that cannot drop a tail (recurrent or hybrid models): start over
                self._forget(dst)
        keep = len(dst.tokens)
        dst.row, dst.pending = row, list(prompt[keep:])
        row.kv_len = keep
        self.stats.reused_tokens += keep

    def _busy(self) -> frozenset[int]:
        return frozenset(b.seq_id for b in self._seqs if b.row is not None)

    def _runs_with(self, s: _Seq, busy: frozenset[int]) -> int:
        """How many runs of consecutive sequence ids the busy sequences form if ``s`` joins them.
        With a stream per sequence, llama.cpp splits a decoding call into one forward pass per run
        (its ``split_equal`` groups only consecutive ids): rows in streams 0, 5 and 11 cost three
        passes, rows in 0, 1 and 2 one (measured: docs/benchmarks/local.md)."""
        ids = sorted(busy | {s.seq_id})
        return 1 + sum(b != a + 1 for a, b in zip(ids, ids[1:]))

    def _compact(self, dst: _Seq, src: _Seq, *, extends: bool) -> tuple[_Seq, _Seq]:
        """The sequence a row takes and the one its prefix comes from, moved next to the busy
        sequences when an idle stream there would spare the row's calls a forward pass (a stream
        copy is a memcpy, ~10-25 ms here, against a pass of ~45-85 ms every decoding call). No
        cache is lost. When ``dst`` holds the row's prefix (``extends``: its own trajectory, or
        ``src is dst``: a cache it shares a prefix with) the two streams are swapped; when ``dst``
        was to be given up for another stream's prefix, the nearer stream's cache moves into it."""
        busy = self._busy()
        runs = {s.seq_id: self._runs_with(s, busy) for s in self._seqs if s.row is None}
        best = min((s for s in self._seqs if s.row is None), key=lambda s: (runs[s.seq_id], s.seq_id))
        if runs[best.seq_id] >= runs[dst.seq_id]:
            return dst, src
        if not best.tokens:  # nothing to keep there
            if extends:
                self._copy(dst, best)
                self._forget(dst)
                return best, best
            return best, src  # src's prefix (dst's, when src is dst) is copied in by the caller
        if extends or src is dst:
            self._swap(dst, best)
            return best, best
        self._copy(best, dst)
        return best, (best if src is best else src)

    def _copy(self, a: _Seq, b: _Seq) -> None:
        """Stream ``a`` into stream ``b`` (llama.cpp queues stream copies and applies them in order
        before its next computation)."""
        L.llama_memory_seq_cp(self._mem, a.seq_id, b.seq_id, -1, -1)
        b.tokens, b.last_used = list(a.tokens), a.last_used

    def _swap(self, a: _Seq, b: _Seq) -> None:
        scratch = _Seq(self._scratch)
        self._copy(a, scratch)
        self._copy(b, a)
        self._copy(scratch, b)
        L.llama_memory_seq_rm(self._mem, self._scratch, -1, -1)

    def _step(self) -> None:
        """One token for every decoding row (one llama_decode call), then prompt chunks of
        prefilling rows, each sequence in a call of its own (see below), up to ``_N_BATCH``
        prompt tokens in all so that decoding rows are not held up by a long prompt."""
        active = self._active()
        if not active:
            return
        decoding = [s for s in active if not s.pending]
        # exact mode: calls of fewer than _VEC_ROWS rows, so every decoded token takes the same code path
        per_call = len(decoding) if self.reuses_kv else _VEC_ROWS - 1
        for at in range(0, len(decoding), max(1, per_call)):
            part = decoding[at:at + max(1, per_call)]
            for n, s in enumerate(part):
                self._put(n, s.row.generated[-1], len(s.tokens), s.seq_id, True)
                s.tokens.append(s.row.generated[-1])
            self._batch.n_tokens = len(part)
            self._decode(prefill=False)
            self.stats.decode_steps += at == 0
            self.stats.decode_rows += len(part)
            self._sample([(s, n) for n, s in enumerate(part)], len(active))
        # One sequence per prefill call: llama.cpp splits a call that holds several sequences'
        # prompts into equal per-sequence pieces, so a prompt's chunks (and rounding, see the
        # module docstring) would depend on the other prompts. A row's prompt is cut into chunks
        # of _N_BATCH from where its cached prefix ends, whatever else runs; rows prefill while
        # fewer than _N_BATCH prompt tokens were computed in this step.
        computed = 0
        for s in active:
            if not s.pending or computed >= _N_BATCH or s.row is None:
                continue
            take = s.pending[:_N_BATCH]
            done = len(take) == len(s.pending)
            for k, tok in enumerate(take):
                self._put(k, tok, len(s.tokens) + k, s.seq_id, done and k == len(take) - 1)
            self._batch.n_tokens = len(take)
            self._decode(prefill=True)
            s.tokens.extend(take)
            s.pending = s.pending[len(take):]
            self.stats.prefill_tokens += len(take)
            computed += len(take)
            if done:
                self._sample([(s, len(take) - 1)], len(active))
        for s in self._active():  # withdrawn requests leave at once
            if s.row.future is not None and s.row.future.cancelled():
                self._finish(s, None, cancelled=True)

    def _sample(self, wants: list[tuple[_Seq, int]], peak: int) -> None:
        """Choose the next token of each ``(sequence, batch index)`` from the call's logits."""
        for s, idx in wants:
            row = s.row
            row.peak_batch = max(row.peak_batch, peak)
            try:
                logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, idx), shape=(self.n_vocab,))
                tid = self._choose(row, logits)
                row.kv_len = len(s.tokens)
                finished = self.advance(row, tid)
            except Exception as exc:  # noqa: BLE001 -- this row fails (e.g. non-finite logits), the batch goes on
                self._finish(s, exc)
                continue
            if finished:
                self._finish(s, None)

    def _put(self, i: int, tok: int, pos: int, seq: int, logits: bool) -> None:
        b = self._batch
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
        b.seq_id[i][0] = seq

    def _decode(self, *, prefill: bool) -> None:
        t0 = time.perf_counter()
        rc = L.llama_decode(self._ctx, self._batch)
        if prefill:
            self.stats.prefill_s += time.perf_counter() - t0
        else:
            self.stats.decode_s += time.perf_counter() - t0
        if rc == 1:  # cannot happen while every row fits its stream (max_context); say so if it does
            raise RuntimeError(f"{self.name!r}: llama.cpp found no KV room ({self.seq_cells} cells per sequence); "
                               "raise prefix_cache_mb (RORO_LOCAL_PREFIX_CACHE_MB)")
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) in {self.name!r}")

    def _choose(self, row: RowState, logits: np.ndarray) -> int:
        """Greedy when temperature <= 0 (or top_p 0), else temperature + top-p sampling; logprobs
        of the model's distribution (before temperature), as the torch engine reports them."""
        r = row.request
        x = logits.astype(np.float32, copy=True)
        temp = 1.0 if r.temperature is None else float(r.temperature)
        top_p = 1.0 if r.top_p is None else float(r.top_p)
        if temp < 1e-5 or top_p <= 0:
            tid = int(np.argmax(x))
        else:
            z = x / temp
            p = np.exp(z - z.max())
            p /= p.sum()
            if top_p < 1.0:
                order = np.argsort(-p, kind="stable")
                sp = p[order]
                drop = (np.cumsum(sp) - sp) >= top_p
                drop[0] = False
                sp[drop] = 0.0
                p = np.zeros_like(p)
                p[order] = sp
                p /= p.sum()
            tid = int(row.generator.choice(len(p), p=p))
        if r.logprobs:
            lp = x - x.max()
            lp -= np.log(np.exp(lp).sum())
            k = min(max(int(r.top_logprobs or 0), 0), len(lp))
            top = np.argpartition(-lp, k - 1)[:k] if k else np.array([], dtype=np.int64)
            top = top[np.argsort(-lp[top], kind="stable")]
            row.lp_raw.append((float(lp[tid]), [int(t) for t in top], [float(lp[t]) for t in top]))
        return tid

    def _finish(self, s: _Seq, exc: BaseException | None, *, cancelled: bool = False) -> None:
        row = s.row
        s.row, s.pending, s.last_used = None, [], time.monotonic()
        if exc is not None:  # its KV may be half-written: forget it
            self._forget(s)
        if row is None or row.future is None or cancelled:
            return
        if exc is None:
            try:
                self._done.append((row.future, self.result(row), True))
            except Exception as err:  # noqa: BLE001 -- e.g. the tokenizer failing on this row's text
                self._done.append((row.future, err, False))
        else:
            self._done.append((row.future, exc, False))

    def _forget(self, s: _Seq) -> None:
        L.llama_memory_seq_rm(self._mem, s.seq_id, -1, -1)
        s.tokens = []

    def _resolve(self) -> None:
        """Wake callers outside the CPU lock (a callback may submit to another engine)."""
        done, self._done = self._done, []
        for future, value, ok in done:
            settle(future, value, ok)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n
