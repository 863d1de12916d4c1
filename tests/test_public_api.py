import subprocess
import sys

import roro_sdk

EXPECTED = {
    "__version__", "ModelSpec", "SamplingParams", "Usage", "CallRecord", "Step", "Query", "Trajectory",
    "ModelPool", "Generation", "RetryPolicy", "PromptTemplate", "StepwiseRuntime", "default_pool",
    "Router", "Decision", "RoutingState", "FixedRouter", "RandomRouter", "QueryLevelRouter", "BudgetGuard",
    "ConfidenceRouter", "SpecReasonRouter", "TrimRouter", "make_router",
    "extract_answer", "check_answer", "load_dataset", "load_jsonl", "read_trajectories", "write_trajectories",
    "RoroError", "ConfigError", "PoolFileError", "UnknownModelError", "MissingAPIKeyError", "UnpricedModelError",
    "BudgetError", "ModelCallError", "TransientModelError", "PermanentModelError", "ModelUnavailableError",
    "RouterError", "LogprobsUnavailableError", "DatasetError", "OutputValidationError", "TrainingConfigError",
    "RunExistsError", "UnsafeWeightsError", "ProcessScoringError", "MissingExtraError",
    "Criterion", "Rubric", "Rubricor", "StaticRubricor", "FunctionRubricor", "LiteLLMRubricor", "LocalRubricor",
    "rubricor_from_config", "Judge", "JudgeResult", "FunctionJudge", "LiteLLMJudge", "LocalJudge", "judge_from_config",
    "PreferencePair", "PairConfig", "PairSet", "build_pairs", "read_pairs", "write_pairs",
    "RewardWeights", "GRPOConfig", "load_grpo_config", "evaluate", "aevaluate", "summarize", "RouterSummary", "GenerationCache",
}
# public too, but they need torch: imported on first use and kept out of __all__ (star imports work without torch)
LAZY = {"PolicyRouter", "PolicyTemplate", "train_router", "evaluate_router"}

# The documented subpackages, each a face with a locked __all__ (docs/concepts.md, "The public faces").
# Every other module is implementation: no __all__, and the docs and examples never import from it.
FACES = {
    "roro_sdk.testing": {"FakeModel", "FakeOpenAIServer", "ScriptedRouter", "count_prefix_steps"},
    "roro_sdk.serve": {
        "ServeConfig", "ServeLimits", "ServeBudgets", "parse_route", "RoutedService", "RouteTable", "ChatRequest",
        "parse_chat_request", "create_app", "start_server", "run_server", "BackgroundServer", "register_roro_provider",
        "InvalidRequestError", "UnknownRouteError",
    },
    "roro_sdk.scale": {
        "RayOptions", "ray_options", "WorkerGroup", "RunStats", "arun_sharded", "connect", "import_ray", "pool_recipe",
        "PoolRecipe", "QueryRunner", "QueryWorker", "arun_queries", "error_trajectory",
    },
    "roro_sdk.tree": {
        "FrontierPoint", "Leaf", "QueryTree", "RecordResult", "RecordingSettings", "RoutingTree", "TreeManifest", "TreeStore",
        "arecord_tree", "best_at_cost", "best_for_weight", "best_frontier", "check_pool", "gain_share", "is_tree_spec",
        "best_plan_mix", "best_under_share", "ShareBound", "read_queries", "record_tree", "tree_of_spec", "walk", "NodeValue", "RoutingPlan", "TreeStepVerifier",
        "leaf_trajectories", "node_values", "tree_judge", "tree_step_verifier", "snapshot_tree", "tree_criterion_labeler",
    },
    "roro_sdk.sim": {
        "SimConfig", "SimModel", "parse_sim_spec", "SimTask", "sim_queries", "task_of", "is_hard_step", "sim_pool",
        "register_sim_provider", "sim_complete", "optimal_routing", "brute_force_routing", "routing_cost",
        "routing_p_correct", "routing_objective", "realized_correct", "oracle_routing", "routing_regret",
        "grade_routing", "SimOptimalRouter", "SimOracleRouter",
    },
    "roro_sdk.local": {
        "PROVIDER", "REGISTRY", "STEP_DELIMITER", "AsyncBatcher", "GenerationRequest", "GenerationResult", "LocalEngine",
        "LocalModelEntry", "LocalModelInfo", "LocalProviderError", "LocalSettings", "RoroLocalLLM", "StopMatch",
        "clear_local_engines", "configure_local", "default_cache_dir", "ensure_local_model", "find_stop",
        "get_local_engine", "get_local_entry", "list_local_models", "pip_install_command", "register_local_model",
        "register_local_provider", "verify_local_model",
    },
    "roro_sdk.eval": {
        "RouterSummary", "summarize", "evaluate", "aevaluate", "Sweep", "parse_values", "write_report", "rebuild_report",
        "bootstrap_ci", "auc", "apgr", "cpt", "trade_off", "TradeOff", "anchored_curve", "pareto_frontier",
        "oracle_curve", "EvalResults", "RunResult", "QueryRecord", "CurvePoint", "CurveResult", "OracleResult", "Analysis",
    },
    "roro_sdk.train": {
        "collect", "acollect", "CollectResult", "trajectory_id", "PreferencePair", "PairConfig", "PairSet", "PairStats",
        "build_pairs", "read_pairs", "write_pairs", "record_step_verifier", "routing_process_score",
        "judge_process_scores", "judge_process_report", "ProcessScoringStats",
        "DEFAULT_CRITERIA", "parse_rubric_text", "render_trajectory", "AlternatingTrainer", "JudgeTrainingConfig",
        "load_trained", "pairwise_accuracy", "record_criterion_labeler",
        "GRPOConfig", "PolicyConfig", "RewardWeights", "load_grpo_config", "pool_and_queries",
        "sim_preference_data", "sim_demo_library", "sim_demo_labeler", "SIM_DEMO_DISTRACTORS", "tiny_judge_and_rubricor",
        "tokenizer_corpus", "sim_rule_judge", "sim_escalation_shares",
    },
}
# Public names of a face that need torch: imported on first use, kept out of its __all__ (as the root's LAZY).
FACE_LAZY = {"roro_sdk.train": {"train_router", "evaluate_router", "GRPOResult", "build_policy"}}
FACE_FILES = {"__init__.py", "testing.py", "sim/__init__.py", "local/__init__.py", "eval/__init__.py", "train/__init__.py",
              "serve/__init__.py", "scale/__init__.py", "tree/__init__.py"}


def test_all_is_locked():
    # Adding to the public API is a decision: update EXPECTED deliberately.
    assert set(roro_sdk.__all__) == EXPECTED
    assert set(roro_sdk._LAZY) == LAZY
    for name in [*roro_sdk.__all__, *LAZY]:
        assert hasattr(roro_sdk, name), name


def test_errors_share_one_base():
    for name in roro_sdk.__all__:
        obj = getattr(roro_sdk, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, roro_sdk.RoroError), name


def test_import_is_light_and_offline():
    code = "import sys, time; t=time.time(); import roro_sdk; print(time.time()-t); print('litellm' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"]
    assert float(out[0]) < 2.0


def test_torch_names_load_on_first_use():
    code = ("import sys, roro_sdk; names = set(dir(roro_sdk)); print('torch' in sys.modules); "
            "r = roro_sdk.PolicyRouter; print('torch' in sys.modules, r.__module__, set(" + repr(sorted(LAZY)) + ") <= names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "roro_sdk.policy.router", "True"]
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        roro_sdk.nope  # noqa: B018


def test_without_torch_star_import_works_and_lazy_names_say_what_to_install():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # an install without the train extra
        "from roro_sdk import *\n"
        "import roro_sdk\n"
        "try:\n    roro_sdk.PolicyRouter\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ERR" in out and 'pip install "roro-sdk[train]"' in out, out  # MissingExtraError, one line


def _clean_env() -> dict[str, str]:
    import os

    drop = {"HF_HUB_OFFLINE", "LITELLM_LOCAL_MODEL_COST_MAP", "TIKTOKEN_CACHE_DIR", "TOKENIZERS_PARALLELISM",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_import_changes_nothing_in_the_host():
    code = ("import os, json; before = dict(os.environ); import roro_sdk, roro_sdk.testing, roro_sdk.routers; "
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_clean_env()).stdout
    assert out.strip() == "[]", f"import roro_sdk changed the environment: {out}"


def test_using_litellm_through_the_sdk_leaves_its_globals_and_our_variables_alone():
    # The pool imports litellm offline (local price map) and passes drop_params per call; neither the
    # variable that made the import offline nor litellm.drop_params stays behind for the host.
    code = ("import os, json; from roro_sdk._env import import_litellm; m = import_litellm(); "
            "print(json.dumps([os.environ.get('LITELLM_LOCAL_MODEL_COST_MAP'), m.drop_params, "
            "'gpt-4o-mini' in m.model_cost]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_clean_env(), timeout=120).stdout
    assert out.strip().splitlines()[-1] == "[null, false, true]"


def test_bad_config_values_are_config_errors_naming_the_field():
    # One exception tree: a user who builds a config model with a bad value gets a ConfigError (still a
    # ValueError) that names the field, not pydantic's ValidationError.
    import pytest

    from roro_sdk.sim import SimConfig

    cases = [
        (lambda: roro_sdk.ModelSpec(name="x", model="openai/x", input_price_per_m=-1, output_price_per_m=0), "input_price_per_m"),
        (lambda: roro_sdk.SamplingParams(top_p=0), "top_p"),
        (lambda: roro_sdk.PromptTemplate(delimiter=5), "delimiter"),
        (lambda: SimConfig(p_hard=2), "p_hard"),
    ]
    for build, field in cases:
        with pytest.raises(roro_sdk.ConfigError, match=field):
            build()


def test_sim_request_errors_are_roro_errors():
    from roro_sdk.sim.provider import SimRequestError

    assert issubclass(SimRequestError, roro_sdk.RoroError) and issubclass(SimRequestError, ValueError)


def test_moved_names_still_import_with_a_deprecation_warning():
    import warnings

    import pytest

    pytest.importorskip("torch")
    from roro_sdk.train import grpo

    for name in ("group_advantages", "step_advantages"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from roro_sdk import rewards

            assert getattr(rewards, name) is getattr(grpo, name)
        assert any(issubclass(w.category, DeprecationWarning) and "moved" in str(w.message) for w in caught)


def _defines_all(tree) -> bool:
    import ast

    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


def test_only_the_faces_define_all():
    # An implementation module's __all__ is noise that reads like API; what is API is a face's.
    import ast
    from pathlib import Path

    pkg = Path(roro_sdk.__file__).parent
    with_all = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py") if _defines_all(ast.parse(p.read_text()))}
    assert with_all == FACE_FILES, f"__all__ outside the faces: {sorted(with_all - FACE_FILES)}"


def test_each_face_is_locked_and_its_names_resolve():
    # Adding to a face is a decision, as for the root: update FACES (and docs/concepts.md) deliberately.
    import importlib
    import importlib.util

    extras = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
    for face, expected in FACES.items():
        module = importlib.import_module(face)
        assert len(module.__all__) == len(set(module.__all__)), face
        assert set(module.__all__) == expected, face
        for name in sorted(expected):
            # a name the face does not hold yet is imported on first use, which needs the extras
            assert name in vars(module) or not extras or hasattr(module, name), f"{face}.{name}"
    train = importlib.import_module("roro_sdk.train")
    assert set(train._LAZY) == FACE_LAZY["roro_sdk.train"] and not set(train._LAZY) & set(train.__all__)
    assert FACE_LAZY["roro_sdk.train"] <= set(dir(train))


def test_faces_import_without_torch():
    for face in FACES:
        code = f"import sys; import {face}; print('torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        assert out == ["False"], f"import {face} imports torch"
    # the training face's star import works on the core install too (its torch names are lazy)
    code = "import sys; sys.modules['torch'] = None\nfrom roro_sdk.train import *\nprint(collect.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["collect"]


def test_training_face_loads_its_torch_names_on_first_use():
    import pytest

    pytest.importorskip("torch")
    import roro_sdk.train
    from roro_sdk.train import grpo

    for name in FACE_LAZY["roro_sdk.train"]:
        assert getattr(roro_sdk.train, name) is getattr(grpo, name), name
    assert roro_sdk.train_router is roro_sdk.train.train_router
    with pytest.raises(AttributeError, match="roro_sdk.train' has no attribute 'nope'"):
        roro_sdk.train.nope  # noqa: B018


def test_docs_and_examples_import_only_from_faces():
    # Users copy what the docs show: an import from an implementation module would make it API.
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    allowed = {"roro_sdk", *FACES}
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "examples").glob("*.py"))]
    pattern = re.compile(r"^[ \t]*(?:from\s+(roro_sdk(?:\.\w+)*)\s+import\b|import\s+(roro_sdk(?:\.\w+)*))", re.M)
    bad = []
    for path in files:
        for m in pattern.finditer(path.read_text()):
            module = m.group(1) or m.group(2)
            if module not in allowed:
                line = path.read_text().count("\n", 0, m.start()) + 1
                bad.append(f"{path.relative_to(root)}:{line}: {module}")
    assert len(files) > 10 and not bad, "imports from implementation modules (import from a face instead):\n" + "\n".join(bad)


def test_the_sdks_own_paths_import_litellm_offline():
    # Without LITELLM_LOCAL_MODEL_COST_MAP in the environment, litellm fetches its price map from the
    # network while it is imported. Every place roro-sdk imports it (the pool, the sim and local
    # providers) must load the local map instead, whichever is first.
    for first in ("import roro_sdk.local.provider",
                  "from roro_sdk.sim import register_sim_provider; register_sim_provider()",
                  "from roro_sdk.sim import sim_pool, sim_queries; from roro_sdk import StepwiseRuntime, FixedRouter; "
                  "StepwiseRuntime(sim_pool(), FixedRouter()).run(sim_queries(n=1)[0])"):
        code = (f"{first}\nfrom litellm.litellm_core_utils.get_model_cost_map import _cost_map_source_info as i\n"
                "print(i.source)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), timeout=180)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip().splitlines()[-1] == "local", (first, r.stdout, r.stderr[-2000:])
        assert "remote model cost map" not in r.stderr, (first, r.stderr[-2000:])
