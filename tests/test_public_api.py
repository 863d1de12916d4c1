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
