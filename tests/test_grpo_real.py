"""The GRPO trainer on a real base model (the local Qwen2.5 0.5B, offline): the one-GPU recipe's
code path, one update on CPU. Marked ``local_models``; skips when the model is not installed."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from roro_sdk import PolicyRouter, evaluate_router, load_grpo_config, make_router, train_router  # noqa: E402
from roro_sdk.local import REGISTRY, list_local_models, pip_install_command  # noqa: E402
from roro_sdk.train.grpo import _pool_and_queries  # noqa: E402

QWEN = "qwen2.5-coder-0.5b-instruct"
pytestmark = pytest.mark.local_models


def test_one_update_with_a_real_base_model_saves_a_loadable_router(tmp_path):
    if not any(i.name == QWEN and i.installed for i in list_local_models()):
        pytest.skip(f"{QWEN} is not installed: {pip_install_command(REGISTRY[QWEN])}")
    cfg = load_grpo_config(
        dataset="sim:careful,hint_accuracy=0.95", train_queries=1, eval_queries=1, updates=1, queries_per_update=1,
        group_size=2, minibatch_size=2, lr=1e-3, max_steps=4, concurrency=4, out_dir=str(tmp_path / "run"),
        policy={"base": QWEN, "lora_r": 4, "lora_alpha": 8, "max_length": 384},
    )
    result = train_router(cfg)
    (update,) = result["history"]
    assert update["zero_adv_groups"] < 1.0, update  # the rollouts differed, so the update moved the adapter
    assert all(map(torch.isfinite, map(torch.tensor, [update["loss"], update["kl"], update["entropy"]])))

    router = make_router(f"policy:{result['router_dir']}")  # what `roro eval --router policy:PATH` loads
    assert isinstance(router, PolicyRouter) and router.base_name == QWEN
    moved = [p for n, p in router.model.named_parameters() if "lora_B" in n]
    assert moved and any(p.abs().sum() > 0 for p in moved)  # B starts at zero
    pool, _, eval_qs = _pool_and_queries(cfg)
    again = evaluate_router(router, pool, eval_qs)
    assert again["accuracy"] == pytest.approx(result["eval"]["accuracy"])
    assert again["large_step_share"] == pytest.approx(result["eval"]["large_step_share"])
