"""Issue 9, the command line and the files it reads and writes: nothing a user types or points at
crashes with a traceback or silently does something else, and no written result is lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from roro_sdk import StepwiseRuntime
from roro_sdk.cli import main
from roro_sdk.collect import collect, existing_ids, repair_torn_tail
from roro_sdk.errors import ConfigError, DatasetError, RouterError
from roro_sdk.eval import EvalResults, evaluate
from roro_sdk.prompts import PromptTemplate
from roro_sdk.routers import make_router
from roro_sdk.sim import SimConfig, sim_pool, sim_queries
from roro_sdk.tasks import load_dataset, load_jsonl, sample_queries

BINARY = b"\xff\xfe\x00binary\x80\x81"


def _lines(p: Path) -> list[str]:
    return [line for line in p.read_text().splitlines() if line.strip()]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("roro: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----- 1. data lost ---------------------------------------------------------------------------

def test_collect_keeps_a_complete_last_line_without_newline(tmp_path):
    out = tmp_path / "t.jsonl"
    pool, qs = sim_pool(SimConfig.careful()), sim_queries(n=3, config=SimConfig.careful())
    collect(qs, pool, ["all-small"], out=out, progress=False)
    whole = out.read_bytes()
    out.write_bytes(whole.rstrip(b"\n"))  # an editor or another tool dropped the final newline
    ids, _ = existing_ids(out)
    assert len(ids) == 3 and out.read_bytes() == whole  # kept, newline restored
    again = collect(qs, pool, ["all-small"], out=out, progress=False)
    assert again.existing == 3 and again.written == 0 and len(_lines(out)) == 3


def test_roro_collect_keeps_a_complete_last_line_without_newline(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    argv = ["collect", "--dataset", "sim:careful", "--limit", "2", "--policies", "all-small", "--out", str(out), "-q"]
    assert main(argv) == 0
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    assert main(argv) == 0
    assert "0 written, 2 already in" in capsys.readouterr().out and len(_lines(out)) == 2


def test_a_torn_tail_is_moved_aside_not_deleted(tmp_path):
    out = tmp_path / "t.jsonl"
    collect(sim_queries(n=2), sim_pool(), ["all-small"], out=out, progress=False)
    good = out.read_bytes()
    torn = b'{"id": "torn", "query": {"que'
    out.write_bytes(good + torn)
    with pytest.warns(UserWarning, match="t.jsonl.torn"):
        assert repair_torn_tail(out) == len(torn)
    assert out.read_bytes() == good and (tmp_path / "t.jsonl.torn").read_bytes() == torn + b"\n"


def test_appending_never_glues_a_line_to_a_torn_tail(tmp_path):
    from roro_sdk.trajectories import TrajectoryAppender, read_trajectories, write_trajectories

    out = tmp_path / "t.jsonl"
    trajs = StepwiseRuntime(sim_pool(), make_router("all-small")).run_many(sim_queries(n=2))
    write_trajectories(out, trajs[:1])
    out.write_bytes(out.read_bytes() + b'{"id": "half')
    with pytest.warns(UserWarning, match="torn"):
        write_trajectories(out, trajs[1:])
    out.write_bytes(out.read_bytes() + b'{"id": "half')
    with pytest.warns(UserWarning, match="torn"), TrajectoryAppender(out) as w:
        w.write(trajs[0])
    assert [t.id for t in read_trajectories(out)] == [trajs[0].id, trajs[1].id, trajs[0].id]
    out.write_bytes(out.read_bytes() + b'{"id": "half')
    with pytest.warns(UserWarning, match="torn"):  # the runtime's own out= path too
        StepwiseRuntime(sim_pool(), make_router("all-small")).run_many(sim_queries(n=1), out=out)
    assert len(read_trajectories(out)) == 4


def test_a_collection_file_that_is_not_one_is_refused_unchanged(tmp_path):
    out = tmp_path / "data.jsonl"
    out.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}')
    with pytest.raises(DatasetError, match="not a valid trajectory"):
        existing_ids(out)
    assert out.read_text().endswith('"4"}')


def _record_file_lines_at_call(monkeypatch, out: Path, at: int) -> list[int]:
    """Before the ``at``-th query starts, note how many lines ``out`` holds."""
    seen: list[int] = []
    calls = {"n": 0}
    real = StepwiseRuntime.arun

    async def arun(self, query, **kw):
        calls["n"] += 1
        if calls["n"] == at:
            seen.append(len(_lines(out)) if out.exists() else 0)
        return await real(self, query, **kw)

    monkeypatch.setattr(StepwiseRuntime, "arun", arun)
    return seen


def test_roro_eval_out_appends_each_trajectory_as_it_finishes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs.jsonl"
    seen = _record_file_lines_at_call(monkeypatch, out, at=4)
    assert main(["eval", "--dataset", "sim", "--limit", "5", "--router", "all-small", "--concurrency", "1",
                 "--out", str(out), "-q"]) == 0
    assert seen == [3]  # a kill now would keep the three finished ones
    assert len(_lines(out)) == 5


def test_evaluate_trajectories_out_appends_each_trajectory_as_it_finishes(tmp_path, monkeypatch):
    out = tmp_path / "runs.jsonl"
    seen = _record_file_lines_at_call(monkeypatch, out, at=3)
    res = evaluate(sim_pool(), sim_queries(n=4), ["all-small"], references=False, concurrency=1, bootstrap=10,
                   trajectories_out=out)
    assert seen == [2] and len(_lines(out)) == 4
    assert {json.loads(line)["metadata"]["eval_label"] for line in _lines(out)} == {res.runs[0].label}


def test_roro_eval_never_replaces_an_existing_out_file_silently(tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    base = ["eval", "--dataset", "sim", "--limit", "2", "--router", "all-small", "--out", str(out), "-q"]
    assert main(base) == 0
    first = out.read_text()
    assert main(base) == 2
    assert "--append" in _one_line_error(capsys) and out.read_text() == first
    assert main(base + ["--append"]) == 0 and len(_lines(out)) == 4
    assert main(base + ["--overwrite"]) == 0 and len(_lines(out)) == 2
    assert main(base + ["--append", "--overwrite"]) == 2


# ----- 2. bad input: one line, exit 2 -----------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    f = {
        "bin_yaml": tmp_path / "bin.yaml", "bin_jsonl": tmp_path / "bin.jsonl", "list_yaml": tmp_path / "list.yaml",
        "oops": tmp_path / "oops.yaml", "unpriced_str": tmp_path / "unpriced.yaml", "empty": tmp_path / "empty.jsonl",
        "simple": tmp_path / "simple.jsonl", "dir": tmp_path / "adir",
    }
    f["bin_yaml"].write_bytes(BINARY)
    f["bin_jsonl"].write_bytes(BINARY)
    f["list_yaml"].write_text("- a\n- b\n")
    f["oops"].write_text("models:\n  - {name: small, model: openai/x, input_price_per_m: 0, output_price_per_m: 0}\n"
                         "prompt:\n  chat_instruction: 'Steps so far: {oops}'\n")
    f["unpriced_str"].write_text('models:\n  - {name: small, model: openai/x}\nallow_unpriced: "false"\n')
    f["empty"].write_text("")
    f["simple"].write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    f["dir"].mkdir()
    f["training_list"] = tmp_path / "training_list.yaml"
    f["training_list"].write_text("training: [1]\n")
    return {k: str(v) for k, v in f.items()}


BAD_INPUTS = [
    (["models", "--pool", "{bin_yaml}"], "pool file {bin_yaml} is not UTF-8 text"),
    (["models", "--pool", "{dir}"], "is a folder"),
    (["models", "--pool", "{list_yaml}"], "expected a mapping"),
    (["models", "--pool", "{oops}"], "unknown placeholder(s) ['oops']"),
    (["models", "--pool", "{unpriced_str}"], "allow_unpriced must be true or false"),
    (["models", "--pool", ""], "--pool is empty"),
    (["eval", "--pool", "sim", "--dataset", "{bin_jsonl}"], "dataset file {bin_jsonl} is not UTF-8 text"),
    (["eval", "--pool", "sim", "--dataset", "{dir}"], "is a folder"),
    (["train-judge", "--trajectories", "{empty}", "--pairs", "{bin_jsonl}", "--out", "{dir}/j", "--tiny"],
     "pairs file {bin_jsonl} is not UTF-8 text"),
    (["pairs", "--trajectories", "{empty}", "--out", "{dir}/p.jsonl", "--process", "judge:{bin_yaml}"],
     "config file {bin_yaml} is not UTF-8 text"),
    (["pairs", "--trajectories", "{empty}", "--out", "{dir}/p.jsonl", "--process", "judge:{list_yaml}"],
     "top level must be a mapping"),
    (["train-router", "--config", "{bin_yaml}", "--out", "{dir}/r"], "training config {bin_yaml} is not UTF-8 text"),
    (["train-router", "--config", "{list_yaml}", "--out", "{dir}/r"], "top level must be a mapping"),
    (["run", "q", "--pool", "sim", "--router", ""], "names no router"),
    (["run", "q", "--pool", "sim", "--router", ","], "names no router"),
    (["run", "q", "--pool", "sim", "--router", "all-small,all-large"], "takes one router"),
    (["run", "q", "--pool", "sim", "--router", "trim:nan"], "within [0, 1]"),
    (["run", "q", "--pool", "sim", "--router", "query:-5"], "within [0, 1]"),
    (["run", "q", "--pool", "sim", "--router", "policy:{dir}/missing"], "policy folder {dir}/missing does not exist"),
    (["eval", "--dataset", "sim", "--limit", "-1"], "limit must be a positive integer"),
    (["eval", "--dataset", "sim", "--limit", "0"], "limit must be a positive integer"),
    (["eval", "--pool", "sim", "--dataset", "sample", "--limit", "0"], "limit must be a positive integer"),
    (["eval", "--pool", "sim", "--dataset", "sample", "--limit", "-1"], "limit must be a positive integer"),
    (["eval", "--dataset", "sim", "--limit", "2", "--random-seeds", "-2"], "random_seeds must be"),
    (["eval", "--dataset", "sim", "--limit", "2", "--sweep", "trim:nan"], "finite"),
    (["eval", "--dataset", "sim", "--limit", "2", "--bootstrap", "0", "--report", "{dir}/rep"], "bootstrap must be"),
    (["eval", "--dataset", "sim", "--limit", "2", "--out", "{dir}"], "is a folder"),
    (["eval", "--dataset", "sim", "--limit", "2", "--summary-json", "{dir}"], "is a folder"),
    (["eval", "--dataset", "sim", "--limit", "2", "--report", "{bin_yaml}"], "is a file"),
    (["eval", "--dataset", "sim", "--limit", "2", "--cache", "{bin_yaml}"], "not a cache"),
    (["report", "{bin_yaml}"], "is not UTF-8 text"),
    (["cache", "stats", "--path", "{bin_yaml}"], "not a cache"),
    (["collect", "--dataset", "sim", "--limit", "2", "--out", "{dir}"], "is a folder"),
    (["collect", "--dataset", "sim", "--limit", "-1", "--out", "{dir}/c.jsonl"], "limit must be a positive integer"),
    (["collect", "--dataset", "sim", "--limit", "2", "--out", "{dir}/c.jsonl", "--policies", "steer:nan"], "within"),
    (["collect", "--dataset", "sim", "--limit", "2", "--out", ""], "path (out) is empty"),
    (["eval", "--dataset", "sim", "--limit", "2", "--out", ""], "path is empty"),
    (["eval", "--dataset", "sim", "--limit", "2", "--summary-json", ""], "path is empty"),
    (["eval", "--dataset", "sim", "--limit", "2", "--report", ""], "path is empty"),
    (["eval", "--dataset", "sim", "--limit", "2", "--append"], "need --out"),
    (["eval", "--dataset", "sim:p_hard=nan", "--limit", "2"], "invalid sim config: SimConfig field 'p_hard': Input should be less than or equal to 1"),
    (["eval", "--dataset", "sim:min_steps=5,max_steps=2", "--limit", "2"], "min_steps (5) must not exceed max_steps (2)"),
    (["run", "q", "--pool", "sim", "--token-budget", "0"], "token_budget must be at least 1"),
    (["pairs", "--trajectories", "{empty}", "--out", "{dir}/p.jsonl", "--kinds", ""], "names no pair kind"),
    (["train-judge", "--trajectories", "{empty}", "--pairs", "{empty}", "--out", "{dir}/j2", "--tiny",
      "--config", "{training_list}"], "'training:' must be a mapping"),
]


@pytest.mark.parametrize("argv,msg", BAD_INPUTS, ids=[" ".join(a)[:60] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(argv, msg, files, capsys):
    assert main([a.format(**files) for a in argv]) == 2
    assert msg.format(**files) in _one_line_error(capsys)


def test_a_jsonl_path_is_a_dataset_file_never_a_sim_spec(files, tmp_path, capsys):
    assert [q.question for q in load_dataset(files["simple"])] == ["What is 1+1?"]
    with pytest.raises(DatasetError, match="dataset file not found: simple.jsonl"):
        load_dataset("simple.jsonl")  # a missing file is reported as one, not as "not a sim spec"
    assert main(["eval", "--dataset", "simple.jsonl", "--pool", "sim"]) == 2
    assert "dataset file not found" in _one_line_error(capsys)


def test_limit_means_the_same_for_every_dataset(files):
    for spec in ("sample", "sim", files["simple"]):
        for bad in (0, -1, 1.5, True):
            with pytest.raises(DatasetError, match="limit must be a positive integer"):
                load_dataset(spec, limit=bad)
    assert len(load_dataset("sample", limit=3)) == len(load_dataset("sim", limit=3)) == 3
    assert len(load_dataset("sample")) == len(sample_queries()) == 20  # None: all of the sample
    assert len(load_dataset("sim")) == 20  # None: 20 of a generator
    with pytest.raises(DatasetError):
        load_jsonl(files["simple"], limit=0)


def test_allow_unpriced_reads_booleans_not_truthiness(tmp_path):
    from roro_sdk._files import parse_bool
    from roro_sdk.pool import ModelPool

    model = {"name": "small", "model": "openai/x"}
    for text in ("false", "False", "yes please", 1):
        with pytest.raises(ConfigError, match="allow_unpriced must be true or false"):
            ModelPool.from_dict({"models": [model], "allow_unpriced": text})
    assert ModelPool.from_dict({"models": [model], "allow_unpriced": True}).allow_unpriced is True
    with pytest.raises(ConfigError, match="no price"):
        ModelPool.from_dict({"models": [model], "allow_unpriced": False})
    assert parse_bool(False, field="x") is False
    with pytest.raises(ConfigError, match="unquoted"):
        parse_bool("true", field="x")


@pytest.mark.parametrize("template,msg", [
    ("Steps: {oops}", "unknown placeholder"), ("Steps: {steps} {}", "unknown placeholder"),
    ("Steps: {", "not a valid template"), ("no steps here", "must contain {steps}"),
])
def test_prompt_templates_are_checked_when_loaded(template, msg):
    with pytest.raises(ValueError, match=msg):
        PromptTemplate(chat_instruction=template)
    assert PromptTemplate(chat_instruction="{{literal}} {steps}").chat_messages("q", ["a"])[-1]["content"].endswith("{literal} a")


@pytest.mark.parametrize("spec,msg", [
    ("trim:nan", "within"), ("query:-5", "within"), ("steer:inf", "within"), ("specreason:10", r"within \[0, 9\]"),
    ("random:abc", "not a number"), ("", "empty router spec"), ("fixed:", "needs a value"),
    ("policy:/no/such/folder", "policy folder /no/such/folder does not exist"),
])
def test_router_specs_are_checked(spec, msg):
    with pytest.raises(RouterError, match=msg):
        make_router(spec)


def test_user_files_fail_with_the_file_named(tmp_path):
    from roro_sdk._files import load_mapping_file, read_text_file

    b = tmp_path / "b.yaml"
    b.write_bytes(BINARY)
    with pytest.raises(DatasetError, match="b.yaml is not UTF-8 text"):
        read_text_file(b, what="dataset file", error=DatasetError)
    with pytest.raises(ConfigError, match="is a folder"):
        read_text_file(tmp_path)
    lst = tmp_path / "l.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_mapping_file(lst)
    (tmp_path / "e.yaml").write_text("")
    assert load_mapping_file(tmp_path / "e.yaml") == {}


def _fake_pool_file(server, tmp_path, priced: bool = True) -> Path:
    price = "input_price_per_m: 0.1, output_price_per_m: 0.4" if priced else "input_price_per_m: null, output_price_per_m: null"
    p = tmp_path / "pool.yaml"
    p.write_text("models:\n"
                 f"  - {{name: small, model: openai/small, api_base: '{server.api_base}', {price}}}\n"
                 f"  - {{name: large, model: openai/large, api_base: '{server.api_base}', input_price_per_m: 1, output_price_per_m: 4}}\n"
                 + ("" if priced else "allow_unpriced: true\n"))
    return p


def test_accuracy_is_na_when_no_answer_was_checked(server, tmp_path, capsys):
    data = tmp_path / "noanswers.jsonl"
    data.write_text('{"question": "What is 6*7?"}\n{"question": "What is 2+2?"}\n')
    assert main(["eval", "--dataset", str(data), "--router", "all-small", "--pool", str(_fake_pool_file(server, tmp_path)),
                 "-q"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("all-small"))
    assert "n/a" in row and "0.0%" not in row


def test_results_without_answers_are_reloaded_by_roro_report(tmp_path, capsys):
    qs = [q.model_copy(update={"answer": None}) for q in sim_queries(n=3)]
    res = evaluate(sim_pool(), qs, ["all-small"], bootstrap=10)
    assert res.runs[0].n_checked == 0 and res.runs[0].accuracy_ci == (None, None)
    res.save(tmp_path / "results.json")
    assert EvalResults.load(tmp_path).runs[0].n_checked == 0  # null intervals read back
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    assert "n/a" in (tmp_path / "report.md").read_text()


# ----- 3. unpriced costs are flagged --------------------------------------------------------------

def test_plain_eval_flags_unpriced_costs(server, tmp_path, capsys):
    pool = _fake_pool_file(server, tmp_path, priced=False)
    assert main(["eval", "--dataset", "sample", "--limit", "2", "--router", "all-small", "--pool", str(pool), "-q"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("all-small"))
    assert "0.000000 (unpriced)" in row and "lower bound" in out


# ----- 4. tests write to temporary folders only -----------------------------------------------------

def test_caches_of_the_tests_are_temporary(tmp_path_factory):
    from platformdirs import user_cache_dir

    from roro_sdk.cache import default_cache_path
    from roro_sdk.local.registry import default_cache_dir

    temp_root = tmp_path_factory.getbasetemp()
    assert Path(os.environ["RORO_CACHE_DIR"]).is_relative_to(temp_root)
    for path in (default_cache_path(), default_cache_dir()):
        assert path.is_relative_to(temp_root) and not path.is_relative_to(user_cache_dir("roro-sdk"))


# ----- 5. the rest of the surface ---------------------------------------------------------------------

def test_cache_stats_of_a_missing_cache_creates_nothing(tmp_path, capsys):
    where = tmp_path / "nowhere" / "c.sqlite"
    assert main(["cache", "stats", "--path", str(where)]) == 0
    assert "no generation cache" in capsys.readouterr().out and not (tmp_path / "nowhere").exists()


def test_sweep_ranges_keep_their_own_error():
    from roro_sdk.eval import parse_values

    with pytest.raises(ConfigError, match="2 to 1000 values"):
        parse_values("0.1..0.9/1")


def _raise(exc: BaseException):
    def cmd(args):
        raise exc
    return cmd


def _validation_error():
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        rounds: int

    try:
        M(rounds="x" * 500)
    except ValidationError as e:
        return e


@pytest.mark.parametrize("exc,msg", [
    (_validation_error(), "invalid rounds: Input should be a valid integer"),
    (IsADirectoryError(21, "Is a directory", "some/dir"), "some/dir: Is a directory"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not UTF-8 text"),
    (ConfigError("first line\n  detail: a\n  detail: b"), "first line detail: a; detail: b"),
])
def test_main_turns_input_errors_into_one_line(exc, msg, monkeypatch, capsys):
    import roro_sdk.cli as cli

    monkeypatch.setattr(cli, "cmd_run", _raise(exc))
    assert main(["run", "q"]) == 2
    err = _one_line_error(capsys)
    assert msg in err and len(err) < 300


def test_main_lets_a_bug_be_a_traceback(monkeypatch):
    import roro_sdk.cli as cli

    monkeypatch.setattr(cli, "cmd_run", _raise(TypeError("a bug")))
    with pytest.raises(TypeError):
        main(["run", "q"])


def test_roro_run_is_reproducible_for_a_seed(capsys):
    # Routers seed their draws with the query id; an ad-hoc question's id comes from its text, so
    # the same command routes the same way every time (a random id made each run differ).
    outs = []
    question = sim_queries(n=1, seed=5)[0].question  # the sim bench answers only its own tasks
    for _ in range(3):
        assert main(["run", question, "--pool", "sim", "--router", "random:0.5", "--seed", "3", "--json"]) == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        outs.append([s["model"] for s in line["steps"]])
    assert outs[0] == outs[1] == outs[2] and len(set(outs[0])) == 2, outs
