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

Status: an explicit opt-in. No user path runs it yet (``train_router`` trains peft's LoRA); it is
used by its tests and the throughput benchmark, and becomes the trainer's default only once a GPU
measurement shows it wins there. Importing this module (or ``roro_sdk.policy.FusedLoRARouter``)
registers the custom ops of :mod:`roro_sdk.policy.lora_ops` (``torch.ops.roro``); ``import
roro_sdk.policy`` does not. The modules are here, the fused computations in ``lora_ops``.
"""

from __future__ import annotations

import math
from typing import Any

from .._extras import require

require("torch", extra="train")  # one line naming the extra, not a torch traceback
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lora_ops import lora_linear, rms_norm, swiglu, swiglu_down


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
    with room for the adapter (``[W | sB]`` or ``[W ; A]``, see :mod:`roro_sdk.policy.lora_ops`), so the
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
            y = lora_linear(x2, self.storage, self.bias, a, b, self.cat_in, self.cat_out, self.stored, self.backend)
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
            return d(swiglu(gu))
        a, b = d.lora_weights(x.dtype)
        gu2 = gu.reshape(-1, gu.shape[-1])
        compiled = self.swiglu == "op-compiled"
        y = swiglu_down(gu2, d.storage, d.bias, a, b, d.cat_in, d.cat_out, d.stored, d.backend, compiled)
        return y.view(*x.shape[:-1], y.shape[-1])

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None) -> Tensor:
        h = h + self._attention(rms_norm(h, self.ln1, self.eps), cos, sin, mask)
        return h + self._mlp(rms_norm(h, self.ln2, self.eps))


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
