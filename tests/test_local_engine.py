"""Tests of the ``roro_local`` LiteLLM provider on tiny models built on the fly (offline, fast).

Two kinds of tiny model:
* a randomly initialised Qwen2 (hidden 64, 2 layers) with a byte-level BPE tokenizer trained on a
  few sentences and a ChatML chat template -- the real transformers path (batching, padding,
  prefix mode, usage, logprobs);
* a *scripted* model whose next token is fixed by how many tokens it has generated, with known
  logits -- exact checks of the step delimiter, finish reasons, token counts and logprob values.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

torch = pytest.importorskip("torch")
litellm = pytest.importorskip("litellm")

from roro_sdk.local import (  # noqa: E402
    clear_local_engines,
    find_stop,
    get_local_engine,
    register_local_model,
    register_local_provider,
)
from roro_sdk.local.prompting import render_plain, render_prompt  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Tom has three boxes of apples.\n\nEach box holds four apples.",
    "First we multiply the numbers.\n\nThen we subtract two.\n\nAnswer: 10",
    "The quick brown fox jumps over the lazy dog.",
    "Step one: read the question carefully. Step two: compute the answer.",
    "Hello world! Numbers 0 1 2 3 4 5 6 7 8 9 + - * / = ?",
] * 5


def build_tokenizer(chat_template: str | None = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from roro_sdk.hf import save_model, tiny_causal_lm

    folder = tmp_path_factory.mktemp("tiny-qwen")
    tok = build_tokenizer()  # byte-level BPE with a ChatML template: the engine's real tokenizer kind
    return save_model(tiny_causal_lm(tok, num_kv_heads=2, max_positions=512, init_std=0.2), tok, folder)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    register_local_provider()
    register_local_model("tiny-qwen", tiny_dir, dtype="float32", batch_window_ms=20)
    yield "roro_local/tiny-qwen"
    clear_local_engines()


MSGS = [
    [{"role": "user", "content": "Tom has three boxes of apples."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world!"}],
    [{"role": "user", "content": "Each box holds four apples. Answer: ?"}],
    [{"role": "user", "content": "Step one: read the question carefully and then compute the answer."}],
]


class ScriptedLM(torch.nn.Module):
    """Emits ``script[k]`` as the k-th generated token of every row, with known logits: the
    scripted token gets 2.0, token ``alt`` gets 1.0 (or 0.0 if it is the scripted one), the rest
    -1e4. Its log-prob is therefore exactly ``-log(1 + e^-1)``."""

    def __init__(self, script: list[int], vocab: int, alt: int):
        from transformers import Qwen2Config

        super().__init__()
        self.config = Qwen2Config(vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                  num_key_value_heads=1, max_position_embeddings=256)
        self.script, self.vocab, self.alt = script, vocab, alt
        self.calls = 0
        self._width0 = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True, logits_to_keep=0):
        # a plain module keeps no KV cache, so the engine runs it through its static path
        self.calls += 1
        if input_ids.shape[1] > 1:  # prefill
            self._width0 = attention_mask.shape[1]
        k = attention_mask.shape[1] - self._width0
        tid = self.script[min(k, len(self.script) - 1)]
        logits = torch.full((input_ids.shape[0], 1, self.vocab), -1e4)
        logits[:, :, self.alt] = 1.0
        logits[:, :, tid] = 2.0
        from types import SimpleNamespace

        return SimpleNamespace(logits=logits)


SCRIPT_LP = -math.log(1 + math.exp(-1))


def scripted(name: str, pieces: list[str], *, eos_at_end: bool = False):
    """Register ``name`` as a scripted model that writes ``pieces`` (each one token) and return it."""
    tok = build_tokenizer()
    ids = []
    for p in pieces:
        enc = tok(p, add_special_tokens=False)["input_ids"]
        assert len(enc) == 1, (p, enc)
        ids.append(enc[0])
    if eos_at_end:
        ids.append(tok.eos_token_id)
    alt = tok("Z", add_special_tokens=False)["input_ids"][0]
    model = ScriptedLM(ids, len(tok), alt)
    register_local_provider()
    register_local_model(name, lambda: (model, tok))
    return model


# ---------------------------------------------------------------- the stop logic as a pure function
@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("First step.\n\nSecond", ["\n\n"], "First step."),
        ("\n\nFirst step.\n\nSecond", ["\n\n"], "\n\nFirst step."),  # leading newlines never stop
        ("\n \n  First step.  \n \t\nSecond", ["\n\n"], "\n \n  First step."),  # blank line with spaces
        ("First step.\nstill the same step", ["\n\n"], None),
        ("\n\n\n", ["\n\n"], None),
        ("a\n\nb", None, None),
        ("a\n\nb", [], None),
        ("x = 1; END y", ["END"], "x = 1; "),  # other stops: literal, not stripped
        ("one END two\n\nthree", ["\n\n", "END"], "one "),  # earliest stop wins
        ("one\n\ntwo END", ["END", "\n\n"], "one"),
        ("no stop here", ["\n\n", "###"], None),
    ],
)
def test_find_stop(text, stops, expected):
    match = find_stop(text, stops)
    assert (match.content if match else None) == expected


# ---------------------------------------------------------------- prompt rendering
def test_prefix_and_chat_rendering():
    tok = build_tokenizer()
    chat = [{"role": "user", "content": "Q?"}]
    text, prefix, templated = render_prompt(tok, chat)
    assert (prefix, templated) and text.endswith("<|im_start|>assistant\n")
    text, prefix, _ = render_prompt(tok, chat + [{"role": "assistant", "content": "Step 1.\n\n"}])
    assert prefix and text.endswith("<|im_start|>assistant\nStep 1.\n\n")


def test_plain_rendering_without_chat_template():
    tok = build_tokenizer(chat_template=None)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    text, prefix, templated = render_prompt(tok, msgs)
    assert (prefix, templated) == (False, False)
    assert text == "### System\nS\n\n### User\nQ?\n\n### Assistant\n"
    text, prefix, _ = render_prompt(tok, [*msgs, {"role": "assistant", "content": "We add."}])
    assert prefix and text == render_plain([*msgs, {"role": "assistant", "content": "We add."}], True)
    assert text.endswith("### Assistant\nWe add.")
    # content parts are joined
    text, _, _ = render_prompt(tok, [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert "### User\nab\n\n" in text


# ---------------------------------------------------------------- scripted model: exact semantics
def _content(r):
    return r.choices[0].message.content


def test_step_stop_counts_and_logprobs():
    scripted("scripted-step", ["\n", "\n", "H", "i", "\n", "\n", "X", "Y"])
    r = litellm.completion(
        model="roro_local/scripted-step", messages=[{"role": "user", "content": "go"}],
        max_tokens=20, temperature=0, stop=["\n\n"], logprobs=True, top_logprobs=2,
    )
    # leading blank line kept, the delimiter after "Hi" cut; 6 tokens were generated to see it
    assert _content(r) == "\n\nHi"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 6
    tok = get_local_engine("scripted-step").tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "go"}], add_generation_prompt=True, tokenize=False)
    assert r.usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + 6
    lps = r.choices[0].logprobs.content  # only the tokens of the returned text
    assert [e.token for e in lps] == ["\n", "\n", "H", "i"]
    for e in lps:
        assert e.logprob == pytest.approx(SCRIPT_LP, abs=1e-5)
        assert [t.token for t in e.top_logprobs] == [e.token, "Z"]
        assert e.top_logprobs[1].logprob == pytest.approx(SCRIPT_LP - 1, abs=1e-5)


def test_length_other_stops_and_eos():
    scripted("scripted-len", ["a", "b", "\n", "\n", "c", "d", "e"])
    msgs = [{"role": "user", "content": "go"}]
    r = litellm.completion(model="roro_local/scripted-len", messages=msgs, max_tokens=3, temperature=0)
    assert (_content(r), r.choices[0].finish_reason, r.usage.completion_tokens) == ("ab\n", "length", 3)
    assert getattr(r.choices[0], "logprobs", None) is None  # not requested: litellm omits the field
    # without "\n\n" in stop, blank lines are ordinary text; "d" is a literal stop
    r = litellm.completion(model="roro_local/scripted-len", messages=msgs, max_tokens=10, temperature=0, stop=["d"])
    assert (_content(r), r.choices[0].finish_reason, r.usage.completion_tokens) == ("ab\n\nc", "stop", 6)

    scripted("scripted-eos", ["o", "k"], eos_at_end=True)
    r = litellm.completion(model="roro_local/scripted-eos", messages=msgs, max_tokens=10, temperature=0,
                           stop=["\n\n"], logprobs=True)
    assert (_content(r), r.choices[0].finish_reason, r.usage.completion_tokens) == ("ok", "stop", 3)
    assert [e.token for e in r.choices[0].logprobs.content] == ["o", "k"]  # EOS not listed


def test_finished_rows_stop_growing_in_a_batch():
    """Rows with different limits share one batch; each stops on its own."""
    model = scripted("scripted-batch", ["a", "b", "\n", "\n", "c", "d", "e", "f"])

    async def go():
        msgs = [{"role": "user", "content": "go"}]
        return await asyncio.gather(
            litellm.acompletion(model="roro_local/scripted-batch", messages=msgs, max_tokens=8, temperature=0, stop=["\n\n"]),
            litellm.acompletion(model="roro_local/scripted-batch", messages=msgs, max_tokens=1, temperature=0),
            litellm.acompletion(model="roro_local/scripted-batch", messages=msgs, max_tokens=8, temperature=0),
        )

    model.calls = 0
    a, b, c = asyncio.run(go())
    assert list(get_local_engine("scripted-batch").batch_sizes) == [3]
    assert (_content(a), a.usage.completion_tokens) == ("ab", 4)
    assert (_content(b), b.usage.completion_tokens, b.choices[0].finish_reason) == ("a", 1, "length")
    assert (_content(c), c.usage.completion_tokens) == ("ab\n\ncdef", 8)
    assert model.calls == 8  # 1 prefill + 7 decode steps: the batch ran once


# ---------------------------------------------------------------- tiny random Qwen2 through LiteLLM
def test_sync_completion_content_usage_logprobs(tiny):
    msgs = MSGS[0]
    r = litellm.completion(model=tiny, messages=msgs, max_tokens=7, temperature=0, logprobs=True, top_logprobs=3)
    assert isinstance(_content(r), str)
    engine = get_local_engine("tiny-qwen")
    assert r.usage.prompt_tokens == len(engine.encode(msgs)[0])
    ch = r.choices[0]
    if ch.finish_reason == "length":
        assert r.usage.completion_tokens == 7
    assert 1 <= r.usage.completion_tokens <= 7
    lps = ch.logprobs.content
    assert 1 <= len(lps) <= r.usage.completion_tokens
    assert "".join(e.token for e in lps) == _content(r) or ch.finish_reason == "stop"
    for e in lps:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
        assert e.top_logprobs[0].logprob >= e.logprob - 1e-6  # greedy: chosen token is the top one
    assert r._hidden_params["roro_local"]["prefix_mode"] is False


def test_batched_equals_one_by_one_under_greedy(tiny):
    engine = get_local_engine("tiny-qwen")
    singles = [
        litellm.completion(model=tiny, messages=m, max_tokens=6 + 2 * i, temperature=0) for i, m in enumerate(MSGS)
    ]
    calls_before = engine.generate_calls

    async def go():
        return await asyncio.gather(*[
            litellm.acompletion(model=tiny, messages=m, max_tokens=6 + 2 * i, temperature=0) for i, m in enumerate(MSGS)
        ])

    batched = asyncio.run(go())
    assert engine.generate_calls - calls_before < len(MSGS)  # collected into fewer batched runs
    assert max(r._hidden_params["roro_local"]["batch_size"] for r in batched) > 1
    for s, b in zip(singles, batched):
        assert _content(b) == _content(s)
        assert b.usage.completion_tokens == s.usage.completion_tokens
        assert b.usage.prompt_tokens == s.usage.prompt_tokens
        assert b._hidden_params["roro_local"]["token_ids"] == s._hidden_params["roro_local"]["token_ids"]


def test_prefix_mode_continues_the_assistant_text(tiny):
    engine = get_local_engine("tiny-qwen")
    prefix = "First we multiply the numbers.\n\n"
    msgs = [*MSGS[0], {"role": "assistant", "content": prefix}]
    r = litellm.completion(model=tiny, messages=msgs, max_tokens=5, temperature=0)
    assert r._hidden_params["roro_local"]["prefix_mode"] is True
    ids, prefix_mode = engine.encode(msgs)
    assert prefix_mode and engine.tokenizer.decode(ids).endswith("<|im_start|>assistant\n" + prefix)
    assert r.usage.prompt_tokens == len(ids)
    # the continuation is what the model writes after the prefix, nothing of the prefix itself
    raw = engine.tokenizer.decode(r._hidden_params["roro_local"]["token_ids"], skip_special_tokens=True)
    assert raw.startswith(_content(r))
    assert not _content(r).startswith(prefix)


def test_seeded_sampling_is_reproducible(tiny):
    kw = dict(model=tiny, messages=MSGS[1], max_tokens=8, temperature=0.9, top_p=0.95)
    a = litellm.completion(seed=7, **kw)
    b = litellm.completion(seed=7, **kw)
    assert a._hidden_params["roro_local"]["token_ids"] == b._hidden_params["roro_local"]["token_ids"]
    outs = {tuple(litellm.completion(seed=s, **kw)._hidden_params["roro_local"]["token_ids"]) for s in range(5)}
    assert len(outs) > 1  # different seeds, different samples


def test_event_loop_is_not_blocked(tiny):
    async def go():
        ticks = 0
        done = False

        async def heartbeat():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.002)

        hb = asyncio.create_task(heartbeat())
        t0 = time.monotonic()
        await asyncio.gather(*[litellm.acompletion(model=tiny, messages=m, max_tokens=40, temperature=0) for m in MSGS])
        elapsed = time.monotonic() - t0
        done = True
        await hb
        return ticks, elapsed

    ticks, elapsed = asyncio.run(go())
    assert ticks >= max(3, int(elapsed / 0.002 * 0.1))


def test_unknown_model_is_a_clear_not_found_error():
    register_local_provider()
    with pytest.raises(litellm.NotFoundError, match="unknown local model 'no-such-model'"):
        litellm.completion(model="roro_local/no-such-model", messages=MSGS[0], max_tokens=3)
    with pytest.raises(litellm.NotFoundError, match="unknown local model"):
        asyncio.run(litellm.acompletion(model="roro_local/no-such-model", messages=MSGS[0], max_tokens=3))


def test_bad_request_is_a_400(tiny):
    with pytest.raises(litellm.BadRequestError, match="n=1"):
        litellm.completion(model=tiny, messages=MSGS[0], max_tokens=3, n=2)


def test_register_local_provider_is_idempotent():
    h1 = register_local_provider()
    h2 = register_local_provider()
    assert h1 is h2
    assert sum(1 for item in litellm.custom_provider_map if item["provider"] == "roro_local") == 1
    assert "roro_local" in litellm._custom_providers


def test_no_chat_template_falls_back_to_plain_rendering():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(chat_template=None)
    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))
    register_local_provider()
    register_local_model("tiny-plain", lambda: (model, tok))
    msgs = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "We add"}]
    r = litellm.completion(model="roro_local/tiny-plain", messages=msgs, max_tokens=4, temperature=0)
    expected = tok(render_plain(msgs, True), add_special_tokens=True)["input_ids"]
    assert r.usage.prompt_tokens == len(expected)
    assert r._hidden_params["roro_local"]["prefix_mode"] is True


def test_one_bad_request_does_not_fail_its_batch(tiny):
    too_long = [{"role": "user", "content": "apples " * 600}]  # the tiny model takes 512 positions

    async def go():
        return await asyncio.gather(
            litellm.acompletion(model=tiny, messages=MSGS[0], max_tokens=4, temperature=0),
            litellm.acompletion(model=tiny, messages=too_long, max_tokens=4, temperature=0),
            return_exceptions=True,
        )

    ok, bad = asyncio.run(go())
    assert ok.usage.completion_tokens >= 1
    assert isinstance(bad, litellm.BadRequestError) and "takes at most 512" in str(bad)


def test_streaming_is_refused_as_a_bad_request(tiny):
    with pytest.raises(litellm.BadRequestError, match="streaming is not supported"):
        for _ in litellm.completion(model=tiny, messages=MSGS[0], max_tokens=3, stream=True):
            pass


def test_a_model_loads_once_and_says_so_in_one_line(tiny_dir, caplog):
    from transformers.utils import logging as hf_logging

    register_local_model("tiny-once", tiny_dir, dtype="float32")
    hf_logging.enable_progress_bar()
    with caplog.at_level("INFO", logger="roro_sdk.local"):
        first = get_local_engine("tiny-once")
        assert get_local_engine("tiny-once") is first  # shared, not loaded again
    lines = [r.getMessage() for r in caplog.records if r.name == "roro_sdk.local"]
    assert len(lines) == 1 and lines[0].startswith("loaded tiny-once (float32) in "), lines
    assert hf_logging.is_progress_bar_enabled()  # the bars were off only while loading
