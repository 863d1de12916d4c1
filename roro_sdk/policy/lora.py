"""A fused LoRA training path for Qwen2/Llama-style routers (speed and memory on a GPU).

Why: with a frozen base, a policy update's useful work is two GEMMs per linear (forward, and the
input gradient). peft's per-module LoRA wrapper adds, per linear and per pass, several
memory-bound passes over the (wide) output: a LoRA output, a scaling multiply, an add, plus fp32
copies of the input (peft keeps adapters in fp32 and casts ``x`` to it). On a 1.5B router those
passes cost about as much as the GEMMs themselves. Here:

* LoRA is folded into the base GEMM by concatenation: ``y = [x | xA^T] @ [W | sB]^T`` when the
  output is wider than the input (q/k/v, gate/up), else an in-place ``addmm_`` into the base
  output; in backward ``dy @ [W | sB]`` gives the input gradient *and* ``dy B`` in one GEMM (or
  ``[dy | dyB] @ [W ; A]`` for the narrow-output down projection).
* Linears that read the same input share one LoRA-A matmul and one base GEMM: q/k/v become one
  ``qkv`` linear, gate/up one ``gate_up`` linear (B is applied block-diagonally).
* The SwiGLU activation and the down projection are one op (custom op, or autograd.Function in
  eager mode) that saves only the gate/up output and recomputes ``silu(g) * u`` in backward (no
  matmul is recomputed); RMSNorm saves its bf16 input and the per-row rstd, not fp32 copies.
* Adapters are kept in fp32 (master weights for AdamW) and cast to the compute dtype per step.
* Each base weight lives in a storage with room for the adapter (``[W | sB]`` or ``[W ; A]``),
  so the concatenated GEMMs read it in place: no per-call copy of ``W``.

Measured (H100, 1.5B-shaped router, 8 x 1024 tokens, r=16; docs/benchmarks/grpo_throughput.md),
before the weight storage (``stored_weights=False`` reproduces that path): eager 24.8% MFU at
16.9 GB against peft's 17% at 34.7 GB; with ``compile_layers()`` 32.5% at 16.9 GB. The custom
ops are opaque to inductor, so the SwiGLU element-wise work inside them runs unfused:
``swiglu="graph"`` hands it to the layer's compiler (which then saves ``h`` too), and
``swiglu="op-compiled"`` keeps it in the op as small compiled kernels. The storage and both
options are not yet measured on a GPU (benchmark flags ``nobuf``, ``swiglu``, ``swigluk``).

The base weights are shared with the transformers model (its q/k/v and gate/up weights become
views of the fused ones), so building this costs no extra memory and the original model keeps
working. LoRA targets all seven linears of every layer (or none, ``r=0``); attention is causal,
with an explicit mask only for left padding. Use with :func:`roro_sdk.policy.scoring.action_logits`
like any causal LM: this module mimics ``get_decoder()`` / ``get_output_embeddings()``.
"""

from __future__ import annotations

import math
from typing import Any

from .._extras import require

require("torch", extra="train")  # one line naming the extra, not a torch traceback
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FusedLoRALinear", "FusedLoRARouter"]


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


def _swiglu(gu: Tensor) -> Tensor:
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
    h = _pointwise(_swiglu, compiled)(gu)
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
        y, xa = _lora_forward(_swiglu(gu), w, bias, a, b, cat_in, cat_out, stored)
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
    return _lora_forward(_pointwise(_swiglu, compiled)(gu), w, bias, a, b, cat_in, cat_out, stored)


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


def _lora_linear(x, w, bias, a, b, cat_in: bool, cat_out: bool, stored: bool, backend: str) -> Tensor:
    if backend == "function":
        return _LoRALinearFn.apply(x, w, bias, a, b, cat_in, cat_out, stored)
    return _lora_linear_op(x, w, bias, a, b, cat_in, cat_out, stored)[0]


def _swiglu_down(gu, w, bias, a, b, cat_in: bool, cat_out: bool, stored: bool, backend: str,
                 compiled: bool = False) -> Tensor:
    if backend == "function":
        return _SwiGLUDownFn.apply(gu, w, bias, a, b, cat_in, cat_out, stored)
    return _swiglu_down_op(gu, w, bias, a, b, cat_in, cat_out, stored, compiled)[0]


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Under torch.compile: plain ops (inductor fuses them and saves little); eager: the Function."""
    if x.requires_grad and not torch.compiler.is_compiling():
        return _RMSNormFn.apply(x, weight, eps)
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


# ----------------------------------------------------------------------------- modules
def _base(mod: nn.Module) -> nn.Module:
    """The plain ``nn.Linear`` under an optional peft LoRA wrapper."""
    return getattr(mod, "base_layer", mod)


class FusedLoRALinear(nn.Module):
    """Frozen ``W`` (one or several linears reading the same input, stacked) plus LoRA.

    ``splits`` are the output sizes of the stacked linears: each has its own A (stacked in
    ``lora_A[len(splits) * r, in]``) and B (stacked in ``lora_B[out, r]``), applied as one matmul
    with a block-diagonal B.

    ``stored=True`` (the default with an adapter) keeps ``W`` inside a slightly larger *storage*
    with room for the adapter (``[W | sB]`` or ``[W ; A]``, see ``_base_weight``), so the
    concatenated GEMMs read it in place instead of copying ``W`` on every call. ``weight`` is then
    a view of it. :meth:`sync_storage` copies the adapter in (an adapter-sized copy): on every eager
    call while ``sync_on_call`` is true (a standalone module), else by the owner before it runs the
    module (the router, once per forward: compiled layers cannot write a buffer). It syncs
    unconditionally because fused optimizers (``AdamW(fused=True)``) update parameters
    without bumping their version counters. The copy bypasses autograd's version check, so a graph
    built before an optimizer step must not be backpropagated after it (no training loop does).
    """

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        splits: list[int],
        r: int,
        alpha: float,
        backend: str = "op",
        *,
        stored: bool = True,
    ):
        super().__init__()
        self.backend = backend
        self.out_features, self.in_features = out_features, in_features = weight.shape
        self.splits, self.r, self.scaling = list(splits), r, (alpha / r if r else 0.0)
        self.cat_in = in_features < out_features
        self.cat_out = 2 * in_features <= 3 * out_features
        self.stored = bool(r) and stored
        self.sync_on_call = True
        weight = weight.detach()
        if self.stored:
            extra = len(splits) * r
            shape = (out_features, in_features + extra) if self.cat_out else (out_features + extra, in_features)
            self.register_buffer("storage", weight.new_zeros(shape), persistent=False)
            self.weight.copy_(weight)
        else:
            self.register_buffer("storage", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        if r:
            a = torch.empty(len(splits) * r, in_features, device=weight.device, dtype=torch.float32)
            for chunk in a.split(r):  # peft's default init: kaiming-uniform A, zero B
                nn.init.kaiming_uniform_(chunk, a=math.sqrt(5))
            self.lora_A = nn.Parameter(a)
            self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=weight.device, dtype=torch.float32))
            self.sync_storage()

    @property
    def weight(self) -> Tensor:
        """The frozen base weight (a view of the storage when ``stored``)."""
        if not self.stored:
            return self.storage
        return self.storage[:, : self.in_features] if self.cat_out else self.storage[: self.out_features]

    def lora_weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``A`` and the scaled block-diagonal ``B``, in the compute dtype (differentiable)."""
        b = torch.block_diag(*self.lora_B.split(self.splits, 0)) if len(self.splits) > 1 else self.lora_B
        return self.lora_A.to(dtype), (b * self.scaling).to(dtype)

    @torch.no_grad()
    def sync_storage(self) -> None:
        """Copy the current adapter into the storage (no-op without one)."""
        if not self.stored:
            return
        a, b = self.lora_weights(self.storage.dtype)
        # through .data: the storage is saved for backward; a tracked in-place write would make a
        # forward-forward-backward sequence fail the version check although nothing changed
        if self.cat_out:
            self.storage.data[:, self.in_features :].copy_(b)
        else:
            self.storage.data[self.out_features :].copy_(a)

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        if not self.r:
            y = F.linear(x2, self.storage, self.bias)
        else:
            if self.sync_on_call and not torch.compiler.is_compiling():
                self.sync_storage()
            a, b = self.lora_weights(x.dtype)
            y = _lora_linear(x2, self.storage, self.bias, a, b, self.cat_in, self.cat_out, self.stored, self.backend)
        return y.view(*x.shape[:-1], y.shape[-1])


def _gather(linears: list[nn.Module]) -> tuple[Tensor, Tensor | None, list[int]]:
    """The weights and biases of linears that share an input, stacked (one linear's: not copied)."""
    bases = [_base(m) for m in linears]
    has_bias = [m.bias is not None for m in bases]
    if any(has_bias) and not all(has_bias):
        raise NotImplementedError("mixed bias/no-bias linears cannot be stacked")
    splits = [m.weight.shape[0] for m in bases]
    if len(bases) == 1:
        bias = bases[0].bias.detach() if has_bias[0] else None
        return bases[0].weight.detach(), bias, splits
    weight = torch.cat([m.weight.detach() for m in bases], 0)
    bias = torch.cat([m.bias.detach() for m in bases], 0) if all(has_bias) else None
    return weight, bias, splits


def _share(linears: list[nn.Module], fused: FusedLoRALinear) -> None:
    """Make the original linears' weights views of the fused ones: the two models share memory.
    With a weight storage those views are strided (not contiguous): the original model still runs,
    but saving it needs contiguous copies (``save_pretrained`` refuses strided views)."""
    start = 0
    for m, n in zip([_base(m) for m in linears], fused.splits):
        m.weight.data = fused.weight[start : start + n]
        if fused.bias is not None:
            m.bias.data = fused.bias[start : start + n]
        start += n


def _copy_peft_adapter(fused: FusedLoRALinear, linears: list[nn.Module], adapter: str) -> None:
    """Load a peft LoRA adapter (same r and scaling everywhere) into a fused linear."""
    a = [m.lora_A[adapter].weight for m in linears]
    b = [m.lora_B[adapter].weight for m in linears]
    scalings = {float(m.scaling[adapter]) for m in linears}
    if len(scalings) != 1 or any(x.shape[0] != fused.r for x in a):
        raise ValueError("the peft adapter must use one r and one scaling on all linears")
    with torch.no_grad():
        fused.lora_A.copy_(torch.cat(a, 0))
        fused.lora_B.copy_(torch.cat(b, 0))
    fused.scaling = scalings.pop()
    fused.sync_storage()


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _native_gqa_ok(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a fused SDPA kernel takes grouped K/V directly (else K/V are repeated per head)."""
    if device.type != "cuda":
        return True
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q = torch.randn(1, 4, 128, 64, device=device, dtype=dtype)
        k = torch.randn(1, 2, 128, 64, device=device, dtype=dtype)
        fast = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
        with sdpa_kernel(fast):
            F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
        return True
    except Exception:
        return False


class _FusedLayer(nn.Module):
    """One decoder layer: pre-norm attention and SwiGLU MLP, with fused LoRA linears."""

    def __init__(self, layer: nn.Module, config: Any, r: int, alpha: float, native_gqa: bool, options: dict):
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.native_gqa = native_gqa
        self.swiglu = options["swiglu"]
        self.eps = float(layer.input_layernorm.variance_epsilon)
        self.register_buffer("ln1", layer.input_layernorm.weight.detach(), persistent=False)
        self.register_buffer("ln2", layer.post_attention_layernorm.weight.detach(), persistent=False)
        kw = {"backend": options["backend"], "stored": options["stored"]}
        for name, linears in (
            ("qkv", [attn.q_proj, attn.k_proj, attn.v_proj]),
            ("o", [attn.o_proj]),
            ("gate_up", [mlp.gate_proj, mlp.up_proj]),
            ("down", [mlp.down_proj]),
        ):
            fused = FusedLoRALinear(*_gather(linears), r, alpha, **kw)
            fused.sync_on_call = False  # the router syncs every linear once per forward
            _share(linears, fused)
            setattr(self, name, fused)

    def fused_linears(self) -> list[FusedLoRALinear]:
        return [self.qkv, self.o, self.gate_up, self.down]

    def load_peft(self, layer: nn.Module, adapter: str) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        _copy_peft_adapter(self.qkv, [attn.q_proj, attn.k_proj, attn.v_proj], adapter)
        _copy_peft_adapter(self.o, [attn.o_proj], adapter)
        _copy_peft_adapter(self.gate_up, [mlp.gate_proj, mlp.up_proj], adapter)
        _copy_peft_adapter(self.down, [mlp.down_proj], adapter)

    def _attention(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None) -> Tensor:
        bsz, seq, _ = x.shape
        nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([nh * hd, nkv * hd, nkv * hd], -1)
        q = _rotate(q.view(bsz, seq, nh, hd).transpose(1, 2), cos, sin)
        k = _rotate(k.view(bsz, seq, nkv, hd).transpose(1, 2), cos, sin)
        v = v.view(bsz, seq, nkv, hd).transpose(1, 2)
        if mask is None and self.native_gqa:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=nh != nkv)
        else:
            k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.o(out.transpose(1, 2).reshape(bsz, seq, nh * hd))

    def _mlp(self, x: Tensor) -> Tensor:
        gu = self.gate_up(x)
        d = self.down
        if not d.r or self.swiglu == "graph":  # element-wise SwiGLU left to the caller's compiler to fuse
            return d(_swiglu(gu))
        a, b = d.lora_weights(x.dtype)
        gu2 = gu.reshape(-1, gu.shape[-1])
        compiled = self.swiglu == "op-compiled"
        y = _swiglu_down(gu2, d.storage, d.bias, a, b, d.cat_in, d.cat_out, d.stored, d.backend, compiled)
        return y.view(*x.shape[:-1], y.shape[-1])

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None) -> Tensor:
        h = h + self._attention(_rms_norm(h, self.ln1, self.eps), cos, sin, mask)
        return h + self._mlp(_rms_norm(h, self.ln2, self.eps))


class _Output:
    """Minimal stand-in for transformers' ``BaseModelOutputWithPast``."""

    def __init__(self, last_hidden_state: Tensor):
        self.last_hidden_state = last_hidden_state


class FusedLoRARouter(nn.Module):
    """A Qwen2/Llama causal LM (or a peft LoRA wrapper of one) rebuilt for fast LoRA training.

    ``r``/``alpha``: LoRA rank and alpha on all linears (``r=0``: no adapter). A peft model's
    active adapter is copied in (same results as peft). ``checkpoint_layers``: recompute the first
    N layers in backward (saves memory, costs about a third of their time).
    ``require_input_grad``: make the embeddings require grad, so that a frozen model without LoRA
    still runs a backward (a benchmark baseline only). ``backend``: ``"op"`` (torch.library custom
    ops; required under torch.compile) or ``"function"`` (autograd.Function; eager only).
    ``stored_weights``: keep each base weight in a storage with room for the adapter, so the
    concatenated GEMMs need no per-call copy of ``W`` (see :class:`FusedLoRALinear`; the forward
    syncs the adapter in). The original model's linears become views of the fused weights (no
    extra memory); with a storage these views are strided, so save the original model from a
    fresh load (or ``stored_weights=False``), not from the shared one.
    ``swiglu``: where the SwiGLU element-wise work runs. ``"op"``: inside the fused
    down-projection op, which saves only ``[g | u]`` and recomputes ``h`` (eager element-wise ops); ``"op-compiled"``: the same, with the element-wise chains as small
    ``torch.compile``d kernels; ``"graph"``: outside the op, for a compiled layer to fuse (the
    layer then saves ``h`` as well: about 4 GB more on a 1.5B router at 8 x 1024 tokens).
    """

    def __init__(
        self,
        model: nn.Module,
        r: int = 16,
        alpha: float = 32.0,
        *,
        checkpoint_layers: int = 0,
        require_input_grad: bool = False,
        backend: str = "op",
        stored_weights: bool = True,
        swiglu: str = "op",
    ):
        super().__init__()
        if backend not in ("op", "function"):
            raise ValueError(f"backend must be 'op' or 'function', got {backend!r}")
        if swiglu not in ("op", "op-compiled", "graph"):
            raise ValueError(f"swiglu must be 'op', 'op-compiled' or 'graph', got {swiglu!r}")
        if swiglu == "op-compiled" and backend != "op":
            raise ValueError("swiglu='op-compiled' needs backend='op'")
        options = {"backend": backend, "stored": stored_weights, "swiglu": swiglu}
        adapter = getattr(model, "active_adapter", None) if hasattr(model, "peft_config") else None
        causal = model.get_base_model() if adapter is not None else model
        if adapter is not None:
            r = int(model.peft_config[adapter].r)
        config = causal.config
        if getattr(config, "hidden_act", "silu") != "silu":
            raise NotImplementedError(f"only SwiGLU (silu) MLPs are supported, got {config.hidden_act}")
        decoder = causal.get_decoder()
        for p in causal.parameters():
            p.requires_grad_(False)
        self.embed_tokens = decoder.embed_tokens
        self.rotary_emb = decoder.rotary_emb
        self.norm = decoder.norm
        self.lm_head = causal.get_output_embeddings()
        weight = self.embed_tokens.weight
        native_gqa = _native_gqa_ok(weight.device, weight.dtype)
        self.layers = nn.ModuleList(
            _FusedLayer(layer, config, r, alpha, native_gqa, options) for layer in decoder.layers
        )
        if adapter is not None:
            for fused, layer in zip(self.layers, decoder.layers):
                fused.load_peft(layer, adapter)
        self.checkpoint_layers = checkpoint_layers
        self.require_input_grad = require_input_grad

    # -- the causal-LM duck type used by roro_sdk.policy.scoring
    def get_decoder(self) -> FusedLoRARouter:
        return self

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def compile_layers(self, **kwargs: Any) -> FusedLoRARouter:
        """``torch.compile`` each layer (one graph, reused by all layers of the same shape)."""
        kwargs.setdefault("dynamic", False)
        for layer in self.layers:
            layer.compile(**kwargs)
        return self

    @staticmethod
    def _attention_mask(attention_mask: Tensor | None, seq: int) -> Tensor | None:
        """None when causal attention alone is exact (no padding, or right padding)."""
        if attention_mask is None:
            return None
        valid = attention_mask.bool()
        lengths = valid.sum(-1, keepdim=True)
        if bool((valid == (torch.arange(seq, device=valid.device) < lengths)).all()):
            return None  # right padding: causal attention never lets real tokens see the pads
        causal = torch.ones(seq, seq, dtype=torch.bool, device=valid.device).tril()
        mask = causal & valid[:, None, None, :]
        return mask | torch.eye(seq, dtype=torch.bool, device=valid.device)  # pads attend to themselves

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        **_: Any,
    ) -> _Output:
        # the one sync per forward, outside the (possibly compiled) layers: a buffer write inside a
        # compiled graph would copy W
        for layer in self.layers:
            for linear in layer.fused_linears():
                linear.sync_storage()
        h = self.embed_tokens(input_ids)
        if self.require_input_grad:
            h = h.detach().requires_grad_(True)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        cos, sin = self.rotary_emb(h, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        mask = self._attention_mask(attention_mask, input_ids.shape[1])
        for i, layer in enumerate(self.layers):
            if i < self.checkpoint_layers and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(layer, h, cos, sin, mask, use_reentrant=False)
            else:
                h = layer(h, cos, sin, mask)
        return _Output(self.norm(h))
