"""Action scoring for the learned router (inference and training share it).

The learned router is a causal LM (optionally with a LoRA adapter) that reads the rendered routing
state and picks one of K models for the next step by the next-token logits of K *action-label
tokens*. The rendering is append-only, so decision ``d``'s state is a prefix of decision ``d+1``'s:
one forward pass over a whole trajectory gives the action logits at all of its decisions
(:func:`action_logits`). :func:`action_logits_per_decision` is the naive one-forward-per-decision
reference, kept for tests and for the benchmark comparison.

We never materialise the full-vocabulary logits (8192 tokens x 151,936 vocab in bf16 is 2.5 GB,
more with fp32 copies): we run only the decoder, gather the hidden states at the decision
positions, and multiply by the K rows of the LM head.

Conventions used throughout:

* ``decision_positions[b, d]`` is the index of the **last token of the state** for decision ``d``
  of trajectory ``b`` (the position whose next-token logits pick the action). It is a padded
  ``LongTensor[B, Dmax]`` with ``-1`` for padding, or a list of lists of ints (converted).
* Results use the same padded layout: ``logits[B, Dmax, K]`` plus a boolean ``mask[B, Dmax]``;
  padded rows hold zeros. :meth:`ActionLogits.flat` gives the ``[num_decisions, K]`` layout.
* Padding of ``input_ids`` may be on either side; position ids are derived from
  ``attention_mask`` so left padding scores the same as no padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .._extras import require

require("torch", extra="train")  # one line naming the extra, not a torch traceback
import torch
from torch import Tensor

from ..hf import decoder_of, unwrap_adapter


class ActionLogits(NamedTuple):
    """Action logits in the padded per-trajectory layout.

    ``logits``: float32 ``[B, Dmax, K]``; ``mask``: bool ``[B, Dmax]`` (True where a decision exists).
    """

    logits: Tensor
    mask: Tensor

    def flat(self) -> Tensor:
        """The valid rows only, trajectory-major: ``[num_decisions_total, K]``."""
        return self.logits[self.mask]

    def log_probs(self) -> Tensor:
        """log-softmax over the K actions (padded rows stay finite: log(1/K))."""
        return torch.log_softmax(self.logits, dim=-1)


def pad_decision_positions(
    positions: Tensor | Sequence[Sequence[int]], device: torch.device | str | None = None
) -> Tensor:
    """Turn a list of per-trajectory position lists into the padded ``[B, Dmax]`` layout (-1 pads)."""
    if isinstance(positions, Tensor):
        if positions.dim() != 2:
            raise ValueError(f"decision_positions must be [B, Dmax], got shape {tuple(positions.shape)}")
        return positions.to(device=device, dtype=torch.long)
    rows = [list(map(int, r)) for r in positions]
    dmax = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(dmax, 1)), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            out[b, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


def action_head_rows(model: Any, action_token_ids: Tensor) -> tuple[Tensor, Tensor | None]:
    """The K rows of the LM head (tied or not) and its bias rows, if any."""
    head = unwrap_adapter(model).get_output_embeddings()
    if head is None:
        raise TypeError("model has no output embeddings (LM head)")
    if hasattr(head, "lora_A"):
        raise NotImplementedError("LoRA on the LM head is not supported by action scoring; leave lm_head out")
    weight = head.weight
    bias = getattr(head, "bias", None)
    ids = action_token_ids.to(weight.device)
    return weight.index_select(0, ids), (bias.index_select(0, ids) if bias is not None else None)


def _position_ids(attention_mask: Tensor | None) -> Tensor | None:
    if attention_mask is None:
        return None
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_hidden_states(model: Any, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Last hidden states ``[B, T, H]`` (after the final norm) without computing any logits.

    An all-ones mask is dropped so that attention can take its fast causal path.
    """
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    out = decoder_of(model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def action_logits(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    decision_positions: Tensor | Sequence[Sequence[int]],
    action_token_ids: Tensor | Sequence[int],
) -> ActionLogits:
    """Action logits at every decision of every trajectory, in ONE forward pass.

    ``model``: a transformers causal LM (Qwen2/Llama-like), a peft wrapper of one, or anything with
    the same ``get_decoder()`` / ``get_output_embeddings()`` duck type (e.g. the fused LoRA router).
    Returns float32 ``ActionLogits(logits[B, Dmax, K], mask[B, Dmax])``.
    """
    device = input_ids.device
    positions = pad_decision_positions(decision_positions, device)
    if positions.shape[0] != input_ids.shape[0]:
        raise ValueError("decision_positions must have one row per sequence")
    if int(positions.max()) >= input_ids.shape[1]:
        raise ValueError("a decision position is past the end of the sequence")
    ids = torch.as_tensor(action_token_ids, dtype=torch.long, device=device)
    mask = positions >= 0
    hidden = decoder_hidden_states(model, input_ids, attention_mask)  # [B, T, H]
    index = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    rows = hidden.gather(1, index).float()  # [B, Dmax, H]
    w, b = action_head_rows(model, ids)
    logits = rows @ w.float().t()
    if b is not None:
        logits = logits + b.float()
    return ActionLogits(logits * mask.unsqueeze(-1), mask)


def action_logits_per_decision(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    decision_positions: Tensor | Sequence[Sequence[int]],
    action_token_ids: Tensor | Sequence[int],
) -> ActionLogits:
    """The naive reference: one forward per decision, on the truncated state prefix alone.

    Same inputs and output layout as :func:`action_logits`; B x D times the forward passes.
    """
    positions = pad_decision_positions(decision_positions, input_ids.device)
    mask = positions >= 0
    rows: list[Tensor] = []
    where = mask.nonzero().tolist()
    for b, d in where:
        p = int(positions[b, d])
        prefix_mask = attention_mask[b : b + 1, : p + 1] if attention_mask is not None else None
        one = action_logits(model, input_ids[b : b + 1, : p + 1], prefix_mask, [[p]], action_token_ids)
        rows.append(one.logits[0, 0])
    out = torch.zeros(*positions.shape, len(action_token_ids), dtype=torch.float32, device=input_ids.device)
    if rows:  # out-of-place index_put keeps the autograd graph of the rows
        bi, di = mask.nonzero(as_tuple=True)
        out = out.index_put((bi, di), torch.stack(rows))
    return ActionLogits(out, mask)


def action_log_probs(scores: ActionLogits) -> Tensor:
    """log-softmax over the K actions: ``[B, Dmax, K]``."""
    return scores.log_probs()


def chosen_log_probs(scores: ActionLogits, actions: Tensor) -> Tensor:
    """log pi(a_taken) per decision, ``[B, Dmax]`` (0 where padded). ``actions`` index 0..K-1 (-1 pads)."""
    logp = scores.log_probs().gather(-1, actions.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logp * scores.mask
