"""The async face of a local engine's scheduler (kept for code written against it).

Batching itself now lives in :mod:`roro_sdk.local.scheduler` (continuous batching with prefix
KV reuse); :class:`AsyncBatcher` sets the engine's batch size and idle window and awaits the
scheduler's futures from any event loop.
"""

from __future__ import annotations

from roro_sdk.local.engine import GenerationRequest, GenerationResult, LocalEngine


class AsyncBatcher:
    """``await batcher.submit(request)``: queue a request on ``engine`` and wait for its result."""

    def __init__(self, engine: LocalEngine, *, max_batch_size: int = 8, window_s: float = 0.005):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if window_s < 0:
            raise ValueError("window_s must be >= 0")
        self.engine = engine
        engine.max_batch_size = max_batch_size
        engine.window_s = window_s

    @property
    def max_batch_size(self) -> int:
        return self.engine.max_batch_size

    @property
    def window_s(self) -> float:
        return self.engine.window_s

    async def submit(self, request: GenerationRequest) -> GenerationResult:
        """Queue ``request``; return its result once generated."""
        return await self.engine.asubmit(request)
