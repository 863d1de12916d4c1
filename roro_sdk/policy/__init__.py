"""The learned router's policy: one-pass action scoring, the GRPO loss, a fused LoRA training path.

Needs torch (and transformers/peft for the models it scores). The fused LoRA path
(:mod:`roro_sdk.policy.lora`) registers custom torch ops (``torch.ops.roro``) when it is imported,
so it is imported only when one of its names is first used, never by ``import roro_sdk.policy``.
"""

from typing import Any

from roro_sdk.policy.scoring import (
    ActionLogits,
    GRPOLoss,
    action_log_probs,
    action_logits,
    action_logits_per_decision,
    chosen_log_probs,
    decoder_hidden_states,
    grpo_policy_loss,
    pad_decision_positions,
)

_LAZY = {"FusedLoRALinear", "FusedLoRARouter"}

__all__ = [
    "ActionLogits",
    "FusedLoRALinear",
    "FusedLoRARouter",
    "GRPOLoss",
    "action_log_probs",
    "action_logits",
    "action_logits_per_decision",
    "chosen_log_probs",
    "decoder_hidden_states",
    "grpo_policy_loss",
    "pad_decision_positions",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from roro_sdk.policy import lora

        return getattr(lora, name)
    raise AttributeError(f"module 'roro_sdk.policy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
