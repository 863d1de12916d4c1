"""Continuous batching with prefix KV reuse for one :class:`~roro_sdk.local.engine.LocalEngine`.

Why: the stepwise workload is many short generations (a step is ~40 tokens) over long, shared
prompts (system prompt + worked example + question + every step so far). Re-computing the prompt
for every step and running fixed batches until their longest row ends wasted most of the CPU.

One worker thread per engine runs this loop (vLLM's scheduler, reduced to what a CPU needs):

1. **Admit** waiting requests while the batch has room (``max_batch_size``), oldest first. Each
   new row looks up the longest cached prefix of its prompt in the engine's
   :class:`~roro_sdk.local.kv_cache.PrefixCache`, prefills only the rest (a batch of one, so no
   padding enters its numerics), stores its prompt KV back, and chooses its first token.
2. **Merge** the new rows into the running batch: every row's KV is left-padded to the widest
   row and masked, so rows of any length decode together.
3. **Decode** one token for every row; rows that end (stop string, EOS, ``max_tokens``) leave the
   batch at once, their KV (prompt + output) goes into the prefix cache, and their callers wake.

Rows never wait for a batch to end, and a request that arrives mid-batch joins at the next token.
Greedy results equal an uncached computation of the same prompt up to float rounding (the
prefix's KV was computed in another matmul shape); in fp32 the tests see identical tokens and
logprobs within 1e-4. Models whose cache cannot be sliced this way (sliding-window layers, plain
modules without a transformers cache), and engines built with ``batching="static"``, run each wave
of requests through the engine's static path.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from typing import Any

import torch
import torch.nn.functional as F

from roro_sdk.local.rows import GenerationRequest, RowState, settle
from roro_sdk.local.kv_cache import KV, PrefixCache

#: Leading all-padding columns tolerated before the batch KV is compacted (a copy of the batch).
_TRIM_AFTER = 32
#: An idle worker thread exits after this long (the next request starts a new one), so an engine
#: nobody uses any more is not kept alive by its thread.
_IDLE_EXIT_S = 30.0


class ContinuousBatcher:
    """The engine's request queue and decode loop (one daemon thread, started on first submit)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.prefix_cache = PrefixCache(int(engine.prefix_cache_mb * 2**20))
        self.reuses_kv = engine.batching == "continuous" and _reusable_cache(engine)
        self._waiting: collections.deque[RowState] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._done: list[tuple[concurrent.futures.Future, Any, bool]] = []  # resolved after the lock is released
        # the running batch
        self._rows: list[RowState] = []
        self._cache: Any = None  # every row's KV in its last ``kv_len`` columns, left-padded

    # ---- callers' side ------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            row = self.engine.new_row(request, future)
        except ValueError as exc:  # this request alone is invalid
            future.set_exception(exc)
            return future
        with self._cv:
            if self._closed:
                raise RuntimeError(f"local engine {self.engine.name!r} is closed; load it again")
            self._waiting.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"roro-local-{self.engine.name}", daemon=True)
                self._thread.start()
            self._cv.notify()
        return future

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self.prefix_cache.clear()

    # ---- the worker -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._rows and not self._closed:
                    if not self._cv.wait(_IDLE_EXIT_S) and not self._waiting and not self._rows:
                        self._thread = None  # idle: let the engine be collected; submit starts a new thread
                        return
                if self._closed:
                    self._fail_all(RuntimeError(f"local engine {self.engine.name!r} was closed"))
                    self._thread = None
                    return
                starting = not self._rows
            if starting and self.engine.window_s > 0:
                time.sleep(self.engine.window_s)  # let a wave of concurrent requests arrive together
            with self._cv:
                room = self.engine.max_batch_size - len(self._rows)
                new = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            new = [r for r in new if r.future is None or not r.future.cancelled()]
            try:
                with self.engine.lock:
                    if starting and new:
                        self.engine.generate_calls += 1
                        self.engine.batch_sizes.append(0)
                    if not self.reuses_kv:
                        self._run_wave(new)
                    else:
                        if new:
                            self._admit(new)
                        if self._rows:
                            self._decode()
            except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear of it
                self._fail(new + self._rows, exc)
                self._reset_batch()
            self._resolve()

    def _resolve(self) -> None:
        """Complete futures outside the engine lock: their callbacks run on this thread, and one
        that called an engine would otherwise wait for the lock this thread holds."""
        done, self._done = self._done, []
        for future, value, failed in done:
            settle(future, value, not failed)

    def _run_wave(self, rows: list[RowState]) -> None:
        if not rows:
            return
        self.engine.batch_sizes[-1] = max(self.engine.batch_sizes[-1], len(rows))
        self.engine.run_static(rows)
        for row in rows:
            self._finish(row)

    @torch.inference_mode()
    def _admit(self, rows: list[RowState]) -> None:
        joined: list[tuple[RowState, KV]] = []
        for row in rows:
            try:  # a row's own failure (its prefill, its sampling) fails that row, not the batch
                kv, logits = self._prefill(row)
                finished = self.engine.step([row], logits)[0]
            except Exception as exc:  # noqa: BLE001
                self._fail([row], exc)
                continue
            if finished:
                self._finish(row)
            else:
                joined.append((row, kv))
        if joined:
            self._merge(joined)
        size = len(self._rows)
        for row in self._rows:
            row.peak_batch = max(row.peak_batch, size)
        self.engine.batch_sizes[-1] = max(self.engine.batch_sizes[-1], size)

    def _prefill(self, row: RowState) -> tuple[KV, torch.Tensor]:
        """Compute the row's prompt KV past its longest cached prefix; keep its last logits."""
        ids = row.prompt
        reused, kv = self.prefix_cache.match(ids, limit=len(ids) - 1)  # at least one token yields logits
        cache = self.engine.new_cache()
        if kv is not None:
            _fill(cache, kv)
        suffix = torch.tensor([ids[reused:]], dtype=torch.long)
        positions = torch.arange(reused, len(ids), dtype=torch.long).view(1, -1)
        logits = self.engine.forward(suffix, torch.ones((1, len(ids)), dtype=torch.long), positions,
                                                cache, last_only=True)
        self.engine.stats.reused_tokens += reused
        self.engine.stats.prefill_tokens += len(ids) - reused
        row_kv = _kv_of(cache)
        row.kv_len = len(ids)
        self.prefix_cache.insert(ids, row_kv)
        return row_kv, logits

    def _merge(self, joined: list[tuple[RowState, KV]]) -> None:
        """Append rows to the batch, left-padding every row's KV to the widest one."""
        old = _kv_of(self._cache) if self._rows else None
        width_old = 0 if old is None else old[0][0].shape[2]
        width = max([width_old] + [row.kv_len for row, _ in joined])
        layers = []
        for i in range(len(joined[0][1])):
            ks = [] if old is None else [_pad_left(old[i][0], width)]
            vs = [] if old is None else [_pad_left(old[i][1], width)]
            ks += [_pad_left(kv[i][0], width) for _, kv in joined]
            vs += [_pad_left(kv[i][1], width) for _, kv in joined]
            layers.append((torch.cat(ks, dim=0), torch.cat(vs, dim=0)))
        self._cache = self.engine.new_cache()
        _fill(self._cache, layers)
        self._rows += [row for row, _ in joined]

    @torch.inference_mode()
    def _decode(self) -> None:
        rows = self._rows
        tokens = torch.tensor([[r.generated[-1]] for r in rows], dtype=torch.long)
        positions = torch.tensor([[r.kv_len] for r in rows], dtype=torch.long)
        for r in rows:  # the fed token's column
            r.kv_len += 1
        logits = self.engine.forward(tokens, _padding_mask(rows, self._cache.get_seq_length() + 1), positions,
                                     self._cache)
        self.engine.stats.decode_steps += 1
        self.engine.stats.decode_rows += len(rows)
        done = self.engine.step(rows, logits)
        gone = [j for j, (r, d) in enumerate(zip(rows, done)) if d or (r.future is not None and r.future.cancelled())]
        if not gone:
            return
        if self.prefix_cache.max_bytes:
            kv = _kv_of(self._cache)
            width = kv[0][0].shape[2]
            for j in gone:  # the KV of prompt + output (the last token was never fed) serves later steps
                row = rows[j]
                n = row.kv_len
                self.prefix_cache.insert(row.prompt + row.generated[:-1],
                                         [(k[j : j + 1, :, width - n :], v[j : j + 1, :, width - n :]) for k, v in kv])
        for j in gone:
            self._finish(rows[j])
        gone_set = set(gone)
        keep = [j for j in range(len(rows)) if j not in gone_set]
        self._rows = [rows[j] for j in keep]
        if not keep:
            self._reset_batch()
            return
        self._cache.batch_select_indices(torch.tensor(keep, dtype=torch.long))
        lead = self._cache.get_seq_length() - max(r.kv_len for r in self._rows)
        if lead >= _TRIM_AFTER:  # the widest row left: drop the columns nobody uses any more
            kv = [(k[:, :, lead:], v[:, :, lead:]) for k, v in _kv_of(self._cache)]
            self._cache = self.engine.new_cache()
            _fill(self._cache, kv)

    # ---- ending rows ----------------------------------------------------------------------------
    def _finish(self, row: RowState) -> None:
        if row.future is not None and not row.future.done():
            try:
                self._done.append((row.future, self.engine.result(row), False))
            except Exception as exc:  # noqa: BLE001 - e.g. the tokenizer failing on this row's text
                self._done.append((row.future, exc, True))

    def _fail(self, rows: list[RowState], exc: BaseException) -> None:
        for row in rows:
            if row.future is not None and not row.future.done():
                self._done.append((row.future, exc, True))

    def _fail_all(self, exc: BaseException) -> None:
        self._fail(list(self._waiting) + self._rows, exc)
        self._waiting.clear()
        self._reset_batch()
        self._resolve()

    def _reset_batch(self) -> None:
        self._rows, self._cache = [], None


def _reusable_cache(engine: Any) -> bool:
    """Whether the model fills a transformers cache whose every layer keeps all columns."""
    from transformers import PreTrainedModel

    if not isinstance(engine.model, PreTrainedModel):
        return False
    cache = engine.new_cache()
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    return all(type(layer).__name__ == "DynamicLayer" and not getattr(layer, "is_sliding", False) for layer in layers)


def _kv_of(cache: Any) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _fill(cache: Any, kv: KV) -> None:
    """Put tensors into an empty cache without copying them (the attributes transformers 4.56+
    and 5.x layers keep; ``lazy_initialization``'s signature differs between them)."""
    for layer, (k, v) in zip(cache.layers, kv):
        layer.keys, layer.values = k, v
        layer.dtype, layer.device = k.dtype, k.device
        layer.is_initialized = True


def _padding_mask(rows: list[RowState], width: int) -> torch.Tensor:
    """``[B, width]``: 1 on each row's real columns (its last ``kv_len`` ones), 0 on its padding."""
    lengths = torch.tensor([r.kv_len for r in rows], dtype=torch.long).view(-1, 1)
    return (torch.arange(width, dtype=torch.long).view(1, -1) >= width - lengths).long()


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(t, (0, 0, width - t.shape[2], 0)) if t.shape[2] < width else t
