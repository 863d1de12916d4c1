"""The embedded default pool: two local models that ship inside PyPI packages.

Qwen2.5-Coder-0.5B-Instruct (small) and Qwen2.5-Coder-1.5B-Instruct (large) run in-process on a
2-core CPU, need no key and no network, and have a real capability gap (DESIGN.md section 4).
Their dollar prices are *nominal*: proportional to parameter count at typical hosted rates for
models of that size, so that cost figures rank routers the way real prices would.
"""

from __future__ import annotations

from .pool import ModelPool
from .types import ModelSpec, SamplingParams

DEFAULT_SMALL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_LARGE = "qwen2.5-coder-1.5b-instruct"


def default_pool(*, max_tokens_per_step: int = 160, temperature: float = 0.0) -> ModelPool:
    """The local same-family small/large pair. Greedy by default so the quick start is repeatable."""
    sampling = SamplingParams(temperature=temperature, top_p=1.0 if temperature == 0 else 0.95)
    return ModelPool([
        ModelSpec(name="qwen-0.5b", model=f"roro_local/{DEFAULT_SMALL}", mode="prefix", input_price_per_m=0.02,
                  output_price_per_m=0.04, max_tokens_per_step=max_tokens_per_step, sampling=sampling, timeout_s=600),
        ModelSpec(name="qwen-1.5b", model=f"roro_local/{DEFAULT_LARGE}", mode="prefix", input_price_per_m=0.06,
                  output_price_per_m=0.12, max_tokens_per_step=max_tokens_per_step, sampling=sampling, timeout_s=600),
    ])
