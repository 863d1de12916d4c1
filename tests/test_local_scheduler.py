"""The fast local path (prefix KV reuse + continuous batching) against an uncached computation.

Tiny fp32 models built from a config: the scheduler's greedy tokens and logprobs must equal the
engine's static path (one left-padded batch from scratch, no cache) for the same prompt, when
requests join a running batch, end at different lengths, and when two models alternate the steps
of one trajectory (each catches up on the other's step from its own cache).
"""

from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")

from roro_sdk.hf import tiny_causal_lm  # noqa: E402
from roro_sdk.local import GenerationRequest, LocalEngine  # noqa: E402
from roro_sdk.local.kv_cache import PrefixCache, kv_bytes  # noqa: E402
from tests.test_local_engine import build_tokenizer  # noqa: E402

SYSTEM = "You are a careful math tutor. Show your reasoning before the answer."
QUESTIONS = [
    "Tom has three boxes of apples. Each box holds four apples. How many apples?",
    "First we multiply the numbers. Then we subtract two. What is left?",
    "The quick brown fox jumps over the lazy dog 7 times. How many jumps?",
    "Hello world! Numbers 0 1 2 3 4 5 6 7 8 9. Add them.",
    "Step one: read the question carefully. Step two: compute 4 * 5.",
]


def make_engine(seed: int = 0, **kw) -> LocalEngine:
    tok = build_tokenizer()
    model = tiny_causal_lm(tok, num_kv_heads=2, max_positions=1024, init_std=0.2, seed=seed).float()
    return LocalEngine(model, tok, name=f"tiny-{seed}", window_s=0.0, **kw)


@pytest.fixture(scope="module")
def engine():
    e = make_engine(0)
    yield e
    e.close()


def msgs(q: str, prefix: str | None = None) -> list[dict]:
    out = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
    if prefix is not None:
        out.append({"role": "assistant", "content": prefix})
    return out


def req(q: str, prefix: str | None = None, max_tokens: int = 12, **kw) -> GenerationRequest:
    return GenerationRequest(messages=msgs(q, prefix), max_tokens=max_tokens, temperature=0, logprobs=True,
                             top_logprobs=3, **kw)


def reference(engine: LocalEngine, r: GenerationRequest):
    """The uncached computation: a batch of one through the static path."""
    return engine.generate_static([r])[0]


def assert_same(fast, ref, atol=1e-4):
    assert fast.token_ids == ref.token_ids
    assert fast.text == ref.text and fast.finish_reason == ref.finish_reason
    assert (fast.prompt_tokens, fast.completion_tokens) == (ref.prompt_tokens, ref.completion_tokens)
    assert len(fast.logprobs) == len(ref.logprobs)
    for a, b in zip(fast.logprobs, ref.logprobs):
        assert a["token"] == b["token"]
        assert a["logprob"] == pytest.approx(b["logprob"], abs=atol)
        assert [t["token"] for t in a["top_logprobs"]] == [t["token"] for t in b["top_logprobs"]]
        for ta, tb in zip(a["top_logprobs"], b["top_logprobs"]):
            assert ta["logprob"] == pytest.approx(tb["logprob"], abs=atol)


def test_cached_prefix_equals_uncached_and_prefills_only_new_tokens(engine):
    seconds = engine.stats.prefill_s, engine.stats.decode_s
    first = engine.generate([req(QUESTIONS[0])])[0]
    assert_same(first, reference(engine, req(QUESTIONS[0])))
    assert engine.stats.prefill_s > seconds[0] and engine.stats.decode_s > seconds[1]
    before = engine.stats.prefill_tokens, engine.stats.reused_tokens
    # step 2 of the same trajectory: everything up to the new step is cached
    step2 = req(QUESTIONS[0], prefix=first.text + "\n\n")
    fast = engine.generate([step2])[0]
    reused = engine.stats.reused_tokens - before[1]
    # the whole previous prompt came from the cache (and the step's tokens, where its text
    # re-tokenises the same way: a random model writes stray bytes that do not)
    assert reused >= first.prompt_tokens
    assert engine.stats.prefill_tokens - before[0] == fast.prompt_tokens - reused
    assert_same(fast, reference(engine, step2))
    # another query reuses the shared preamble (system prompt and chat markers)
    before = engine.stats.reused_tokens
    other = engine.generate([req(QUESTIONS[1])])[0]
    a, b = engine.encode(msgs(QUESTIONS[0]))[0], engine.encode(msgs(QUESTIONS[1]))[0]
    shared = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert shared > 40 and engine.stats.reused_tokens - before == shared
    assert_same(other, reference(engine, req(QUESTIONS[1])))


def test_requests_joining_mid_batch_and_ending_at_different_lengths(engine):
    long = req(QUESTIONS[2], max_tokens=40)
    long.stop = None
    fut = engine.submit(long)
    deadline = time.monotonic() + 30
    while engine.stats.decode_steps < 3 and not fut.done() and time.monotonic() < deadline:
        time.sleep(0.001)
    steps_before = engine.stats.decode_steps
    later = [req(q, max_tokens=4 + 5 * i) for i, q in enumerate(QUESTIONS[:4])]
    later[1].stop = ["\n\n"]
    futs = [engine.submit(r) for r in later]
    results = [f.result(timeout=60) for f in [fut, *futs]]
    assert engine.stats.decode_steps > steps_before
    assert max(r.batch_size for r in results[1:]) >= 2  # they decoded together, not one by one
    assert len({r.completion_tokens for r in results}) >= 3  # rows left the batch at different lengths
    for r, ref_req in zip(results, [long, *later]):
        assert_same(r, reference(engine, ref_req))


def test_threads_share_one_engine(engine):
    out: dict[int, object] = {}

    def call(i):
        out[i] = engine.generate([req(QUESTIONS[i], max_tokens=6 + i)])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, q in enumerate(QUESTIONS):
        assert_same(out[i], reference(engine, req(q, max_tokens=6 + i)))


def test_two_models_alternate_steps_of_one_trajectory():
    a, b = make_engine(1), make_engine(2)
    try:
        prefix, prompts, prefilled = "", [], []
        for k in range(6):
            e = (a, b)[k % 2]
            r = req(QUESTIONS[3], prefix=prefix or None, max_tokens=8)
            before = e.stats.prefill_tokens
            fast = e.generate([r])[0]
            prefilled.append(e.stats.prefill_tokens - before)
            prompts.append(fast.prompt_tokens)
            assert_same(fast, reference(e, r))
            prefix += fast.text + "\n\n"
        # from its second turn on, each model prefills only what was written since its last turn
        # (the other model's step and its own), never the question and preamble again
        for k in range(2, 6):
            assert prefilled[k] <= prompts[k] - prompts[k - 2] + 2, (k, prefilled, prompts)
            assert prefilled[k] < prompts[k] / 2
    finally:
        a.close()
        b.close()


def test_seeded_sampling_matches_the_static_path(engine):
    r = GenerationRequest(messages=msgs(QUESTIONS[4]), max_tokens=10, temperature=0.9, top_p=0.9, seed=7)
    ref = engine.generate_static([r])[0]
    assert engine.generate([r])[0].token_ids == ref.token_ids


def test_invalid_request_fails_alone(engine):
    good = req(QUESTIONS[0], max_tokens=3)
    bad = GenerationRequest(messages=msgs(QUESTIONS[0]), max_tokens=0)
    out = engine.generate_many([good, bad])
    assert isinstance(out[1], ValueError) and "max_tokens" in str(out[1])
    assert out[0].completion_tokens >= 1


def test_model_error_reaches_every_caller_and_the_engine_recovers():
    e = make_engine(3)
    real_forward = e.model.forward
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real_forward(*args, **kw)

    e.model.forward = flaky
    try:
        futs = [e.submit(req(q, max_tokens=6)) for q in QUESTIONS[:3]]
        errors = [f.exception(timeout=60) for f in futs]
        assert any(isinstance(x, RuntimeError) and "boom" in str(x) for x in errors)
        again = e.generate([req(QUESTIONS[0], max_tokens=5)])[0]  # the worker thread survived
        assert again.completion_tokens >= 1
    finally:
        e.close()


def test_cache_stays_within_its_bound_over_500_requests():
    limit_mb = 0.25
    e = make_engine(4, prefix_cache_mb=limit_mb)
    try:
        cache = e.scheduler.prefix_cache
        seen = 0
        for start in range(0, 500, 50):
            batch = [GenerationRequest(messages=msgs(f"Question {i}: what is {i} plus {i * 7}?"), max_tokens=3,
                                       temperature=0) for i in range(start, start + 50)]
            e.generate(batch)
            seen = max(seen, cache.bytes)
            assert cache.bytes <= limit_mb * 2**20
        assert e.stats.requests == 500
        assert cache.stats.evicted_tokens > 0 and seen > limit_mb * 2**20 / 2
        assert cache.stats.hits >= 490  # the shared preamble stayed cached throughout
    finally:
        e.close()


# ---------------------------------------------------------------- the radix tree on its own
def _kv(n: int, start: int = 0, layers: int = 2) -> list:
    cols = torch.arange(start, start + n, dtype=torch.float32).view(1, 1, n, 1)
    return [(cols.expand(1, 2, n, 3).clone() + 1000 * i, -cols.expand(1, 2, n, 3).clone()) for i in range(layers)]


def test_radix_tree_matches_splits_and_evicts_least_recent_leaves():
    one = _kv(1)
    per_token = kv_bytes(one)
    c = PrefixCache(max_bytes=10 * per_token)
    c.insert([1, 2, 3, 4], _kv(4))
    c.insert([1, 2, 7, 8, 9], _kv(5, start=100))  # diverges after 2 tokens: the node splits
    n, kv = c.match([1, 2, 3, 4, 5])
    assert n == 4 and torch.equal(kv[1][0][0, 0, :, 0], torch.tensor([1000.0, 1001, 1002, 1003]))
    n, kv = c.match([1, 2, 7, 8, 0])
    assert n == 4 and kv[0][0][0, 0, :, 0].tolist() == [0.0, 1.0, 102.0, 103.0]  # shared part stored once
    assert c.tokens == 2 + 2 + 3 and c.bytes == 7 * per_token
    assert c.match([1, 2, 3], limit=2)[0] == 2 and c.match([9])[0] == 0
    c.match([1, 2, 3])  # touch the [3, 4] branch: [7, 8, 9] is now the least recently used leaf
    c.insert([5, 6, 7, 8, 9], _kv(5, start=200))
    assert c.bytes <= 10 * per_token
    assert c.match([1, 2, 7, 8, 9])[0] == 2 and c.match([1, 2, 3, 4])[0] == 4
    c.insert(list(range(50, 70)), _kv(20))  # larger than the whole budget: not stored
    assert c.match(list(range(50, 70)))[0] == 0 and c.bytes <= 10 * per_token


def test_degenerate_sampling_settings_fail_nobody():
    e = make_engine(5)
    try:
        ok = [req(q, max_tokens=6) for q in QUESTIONS[:2]]
        odd = [GenerationRequest(messages=msgs(QUESTIONS[2]), max_tokens=6, temperature=1.0, top_p=0.0, seed=1),
               GenerationRequest(messages=msgs(QUESTIONS[3]), max_tokens=6, temperature=1e-40, seed=1)]
        bad = GenerationRequest(messages=msgs(QUESTIONS[4]), max_tokens=6, top_p=1.5)
        out = e.generate_many(ok + odd + [bad])
        for r, q in zip(out[:2], ok):
            assert_same(r, reference(e, q))
        greedy = [e.generate_static([GenerationRequest(messages=r.messages, max_tokens=6, temperature=0)])[0] for r in odd]
        assert [r.token_ids for r in out[2:4]] == [g.token_ids for g in greedy]  # both act as greedy
        assert isinstance(out[4], ValueError) and "top_p" in str(out[4])
    finally:
        e.close()


def test_a_cancelled_request_leaves_the_batch_and_callbacks_may_call_the_engine():
    import asyncio

    e = make_engine(6)
    try:
        seen = []
        long = GenerationRequest(messages=msgs(QUESTIONS[0]), max_tokens=400, temperature=0)

        async def go():
            task = asyncio.ensure_future(e.asubmit(long))
            while e.stats.decode_steps < 3:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        fut = e.submit(req(QUESTIONS[1], max_tokens=4))
        # a done-callback runs on the engine's thread: calling the engine from it must not deadlock
        fut.add_done_callback(lambda f: seen.append(e.generate_static([req(QUESTIONS[2], max_tokens=2)])[0]))
        fut.result(timeout=60)
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen and seen[0].completion_tokens >= 1
        assert e.stats.decode_steps < 200  # the cancelled row left the batch long before its 400 tokens
    finally:
        e.close()
    with pytest.raises(RuntimeError, match="closed"):
        e.submit(req(QUESTIONS[0]))
