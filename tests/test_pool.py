"""The pool through LiteLLM's real HTTP path against the local server."""

from __future__ import annotations

import json

import pytest

from roro_sdk import (
    MissingAPIKeyError,
    ModelPool,
    ModelSpec,
    PermanentModelError,
    PoolFileError,
    TransientModelError,
    UnknownModelError,
    UnpricedModelError,
)
from roro_sdk.pool import cut_at_delimiter

from .conftest import FAST_RETRY


def test_chat_mode_sends_steps_in_user_turn_and_counts_usage(pool, server):
    gen = pool.generate("small", "What is 2+2?", ["first step", "second step"])
    body = server.requests[-1]
    assert body["model"] == "small"
    assert body["messages"][-1]["role"] == "user"
    assert "first step\n\nsecond step" in body["messages"][-1]["content"]
    assert body["stop"] == ["\n\n"]
    assert gen.text == "small step 3: so so so so"
    assert gen.input_tokens > 0 and gen.output_tokens == len(gen.text.split())
    assert gen.cost_usd == pytest.approx((gen.input_tokens * 0.1 + gen.output_tokens * 0.4) / 1e6)
    assert gen.priced


def test_prefix_mode_sends_trailing_assistant_text(server):
    pool = ModelPool([server.spec("small", price=(0, 0), mode="prefix")], retry=FAST_RETRY)
    pool.generate("small", "q?", ["a", "b"])
    last = server.requests[-1]["messages"][-1]
    assert last == {"role": "assistant", "content": "a\n\nb\n\n"}
    pool.generate("small", "q?", [])
    assert server.requests[-1]["messages"][-1]["role"] == "user"  # nothing to continue yet


def test_models_sorted_cheapest_first(pool3):
    assert pool3.names == ["small", "medium", "large"]
    assert (pool3.small, pool3.large) == ("small", "large")


@pytest.mark.parametrize("failures", [[429], [500, 503], ["timeout"], [429, "reset"]])
def test_transient_failures_are_retried(server, failures):
    pool = ModelPool([server.spec("small", price=(0, 0), timeout_s=0.5, max_retries=3)], retry=FAST_RETRY)
    server.inject("small", failures)
    gen = pool.generate("small", "q", [])
    assert gen.retries == len(failures)
    assert gen.text.startswith("small step 1")


def test_fallback_writes_the_step_when_retries_run_out(server):
    pool = ModelPool([server.spec("large", price=(1, 4), max_retries=1, fallback="small"), server.spec("small", price=(0.1, 0.4))],
                     retry=FAST_RETRY)
    server.inject("large", [500, 500])
    gen = pool.generate("large", "q", [])
    assert gen.model == "small" and gen.fallback_from == "large"
    assert server.calls["large"] == 2


def test_retries_exhausted_without_fallback_raise_typed_error(server):
    pool = ModelPool([server.spec("small", price=(0, 0), max_retries=2)], retry=FAST_RETRY)
    server.inject("small", [429, 429, 429])
    with pytest.raises(TransientModelError, match="3 attempt"):
        pool.generate("small", "q", [])


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_permanent_errors_are_not_retried(server, status):
    pool = ModelPool([server.spec("small", price=(0, 0), max_retries=3, fallback="large"), server.spec("large", price=(1, 1))],
                     retry=FAST_RETRY)
    server.inject("small", [status])
    with pytest.raises(PermanentModelError) as e:
        pool.generate("small", "q", [])
    assert e.value.status_code == status
    assert server.calls["small"] == 1 and server.calls["large"] == 0


def test_unpriced_models_are_refused_or_flagged(server):
    with pytest.raises(UnpricedModelError, match="small"):
        ModelPool([server.spec("small", price=None)])
    pool = ModelPool([server.spec("small", price=None)], allow_unpriced=True, retry=FAST_RETRY)
    gen = pool.generate("small", "q", [])
    assert gen.priced is False


def test_unknown_model_names_the_pool(pool):
    with pytest.raises(UnknownModelError, match="small, large"):
        pool["gpt-9"]


def test_missing_key_variable_is_named(server, monkeypatch):
    monkeypatch.delenv("RORO_TEST_KEY", raising=False)
    pool = ModelPool([server.spec("small", price=(0, 0), api_key_env="RORO_TEST_KEY")], retry=FAST_RETRY)
    with pytest.raises(MissingAPIKeyError, match="RORO_TEST_KEY"):
        pool.check_keys()
    with pytest.raises(MissingAPIKeyError, match="RORO_TEST_KEY"):
        pool.generate("small", "q", [])
    monkeypatch.setenv("RORO_TEST_KEY", "sk-secret-value")
    assert pool.generate("small", "q", []).text


def test_key_itself_is_rejected_in_config():
    with pytest.raises(Exception, match="NAME of an environment variable"):
        ModelSpec(name="x", model="openai/x", api_key_env="sk-abc123")


@pytest.mark.parametrize("suffix,content", [
    (".yaml", "models:\n  - name: a\n    model: openai/a\n    input_price_per_m: 1\n    output_price_per_m: 2\n"),
    (".toml", "[[models]]\nname='a'\nmodel='openai/a'\ninput_price_per_m=1\noutput_price_per_m=2\n"),
    (".json", json.dumps({"models": [{"name": "a", "model": "openai/a", "input_price_per_m": 1, "output_price_per_m": 2}]})),
])
def test_pool_files(tmp_path, suffix, content):
    p = tmp_path / f"pool{suffix}"
    p.write_text(content)
    assert ModelPool.from_file(p).names == ["a"]


@pytest.mark.parametrize("content,message", [
    ("models: [", "cannot parse"),
    ("models: 3", "expected a mapping with a 'models' list"),
    ("models: []", "at least one model"),
    ("models:\n  - name: a\n", "model"),
    ("models:\n  - {name: a, model: x, input_price_per_m: -1, output_price_per_m: 1}\n", "greater than or equal to 0"),
    ("models:\n  - {name: a, model: x, input_price_per_m: 1, output_price_per_m: 1}\n  - {name: a, model: y, input_price_per_m: 1, output_price_per_m: 1}\n", "unique"),
    ("models:\n  - {name: a, model: x, input_price_per_m: 1, output_price_per_m: 1, fallback: b}\n", "not in the pool"),
    ("modles: []\n", "expected a mapping"),
])
def test_malformed_pool_files_name_the_problem(tmp_path, content, message):
    p = tmp_path / "pool.yaml"
    p.write_text(content)
    with pytest.raises(PoolFileError, match=message):
        ModelPool.from_file(p)


def test_missing_pool_file(tmp_path):
    with pytest.raises(PoolFileError, match="not found"):
        ModelPool.from_file(tmp_path / "nope.yaml")


def test_cut_at_delimiter():
    assert cut_at_delimiter("\n\nfirst\n\nsecond") == "first"
    assert cut_at_delimiter("  only one  ") == "only one"
    assert cut_at_delimiter("") == ""


def test_logprobs_are_read(pool):
    gen = pool.generate("small", "q", [], logprobs=True)
    assert gen.token_logprobs and gen.confidence == pytest.approx(0.5)
