"""The fused computations behind :mod:`roro_sdk.policy.lora`: LoRA folded into the base GEMM, the
SwiGLU activation fused with the down projection, and RMSNorm, each with a hand-written backward,
as autograd functions (eager) and as ``torch.library`` custom ops (``torch.ops.roro``, opaque to
``torch.compile``). Importing this module registers those ops, so it is imported only through
:mod:`roro_sdk.policy.lora` (an explicit opt-in); the module docstring there says why and how.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


# ----------------------------------------------------------------------------- GEMM helpers
# ``w`` is either the frozen weight (``stored=False``: the concatenated weights are built per call)
# or its *storage* (``stored=True``): the weight with the scaled B appended as columns
# (``[W | sB]``, when ``cat_out``) or A appended as rows (``[W ; A]``, otherwise), kept in sync by
# :meth:`FusedLoRALinear.sync_storage`, so no GEMM ever needs a per-call copy of ``W``.
def _base_weight(w: Tensor, a: Tensor, b: Tensor, cat_out: bool, stored: bool) -> Tensor:
    if not stored:
        return w
    return w[:, : a.shape[1]] if cat_out else w[: b.shape[0]]


def _lora_forward(x: Tensor, w: Tensor, bias: Tensor | None, a: Tensor, b: Tensor, cat_in: bool, cat_out: bool,
                  stored: bool):
    """``x W^T + bias + (x A^T) B^T`` with ``b`` already scaled; returns ``(y, x A^T)``."""
    xa = x @ a.t()
    if cat_in:  # one GEMM over K = in + R: cheaper than re-reading a wide output (cat_in implies cat_out)
        y = F.linear(torch.cat([x, xa], 1), w if stored else torch.cat([w, b], 1), bias)
    else:
        y = F.linear(x, _base_weight(w, a, b, cat_out, stored), bias)
        y.addmm_(xa, b.t())
    return y, xa


def _lora_backward(
    dy: Tensor, x: Tensor, xa: Tensor, w: Tensor, a: Tensor, b: Tensor, cat_out: bool, stored: bool, need_dx: bool
):
    """Gradients of :func:`_lora_forward` for ``x``, ``a`` and the scaled ``b`` (base is frozen)."""
    dx = None
    if not need_dx:
        dxa = dy @ b
    elif cat_out:  # dy @ [W | B] = [dx_base | dxa] in one GEMM
        g = dy @ (w if stored else torch.cat([w, b], 1))
        n_in = a.shape[1]
        dxa = g[:, n_in:]
        dx = torch.addmm(g[:, :n_in], dxa, a)
    else:  # [dy | dxa] @ [W ; A] = dx in one GEMM
        dxa = dy @ b
        dx = torch.cat([dy, dxa], 1) @ (w if stored else torch.cat([w, a], 0))
    return dx, dxa.t() @ x, dy.t() @ xa


def swiglu(gu: Tensor) -> Tensor:
    g, u = gu.chunk(2, -1)
    return F.silu(g) * u


def _swiglu_grad(dh: Tensor, gu: Tensor) -> Tensor:
    """``[dg | du]`` of ``h = silu(g) * u`` given ``dh``."""
    g, u = gu.chunk(2, -1)
    sig = torch.sigmoid(g)
    return torch.cat([dh * u * (sig * (1 + g * (1 - sig))), dh * (g * sig)], -1)


_COMPILED_POINTWISE: dict[Any, Any] = {}


def _pointwise(fn, compiled: bool):
    """``fn``, or a ``torch.compile``d copy of it: inside the opaque fused op the outer compiler
    cannot fuse these element-wise chains (about ten passes over ``8192 x 8960`` in backward), a
    compiled helper does (one pass in, one out), while the op still saves only ``[g | u]``."""
    if not compiled:
        return fn
    out = _COMPILED_POINTWISE.get(fn)
    if out is None:
        out = _COMPILED_POINTWISE[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    return out


def _swiglu_down_backward_math(dy, gu, xa, w, a, b, cat_out: bool, stored: bool, compiled: bool = False):
    """Backward of ``down(silu(g) * u)``: recomputes ``h`` from ``[g | u]`` (no matmul recomputed)."""
    h = _pointwise(swiglu, compiled)(gu)
    dh, da, db = _lora_backward(dy.contiguous(), h, xa, w, a, b, cat_out, stored, True)
    return _pointwise(_swiglu_grad, compiled)(dh, gu), da, db


class _LoRALinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, a, b, cat_in, cat_out, stored):  # type: ignore[override]
        y, xa = _lora_forward(x, w, bias, a, b, cat_in, cat_out, stored)
        ctx.save_for_backward(x, xa, w, a, b)
        ctx.cat_out, ctx.stored = cat_out, stored
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, xa, w, a, b = ctx.saved_tensors
        dx, da, db = _lora_backward(dy.contiguous(), x, xa, w, a, b, ctx.cat_out, ctx.stored, ctx.needs_input_grad[0])
        return dx, None, None, da, db, None, None, None


class _SwiGLUDownFn(torch.autograd.Function):
    """``down(silu(g) * u)`` with LoRA on down; saves ``[g | u]`` only and recomputes ``h``."""

    @staticmethod
    def forward(ctx, gu, w, bias, a, b, cat_in, cat_out, stored):  # type: ignore[override]
        y, xa = _lora_forward(swiglu(gu), w, bias, a, b, cat_in, cat_out, stored)
        ctx.save_for_backward(gu, xa, w, a, b)
        ctx.cat_out, ctx.stored = cat_out, stored
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        gu, xa, w, a, b = ctx.saved_tensors
        dgu, da, db = _swiglu_down_backward_math(dy, gu, xa, w, a, b, ctx.cat_out, ctx.stored)
        return dgu, None, None, da, db, None, None, None


class _RMSNormFn(torch.autograd.Function):
    """RMSNorm with a frozen weight; saves the input and rstd, not fp32 copies."""

    @staticmethod
    def forward(ctx, x, weight, eps):  # type: ignore[override]
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        xhat = x.float() * rstd
        g = dy.float() * weight.float()
        dx = rstd * (g - xhat * (g * xhat).mean(-1, keepdim=True))
        return dx.to(x.dtype), None, None


# The same two fused computations as torch.library custom ops. torch.compile treats them as opaque
# kernels with a registered backward: the reliable way to keep a hand-written backward under
# compile (on torch 2.11 + CUDA, the autograd.Function above silently lost its gradients when
# compiled). Eager mode may use either.
_FWD_SCHEMA = (
    "(Tensor x, Tensor w, Tensor? bias, Tensor a, Tensor b, bool cat_in, bool cat_out, bool stored)"
    " -> (Tensor, Tensor)"
)
_BWD_SCHEMA = (
    "(Tensor dy, Tensor x, Tensor xa, Tensor w, Tensor a, Tensor b, bool cat_out, bool stored, bool need_dx)"
    " -> (Tensor, Tensor, Tensor)"
)


@torch.library.custom_op("roro::lora_linear", mutates_args=(), schema=_FWD_SCHEMA)
def _lora_linear_op(x, w, bias, a, b, cat_in, cat_out, stored):
    return _lora_forward(x, w, bias, a, b, cat_in, cat_out, stored)


@_lora_linear_op.register_fake
def _(x, w, bias, a, b, cat_in, cat_out, stored):
    return x.new_empty(x.shape[0], b.shape[0]), x.new_empty(x.shape[0], a.shape[0])


@torch.library.custom_op("roro::lora_linear_bwd", mutates_args=(), schema=_BWD_SCHEMA)
def _lora_linear_bwd_op(dy, x, xa, w, a, b, cat_out, stored, need_dx):
    dx, da, db = _lora_backward(dy.contiguous(), x, xa, w, a, b, cat_out, stored, need_dx)
    return (dx if dx is not None else x.new_empty(0)), da, db


@_lora_linear_bwd_op.register_fake
def _(dy, x, xa, w, a, b, cat_out, stored, need_dx):
    dx = x.new_empty(x.shape) if need_dx else x.new_empty(0)
    return dx, a.new_empty(a.shape), b.new_empty(b.shape)


def _lora_linear_setup(ctx, inputs, output):
    x, w, _bias, a, b, _cat_in, cat_out, stored = inputs
    ctx.save_for_backward(x, output[1], w, a, b)
    ctx.need_dx, ctx.cat_out, ctx.stored = x.requires_grad, cat_out, stored


def _lora_linear_backward(ctx, dy, _dxa):
    x, xa, w, a, b = ctx.saved_tensors
    dx, da, db = _lora_linear_bwd_op(dy, x, xa, w, a, b, ctx.cat_out, ctx.stored, ctx.need_dx)
    return (dx if ctx.need_dx else None), None, None, da, db, None, None, None


_lora_linear_op.register_autograd(_lora_linear_backward, setup_context=_lora_linear_setup)


@torch.library.custom_op(
    "roro::swiglu_down",
    mutates_args=(),
    schema=_FWD_SCHEMA.replace("Tensor x", "Tensor gu").replace("bool stored)", "bool stored, bool compiled)"),
)
def _swiglu_down_op(gu, w, bias, a, b, cat_in, cat_out, stored, compiled):
    return _lora_forward(_pointwise(swiglu, compiled)(gu), w, bias, a, b, cat_in, cat_out, stored)


@_swiglu_down_op.register_fake
def _(gu, w, bias, a, b, cat_in, cat_out, stored, compiled):
    return gu.new_empty(gu.shape[0], b.shape[0]), gu.new_empty(gu.shape[0], a.shape[0])


@torch.library.custom_op(
    "roro::swiglu_down_bwd",
    mutates_args=(),
    schema="(Tensor dy, Tensor gu, Tensor xa, Tensor w, Tensor a, Tensor b, bool cat_out, bool stored, bool compiled)"
    " -> (Tensor, Tensor, Tensor)",
)
def _swiglu_down_bwd_op(dy, gu, xa, w, a, b, cat_out, stored, compiled):
    return _swiglu_down_backward_math(dy, gu, xa, w, a, b, cat_out, stored, compiled)


@_swiglu_down_bwd_op.register_fake
def _(dy, gu, xa, w, a, b, cat_out, stored, compiled):
    return gu.new_empty(gu.shape), a.new_empty(a.shape), b.new_empty(b.shape)


def _swiglu_down_setup(ctx, inputs, output):
    gu, w, _bias, a, b, _cat_in, cat_out, stored, compiled = inputs
    ctx.save_for_backward(gu, output[1], w, a, b)
    ctx.cat_out, ctx.stored, ctx.compiled = cat_out, stored, compiled


def _swiglu_down_backward(ctx, dy, _dxa):
    gu, xa, w, a, b = ctx.saved_tensors
    dgu, da, db = _swiglu_down_bwd_op(dy, gu, xa, w, a, b, ctx.cat_out, ctx.stored, ctx.compiled)
    return dgu, None, None, da, db, None, None, None, None


_swiglu_down_op.register_autograd(_swiglu_down_backward, setup_context=_swiglu_down_setup)


def lora_linear(x, w, bias, a, b, cat_in: bool, cat_out: bool, stored: bool, backend: str) -> Tensor:
    if backend == "function":
        return _LoRALinearFn.apply(x, w, bias, a, b, cat_in, cat_out, stored)
    return _lora_linear_op(x, w, bias, a, b, cat_in, cat_out, stored)[0]


def swiglu_down(gu, w, bias, a, b, cat_in: bool, cat_out: bool, stored: bool, backend: str,
                 compiled: bool = False) -> Tensor:
    if backend == "function":
        return _SwiGLUDownFn.apply(gu, w, bias, a, b, cat_in, cat_out, stored)
    return _swiglu_down_op(gu, w, bias, a, b, cat_in, cat_out, stored, compiled)[0]


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Under torch.compile: plain ops (inductor fuses them and saves little); eager: the Function."""
    if x.requires_grad and not torch.compiler.is_compiling():
        return _RMSNormFn.apply(x, weight, eps)
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
