"""Rubric, Rubricor and Judge: types, the local backends (tiny random models) and the LiteLLM
backends fuzzed against a local OpenAI-compatible server that returns garbage."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from roro_sdk.errors import ConfigError, OutputValidationError  # noqa: E402
from roro_sdk.judge import (  # noqa: E402
    FunctionJudge,
    JudgeResult,
    LiteLLMJudge,
    LocalJudge,
    judge_from_config,
    met_probabilities,
    render_trajectory,
)
from roro_sdk.rubric import (  # noqa: E402
    DEFAULT_CRITERIA,
    Criterion,
    LiteLLMRubricor,
    LocalRubricor,
    Rubric,
    StaticRubricor,
    FunctionRubricor,
    extract_json_object,
    parse_rubric_text,
    rubricor_from_config,
)
from roro_sdk.testing import FakeModel, FakeOpenAIServer  # noqa: E402
from roro_sdk.types import Query, Step, Trajectory  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _traj(tid: str, plan: list[tuple[str, str, str]], question: str = "[sim task t1] steps: E H E", correct=True) -> Trajectory:
    q = Query(id="q-" + question[:8], question=question, answer="42")
    steps = [Step(index=i, model=m, text=f"Step {i + 1} [{d}]: {v}", input_tokens=10, output_tokens=10,
                  cost_usd=1e-5 if m == "small" else 1e-4) for i, (m, d, v) in enumerate(plan)]
    return Trajectory(id=tid, query=q, router="test", steps=steps, answer="42", correct=correct, stop_reason="answer")


GOOD = _traj("good", [("small", "easy", "ok"), ("large", "hard", "ok"), ("small", "easy", "ok")])
BAD = _traj("bad", [("small", "easy", "ok"), ("small", "hard", "mistake"), ("small", "easy", "carried")], correct=False)
RUBRIC = Rubric(criteria=[
    Criterion(kind="hard_rule", text="Every hard step is written by the large model.", weight=2),
    Criterion(kind="principle", text="The total cost is low for the difficulty of the problem."),
])


# ----------------------------------------------------------------------------- types
def test_rubric_render_parse_roundtrip_and_aggregate():
    text = RUBRIC.render()
    assert text.splitlines()[0] == "1. [hard rule] (weight 2) Every hard step is written by the large model."
    back = parse_rubric_text(text)
    assert [c.model_dump() for c in back.criteria] == [c.model_dump() for c in RUBRIC.criteria]
    assert RUBRIC.aggregate([1.0, 0.0]) == pytest.approx(2 / 3)
    assert RUBRIC.aggregate([0.5, 1.0], hard_gate=True) == pytest.approx((2 * 0.5 + 1.0) / 3 * 0.5)
    with pytest.raises(ValueError):
        parse_rubric_text("no numbered lines here")
    with pytest.raises(ConfigError):
        RUBRIC.aggregate([0.5])


@pytest.mark.parametrize("text,ok", [
    ('```json\n{"a": {"b": "}"}}\n```', True),
    ("sure! {\"a\": 1} hope this helps", True),
    ("", False), ("   ", False), ("no json", False), ('{"a": [1, 2', False), ("{'a': 1}", False),
])
def test_extract_json_object(text, ok):
    if ok:
        assert isinstance(extract_json_object(text), dict)
    else:
        with pytest.raises(ValueError):
            extract_json_object(text)


def test_render_template_lists_models_costs_and_answer():
    text = render_trajectory(GOOD)
    assert text.startswith("Question: [sim task t1] steps: E H E")
    assert "Step 2 (large, $0.0001): Step 2 [hard]: ok" in text
    assert "Final answer: 42 (stop: answer)" in text
    assert "steps by model: small 2, large 1" in text
    assert "$" not in render_trajectory(GOOD, show_cost=False)


def test_function_judge_rules_and_static_rubricors():
    judge = FunctionJudge.from_rules({"hard step": lambda t: all(s.model == "large" for s in t.steps if "[hard]" in s.text)},
                                     default=0.5, step_fn=lambda s, t: 0.0 if "mistake" in s.text else 1.0)
    good, bad = judge.score(None, RUBRIC, GOOD), judge.score(None, RUBRIC, BAD)
    assert good.score == pytest.approx((2 * 1 + 0.5) / 3) and bad.score == pytest.approx(0.5 / 3)
    assert bad.step_scores == [1.0, 0.0, 1.0] and good.source == "function"
    assert StaticRubricor().rubric("q").criteria == list(DEFAULT_CRITERIA)
    r = FunctionRubricor(lambda q: "1. [hard rule] Be right.\n2. [principle] (weight 3) Be cheap.").rubric(Query(id="x", question="q"))
    assert r.query_id == "x" and r.criteria[1].weight == 3 and r.criteria[0].kind == "hard_rule"
    with pytest.raises(OutputValidationError):
        FunctionRubricor(lambda q: "garbage").rubric("q")


# ----------------------------------------------------------------------------- local backends
@pytest.fixture(scope="module")
def tiny():
    from roro_sdk.hf import tiny_model_and_tokenizer

    corpus = [render_trajectory(GOOD, step_marker="Step ok?"), render_trajectory(BAD)] + [c.text for c in DEFAULT_CRITERIA]
    return tiny_model_and_tokenizer(corpus, seed=0)


def _manual_p(model, tok, judge: LocalJudge, text: str) -> float:
    from roro_sdk.hf import token_logits

    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        yn = token_logits(model, ids, torch.ones_like(ids), [[ids.shape[1] - 1]], [judge.yes_ids, judge.no_ids])
    return float(torch.sigmoid(yn[0, 0] - yn[0, 1]))


def test_local_judge_separate_layout_equals_one_prompt_per_criterion(tiny):
    model, tok = tiny
    judge = LocalJudge(model, tok)
    res = judge.score(None, RUBRIC, GOOD)
    assert res.source == "logits" and len(res.criteria) == 2 and 0.0 <= res.score <= 1.0
    for c, v in zip(RUBRIC.criteria, res.criteria):
        text = f"{judge.instruction}\n{render_trajectory(GOOD)}\nCriterion [{c.tag}]: {c.text}\nMet?"
        assert v.p_met == pytest.approx(_manual_p(model, tok, judge, text), abs=1e-5)
    assert res.score == pytest.approx(RUBRIC.aggregate(res.p_met))


def test_local_judge_batched_equals_one_by_one_and_shared_layout(tiny):
    model, tok = tiny
    judge = LocalJudge(model, tok, step_scores=True, batch_size=3)
    items = [(None, RUBRIC, GOOD), (None, Rubric(criteria=list(DEFAULT_CRITERIA[:3])), BAD), (None, RUBRIC, BAD)] * 2
    batched = judge.score_many(items)
    single = [judge.score(*it) for it in items]
    for b, s in zip(batched, single):
        assert isinstance(b, JudgeResult)
        assert b.p_met == pytest.approx(s.p_met, abs=1e-5) and b.step_scores == pytest.approx(s.step_scores, abs=1e-5)
    assert len(batched[0].step_scores) == len(GOOD.steps)
    shared = LocalJudge(model, tok, layout="shared").score(None, RUBRIC, GOOD)
    c1 = RUBRIC.criteria[0]
    text = f"{judge.instruction}\n{render_trajectory(GOOD)}\nCriterion 1 [{c1.tag}]: {c1.text}\nMet?"
    assert shared.criteria[0].p_met == pytest.approx(_manual_p(model, tok, judge, text), abs=1e-5)


def test_local_judge_truncates_oldest_steps(tiny):
    model, tok = tiny
    long = _traj("long", [("small", "easy", "ok")] * 40)
    judge = LocalJudge(model, tok, max_length=120)
    item = judge._item(None, RUBRIC, long)
    assert len(item.prefix) + max(len(s) for s in item.suffixes) <= 120
    assert judge.score(None, RUBRIC, long).score >= 0.0
    with pytest.raises(ConfigError):
        LocalJudge(model, tok, max_length=10).score(None, RUBRIC, long)


def test_local_rubricor_library_mode(tiny):
    model, tok = tiny
    rub = LocalRubricor(model, tok, library=DEFAULT_CRITERIA)
    q = Query(id="q", question="What is 2+2?")
    greedy = rub.rubric(q)
    assert len(greedy) >= 1 and greedy.query_id == "q"
    assert all(c.text in {d.text for d in DEFAULT_CRITERIA} for c in greedy.criteria)
    with torch.no_grad():
        logits = rub.action_logits([q, "another question"])
    assert logits.shape == (2, len(DEFAULT_CRITERIA), 4)
    g = torch.Generator().manual_seed(0)
    samples = rub.sample([q], 5, generator=g, logits=logits[:1])
    acts = torch.tensor([[s.actions for s in samples[0]]])
    lp = LocalRubricor.log_prob(logits[:1], acts)
    manual = sum(float(torch.log_softmax(logits[0, c], -1)[a]) for c, a in enumerate(samples[0][0].actions))
    assert float(lp[0, 0]) == pytest.approx(manual, abs=1e-5)
    for s in samples[0]:
        if s.rubric is not None:
            assert len(s.rubric) == sum(1 for a in s.actions if a > 0)
            assert [c.weight for c in s.rubric.criteria] == [float(rub.weights[a - 1]) for a in s.actions if a > 0]
    many = rub.rubric_many([q, "x"])
    assert all(isinstance(r, Rubric) for r in many)


def test_local_backends_from_saved_folder_with_adapter(tiny, tmp_path):
    from roro_sdk.hf import add_lora, save_adapter, save_model, tiny_causal_lm

    model, tok = tiny
    base = tiny_causal_lm(tok, seed=3)
    save_model(base, tok, tmp_path / "base")
    peft_model = add_lora(tiny_causal_lm(tok, seed=3), r=4)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    save_adapter(peft_model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    want = LocalJudge(peft_model, tok).score(None, RUBRIC, GOOD).p_met
    judge = judge_from_config({"backend": "local", "model": str(tmp_path / "base"), "adapter": str(tmp_path / "adapter")})
    assert judge.score(None, RUBRIC, GOOD).p_met == pytest.approx(want, abs=1e-5)
    plain = LocalJudge.from_pretrained(str(tmp_path / "base")).score(None, RUBRIC, GOOD).p_met
    assert plain != pytest.approx(want, abs=1e-4)
    rub = rubricor_from_config({"backend": "local", "model": str(tmp_path / "base"),
                                "library": [c.model_dump() for c in DEFAULT_CRITERIA[:3]]})
    assert isinstance(rub, LocalRubricor) and len(rub.library) == 3


# ----------------------------------------------------------------------------- LiteLLM backends, fuzzed
def _attempt(body: dict) -> int:
    return (len(body["messages"]) - 2) // 2  # system + user, then (assistant, user) per re-ask


def _judge_json(n: int, met: list[bool] | None = None) -> str:
    met = met or [True] * n
    return json.dumps({"criteria": [{"id": i + 1, "explanation": "looks fine", "met": m} for i, m in enumerate(met)]})


GARBAGE = [
    "I think the routing was fine overall.",              # no JSON
    '{"criteria": [{"id": 1, "explanation": "ok", "met": tr',  # truncated
    '{"criteria": [{"id": "one", "explanation": 3, "met": "maybe"}]}',  # wrong types
    "",                                                    # empty text
    '{"criteria": [{"id": 2, "explanation": "x", "met": true}]}',  # wrong ids
    '{"verdict": "yes"}',                                  # wrong shape
    "\x00\x01garbage\ufffd}{",
]


def test_litellm_judge_reasks_until_valid_then_typed_error_per_item():
    def reply(body: dict) -> str:
        user = body["messages"][1]["content"]
        k = _attempt(body)
        if "ALWAYS_BAD" in user:
            return GARBAGE[k % len(GARBAGE)]
        if "TWO_BAD" in user:  # two malformed replies, then a good one
            return GARBAGE[k] if k < 2 else _judge_json(2, [True, False])
        return _judge_json(2, [True, False])

    with FakeOpenAIServer({"judge": FakeModel(reply=reply)}) as srv:
        judge = LiteLLMJudge(srv.spec("judge", price=(1.0, 2.0)), max_reasks=2, logprobs=False)
        ok = _traj("ok", [("small", "easy", "ok")], question="fine question")
        two = _traj("two", [("small", "easy", "ok")], question="TWO_BAD question")
        bad = _traj("bad", [("small", "easy", "ok")], question="ALWAYS_BAD question")
        out = judge.score_many([(None, RUBRIC, ok), (None, RUBRIC, bad), (None, RUBRIC, two)])
        assert isinstance(out[0], JudgeResult) and out[0].attempts == 1
        assert out[0].source == "verdict" and out[0].p_met == [1.0, 0.0]
        assert out[0].score == pytest.approx(2 / 3) and out[0].usage.cost_usd > 0
        assert isinstance(out[1], OutputValidationError) and out[1].attempts == 3
        assert isinstance(out[2], JudgeResult) and out[2].attempts == 3
        # bounded: 1 + 3 + 3 calls, and each re-ask carries the validation error back to the model
        assert srv.calls["judge"] == 7
        reasks = [r for r in srv.requests if "TWO_BAD" in r["messages"][1]["content"] and len(r["messages"]) > 2]
        assert "could not be used" in reasks[0]["messages"][-1]["content"]
        assert "no JSON object" in reasks[0]["messages"][-1]["content"]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_litellm_rubricor_fuzz_each_garbage_kind(garbage):
    good = json.dumps({"criteria": [{"text": "Hard steps go to the large model.", "kind": "hard_rule", "weight": 3},
                                    {"text": "Keep the cost low.", "kind": "principle", "weight": 1},
                                    {"text": "Recover after a mistake.", "kind": "principle", "weight": 2}]})

    def reply(body: dict) -> str:
        return garbage if _attempt(body) == 0 else good

    with FakeOpenAIServer({"r": FakeModel(reply=reply)}) as srv:
        rub = LiteLLMRubricor(srv.spec("r"), max_reasks=1)
        r = rub.rubric(Query(id="q7", question="What is 6*7?"))
        assert r.query_id == "q7" and [c.kind for c in r.criteria] == ["hard_rule", "principle", "principle"]
        assert srv.calls["r"] == 2
        with pytest.raises(OutputValidationError):
            LiteLLMRubricor(srv.spec("r"), max_reasks=0).rubric("What is 6*7?")


def test_litellm_rubricor_wrong_count_is_reasked_and_many_returns_errors():
    def reply(body: dict) -> str:
        if "BAD" in body["messages"][1]["content"]:
            return json.dumps({"criteria": [{"text": "only one", "kind": "principle"}]})
        return json.dumps({"criteria": [{"text": f"criterion {i}", "kind": "hard rule", "weight": 2} for i in range(3)]})

    with FakeOpenAIServer({"r": FakeModel(reply=reply)}) as srv:
        out = LiteLLMRubricor(srv.spec("r"), max_reasks=2).rubric_many(["fine", "BAD one", "also fine"])
        assert isinstance(out[0], Rubric) and isinstance(out[2], Rubric) and out[0].criteria[0].kind == "hard_rule"
        assert isinstance(out[1], OutputValidationError) and "between 3 and 8" in str(out[1])


def test_litellm_judge_probability_from_logprobs():
    text = '{"criteria": [{"id": 1, "explanation": "ok", "met": true}, {"id": 2, "explanation": "no", "met": false}]}'
    alts = {"true},": {"true},": 0.8, "false},": 0.2}, "false}]}": {"false}]}": 0.7, "true}]}": 0.3}}
    with FakeOpenAIServer({"j": FakeModel(reply=lambda b: text, alternatives=alts)}) as srv:
        res = LiteLLMJudge(srv.spec("j"), top_logprobs=5).score(None, RUBRIC, GOOD)
        assert res.source == "logprobs" and [c.source for c in res.criteria] == ["logprobs", "logprobs"]
        assert res.p_met == pytest.approx([0.8, 0.3])
        assert srv.requests[-1].get("logprobs") is True
    with FakeOpenAIServer({"j": FakeModel(reply=lambda b: text, logprobs=False)}) as srv:
        res = LiteLLMJudge(srv.spec("j")).score(None, RUBRIC, GOOD)
        assert res.source == "verdict" and res.p_met == [1.0, 0.0]


def test_met_probabilities_reads_split_tokens():
    class G:  # a real tokenizer splits '"met": true' into '":', ' true', ...
        def __init__(self, toks):
            self.raw = type("R", (), {"choices": [{"logprobs": {"content": toks}}]})()

    text = '{"criteria":[{"id":1,"met": true}]}'
    pieces = ['{"criteria":[{"id":1,"met', '":', " true", "}]}"]
    toks = [{"token": t, "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": -0.1}]} for t in pieces]
    toks[2]["top_logprobs"] = [{"token": " true", "logprob": -0.5}, {"token": " false", "logprob": -1.5}]
    p = met_probabilities(G(toks), text, 1)
    assert p == pytest.approx([1 / (1 + 2.718281828 ** -1.0)], abs=1e-6)
    assert met_probabilities(G(toks), text, 2) is None


def test_judge_step_scores_and_config_errors():
    steps_reply = json.dumps({"criteria": [{"id": 1, "explanation": "a", "met": True}, {"id": 2, "explanation": "b", "met": True}],
                              "step_scores": [1.0, 0.2, 0.9]})

    def reply(body: dict) -> str:
        return '{"criteria": []}' if _attempt(body) == 0 else steps_reply

    with FakeOpenAIServer({"j": FakeModel(reply=reply)}) as srv:
        res = LiteLLMJudge(srv.spec("j"), step_scores=True, logprobs=False).score(None, RUBRIC, GOOD)
        assert res.step_scores == [1.0, 0.2, 0.9] and res.attempts == 2
    with pytest.raises(ConfigError):
        judge_from_config({"backend": "nope"})
    with pytest.raises(ConfigError):
        rubricor_from_config({"backend": "litellm"})
    assert isinstance(judge_from_config({"backend": "litellm", "model": "openai/gpt-4o-mini"}), LiteLLMJudge)


def test_example_api_config_builds_both_backends():
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "configs" / "judge_openai.yaml").read_text())
    judge, rub = judge_from_config(cfg["judge"]), rubricor_from_config(cfg["rubricor"])
    assert isinstance(judge, LiteLLMJudge) and judge.logprobs and judge.pool[judge.model_name].api_key_env == "OPENAI_API_KEY"
    assert isinstance(rub, LiteLLMRubricor) and rub.max_reasks == 2


def test_the_split_modules_keep_the_old_import_paths():
    """Issue 17: the JSON re-ask loop (roro_sdk.structured) and trajectory rendering
    (roro_sdk.trajectory_text) are modules of their own; the old names still import."""
    from roro_sdk import judge, rubric, structured, trajectory_text

    for name in ("ask_structured", "extract_json_object", "as_model_pool", "spent_of", "usage_delta", "MAX_JSON_DEPTH",
                 "MAX_JSON_CHARS", "REASK"):
        assert getattr(rubric, name) is getattr(structured, name), name
    for name in ("render_trajectory", "render_trajectory_pieces"):
        assert getattr(judge, name) is getattr(trajectory_text, name), name
    assert structured.field_of({"a": 1}, "a") == 1 and structured.field_of(object(), "a") is None
