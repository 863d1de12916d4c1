"""The learned router's policy: one-pass action scoring, and a fused LoRA training path.

Needs torch (and transformers/peft for the models it scores). The fused LoRA path
(:mod:`roro_sdk.policy.lora`) registers custom torch ops (``torch.ops.roro``) when it is imported,
so it is imported only when one of its names is first used, never by ``import roro_sdk.policy``.
The GRPO loss moved next to the training loop, to :mod:`roro_sdk.train.grpo`; ``GRPOLoss`` and
``grpo_policy_loss`` are still found here for one release, with a DeprecationWarning.
"""

import warnings
from typing import Any

from roro_sdk.policy.scoring import (
    ActionLogits,
    action_log_probs,
    action_logits,
    action_logits_per_decision,
    chosen_log_probs,
    decoder_hidden_states,
    pad_decision_positions,
)

_LAZY = {"FusedLoRALinear", "FusedLoRARouter"}
_MOVED_TO_GRPO = {"GRPOLoss", "grpo_policy_loss"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from roro_sdk.policy import lora

        return getattr(lora, name)
    if name in _MOVED_TO_GRPO:
        warnings.warn(f"roro_sdk.policy.{name} moved to roro_sdk.train.grpo.{name}; the old name will be removed in "
                      "the next release", DeprecationWarning, stacklevel=2)
        from roro_sdk.train import grpo

        return getattr(grpo, name)
    raise AttributeError(f"module 'roro_sdk.policy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
