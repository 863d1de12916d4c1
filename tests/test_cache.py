"""The generation cache: identical calls are answered identically from disk; sampling calls and calls
with other sampling parameters or seeds never are; safe across threads and processes; clearable."""

from __future__ import annotations

import multiprocessing as mp
import threading

import pytest

from roro_sdk import ModelPool
from roro_sdk.cache import GenerationCache, cache_key
from roro_sdk.eval import evaluate
from roro_sdk.sim import SimConfig, sim_pool, sim_queries
from roro_sdk.types import SamplingParams

from .conftest import FAST_RETRY

MSGS = [{"role": "user", "content": "What is 6 * 7?"}]
BASE = {"model": "openai/small", "api_base": "http://127.0.0.1:1/v1", "max_tokens": 64, "temperature": 0.0, "top_p": 1.0,
        "stop": ["\n\n"]}


def test_key_covers_every_parameter_that_changes_the_output():
    k = cache_key(BASE, MSGS)
    assert k is not None and k == cache_key(dict(BASE), [dict(m) for m in MSGS])
    assert cache_key({**BASE, "api_key": "secret", "timeout": 5, "num_retries": 0}, MSGS) == k  # transport only
    variants = [{"model": "openai/large"}, {"api_base": "http://127.0.0.1:2/v1"}, {"max_tokens": 65}, {"temperature": 0.1, "seed": 1},
                {"top_p": 0.9}, {"seed": 3}, {"stop": None}, {"logprobs": True}, {"logprobs": True, "top_logprobs": 5},
                {"presence_penalty": 0.5}]
    keys = {cache_key({**BASE, **v}, MSGS) for v in variants}
    assert None not in keys and k not in keys and len(keys) == len(variants)
    assert cache_key({**BASE, "seed": 3}, MSGS) != cache_key({**BASE, "seed": 4}, MSGS)
    assert cache_key(BASE, MSGS + [{"role": "assistant", "content": "6 * 7"}]) != k
    assert cache_key(BASE, MSGS, cut=False) != k
    # sampling without a seed is a fresh draw every time: never cached
    assert cache_key({**BASE, "temperature": 0.6}, MSGS) is None
    assert cache_key({k2: v for k2, v in BASE.items() if k2 != "temperature"}, MSGS) is None
    assert cache_key({**BASE, "temperature": 0.6, "seed": 7}, MSGS) is not None


def test_store_lookup_persist_clear(tmp_path):
    c = GenerationCache(tmp_path)
    assert c.path == tmp_path / "generations.sqlite"
    assert c.get("k1") is None and c.get(None) is None
    c.put("k1", {"text": "a", "cost_usd": 0.5, "latency_s": 2.0}, model="small")
    c.put("k2", {"text": "b"}, model="large")
    assert c.get("k1")["text"] == "a"  # served before it is flushed
    assert (c.stats.hits, c.stats.misses, c.stats.uncacheable, c.stats.saved_cost_usd) == (1, 1, 1, 0.5)
    c.close()
    c2 = GenerationCache(tmp_path / "generations.sqlite")
    assert len(c2) == 2 and c2.get("k2") == {"text": "b"}
    assert c2.info()["by_model"] == {"small": 1, "large": 1}
    assert c2.clear(model="small") == 1 and len(c2) == 1
    assert c2.clear() == 1 and len(c2) == 0


def _writer(path: str, start: int) -> None:
    c = GenerationCache(path, batch_size=7)
    for i in range(start, start + 50):
        c.put(f"key-{i}", {"i": i}, model="m")
    c.close()


def test_concurrent_threads_and_processes(tmp_path):
    c = GenerationCache(tmp_path, batch_size=5)
    threads = [threading.Thread(target=lambda s=s: [c.put(f"t-{s}-{i}", {"i": i}) or c.get(f"t-{s}-{i}") for i in range(40)])
               for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 1000 * (p + 1))) for p in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(c) == 4 * 40 + 2 * 50
    assert c.get("key-1049") == {"i": 1049}


def test_pool_answers_identical_calls_from_the_cache(server, tmp_path):
    cache = GenerationCache(tmp_path)
    spec = server.spec("small", price=(0.1, 0.4), sampling=SamplingParams(temperature=0.0, top_p=1.0))
    pool = ModelPool([spec], retry=FAST_RETRY, cache=cache)
    first = pool.generate("small", "What is 6 * 7?", [], logprobs=True)
    calls = server.calls["small"]
    again = pool.generate("small", "What is 6 * 7?", [], logprobs=True)
    assert server.calls["small"] == calls  # no new request
    assert not first.cached and again.cached
    for f in ("text", "input_tokens", "output_tokens", "cost_usd", "priced", "finish_reason", "token_logprobs"):
        assert getattr(again, f) == getattr(first, f)
    assert cache.stats.hits == 1 and cache.stats.saved_cost_usd == pytest.approx(first.cost_usd)
    pool.generate("small", "What is 6 * 7?", [])  # logprobs flag differs: a new call
    pool.generate("small", "What is 6 * 7?", [], max_tokens=5)  # max_tokens differs
    pool.generate("small", "What is 6 * 7?", [], overrides={"seed": 9})  # seed differs
    pool.generate("small", "What is 6 * 7?", [], overrides={"top_p": 0.5})  # top_p differs
    assert server.calls["small"] == calls + 4
    # a model that samples without a seed is never answered from the cache
    sampling = ModelPool([server.spec("small", price=(0.1, 0.4), sampling=SamplingParams(temperature=0.6))], retry=FAST_RETRY,
                         cache=cache)
    for _ in range(2):
        assert not sampling.generate("small", "What is 6 * 7?", []).cached
    assert server.calls["small"] == calls + 6
    seeded = ModelPool([server.spec("small", price=(0.1, 0.4), sampling=SamplingParams(temperature=0.6, seed=1))],
                       retry=FAST_RETRY, cache=cache)
    assert [seeded.generate("small", "What is 6 * 7?", []).cached for _ in range(2)] == [False, True]


def test_repeated_evaluation_is_identical_and_free(tmp_path):
    cfg = SimConfig(p_hard=0.5)
    qs = sim_queries(n=8, config=cfg)
    pool = sim_pool(cfg, cache=GenerationCache(tmp_path))
    one = evaluate(pool, qs, ["steer:0.8"], references=False, bootstrap=50)
    two = evaluate(pool, qs, ["steer:0.8"], references=False, bootstrap=50)
    a, b = one.runs[0], two.runs[0]
    assert a.cache["hits"] == 0 and b.cache["misses"] == 0 and b.cache["hits"] == a.cache["stores"]
    assert b.cache["saved_cost_usd"] == pytest.approx(a.total_cost_usd)
    assert [q.model_dump(exclude={"latency_s"}) for q in a.queries] == [q.model_dump(exclude={"latency_s"}) for q in b.queries]
    assert (a.accuracy, a.total_cost_usd, a.tokens_by_model) == (b.accuracy, b.total_cost_usd, b.tokens_by_model)
