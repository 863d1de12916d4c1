from __future__ import annotations

import json

import pytest

from roro_sdk import DatasetError, check_answer, extract_answer, load_dataset, load_jsonl


@pytest.mark.parametrize("text,expected", [
    ("so 3+4 = 7.\n\nAnswer: 7", "7"),
    ("The final answer is: $12.50$.", "12.50"),
    ("thus \\boxed{\\frac{3}{4}} done", "\\frac{3}{4}"),
    ("nested \\boxed{x^{2}+1}", "x^{2}+1"),
    ("Answer: **Yes**", "Yes"),
    ("we get 10 then 12 apples", "12"),
    ("Answer: (B)", "(B)"),
    ("no numbers here", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("pred,ref,ok", [
    ("7", "7", True), ("7.0", "7", True), ("1,234", "1234", True), ("$5", "5", True), ("50%", "50", True),
    ("3/4", "0.75", True), ("\\frac{3}{4}", "0.75", True), ("x = 7", "7", True), ("8", "7", False),
    ("yes", "Yes", True), ("true", "yes", True), ("no", "yes", False), ("(B)", "B", True), ("C", "B", False),
    (None, "7", False), ("7", None, False), ("1/3", "0.3333333", True),
])
def test_check_answer(pred, ref, ok):
    assert check_answer(pred, ref, rel_tol=1e-6) is ok


def test_gsm8k_and_math_formats(tmp_path):
    p = tmp_path / "gsm8k.jsonl"
    p.write_text(json.dumps({"question": "2+2?", "answer": "2+2=4\n#### 4"}) + "\n" + json.dumps({"question": "big", "answer": "... #### 1,000"}) + "\n")
    qs = load_jsonl(p)
    assert [q.answer for q in qs] == ["4", "1000"]
    m = tmp_path / "math.jsonl"
    m.write_text(json.dumps({"problem": "half?", "solution": "It is \\boxed{\\frac{1}{2}}.", "level": "Level 1"}) + "\n")
    (q,) = load_dataset(str(m))
    assert q.answer == "\\frac{1}{2}" and q.metadata["level"] == "Level 1"


@pytest.mark.parametrize("content,msg", [("{not json}\n", ":1: not valid JSON"), ("[1,2]\n", "JSON object"), ('{"answer": "3"}\n', "no question")])
def test_bad_dataset_lines_name_the_line(tmp_path, content, msg):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(DatasetError, match=msg):
        load_jsonl(p)


def test_bundled_sample_and_unknown_dataset():
    qs = load_dataset("sample", limit=5)
    assert len(qs) == 5 and all(q.answer for q in qs)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("nope")


def test_reasoning_gym_generator():
    pytest.importorskip("reasoning_gym")
    a = load_dataset("rg:basic_arithmetic", limit=3, seed=1)
    b = load_dataset("rg:basic_arithmetic", limit=3, seed=1)
    assert [q.question for q in a] == [q.question for q in b] and len(a) == 3
    assert a[0].source == "reasoning_gym:basic_arithmetic"
