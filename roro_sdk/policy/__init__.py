"""The learned router's policy: one-pass action scoring, the GRPO loss, a fused LoRA training path.

Needs torch (and transformers/peft for the models it scores).
"""

from roro_sdk.policy.lora import FusedLoRALinear, FusedLoRARouter
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
