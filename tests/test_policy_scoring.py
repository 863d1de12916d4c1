"""One-pass action scoring == one forward per decision, the GRPO loss, and the fused LoRA path.

All on tiny randomly initialised Qwen2 models (hidden 64, 2 layers) in fp32, offline.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from roro_sdk.policy import (  # noqa: E402
    FusedLoRARouter,
    action_logits,
    action_logits_per_decision,
    chosen_log_probs,
    pad_decision_positions,
)
from roro_sdk.train.grpo import grpo_policy_loss  # noqa: E402  (the loss lives beside the training loop)

ACTIONS = [7, 11, 13]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_qwen2(tie: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.Qwen2Config(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
    )
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model.float().eval()


def with_lora(model, seed: int = 1):
    """A peft LoRA adapter with random (non-zero) A and B, so it changes the outputs."""
    torch.manual_seed(seed)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS, init_lora_weights=False)
    return peft.get_peft_model(model, cfg).eval()


def batch(seed: int = 2, left_pad: bool = False):
    """Three trajectories of different lengths, padded, with 3/1/2 decisions."""
    g = torch.Generator().manual_seed(seed)
    lengths = [30, 12, 21]
    seq = max(lengths)
    ids = torch.randint(0, 96, (3, seq), generator=g)
    mask = torch.zeros(3, seq, dtype=torch.long)
    positions = [[5, 17, 29], [11], [8, 20]]
    if left_pad:
        for b, n in enumerate(lengths):
            mask[b, seq - n :] = 1
        positions = [[p + seq - n for p in ps] for ps, n in zip(positions, lengths)]
    else:
        for b, n in enumerate(lengths):
            mask[b, :n] = 1
    return ids, mask, positions


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("left_pad", [False, True])
def test_one_pass_equals_per_decision(tie, lora, left_pad):
    model = tiny_qwen2(tie)
    if lora:
        model = with_lora(model)
    ids, mask, positions = batch(left_pad=left_pad)
    with torch.no_grad():
        one = action_logits(model, ids, mask, positions, ACTIONS)
        ref = action_logits_per_decision(model, ids, mask, positions, ACTIONS)
    assert one.logits.shape == (3, 3, len(ACTIONS))
    assert one.mask.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    assert one.flat().shape == (6, len(ACTIONS))
    assert (one.logits - ref.logits).abs().max().item() < 1e-4
    # and both agree with the full LM head of the transformers model at those positions
    with torch.no_grad():
        full = model(input_ids=ids[:1, :18], attention_mask=mask[:1, :18] if not left_pad else None).logits
    if not left_pad:
        assert torch.allclose(one.logits[0, 1], full[0, 17, ACTIONS], atol=1e-4)


def test_lora_changes_scores_and_unpadded_input_works():
    base = tiny_qwen2()
    ids, _, positions = batch()
    with torch.no_grad():
        before = action_logits(base, ids, None, positions, ACTIONS).logits
        after = action_logits(with_lora(base), ids, None, positions, ACTIONS).logits
    assert (before - after).abs().max().item() > 1e-3


def test_padded_tensor_positions_are_accepted():
    padded = pad_decision_positions([[1, 2], [3]])
    assert padded.tolist() == [[1, 2], [3, -1]]
    model = tiny_qwen2()
    ids, mask, positions = batch()
    with torch.no_grad():
        a = action_logits(model, ids, mask, pad_decision_positions(positions), ACTIONS)
        b = action_logits(model, ids, mask, positions, ACTIONS)
    assert torch.equal(a.logits, b.logits)


def _grpo_step_loss(model, ids, mask, positions):
    g = torch.Generator().manual_seed(3)
    scores = action_logits(model, ids, mask, positions, ACTIONS)
    dev = scores.logits.device
    actions = torch.randint(0, len(ACTIONS), scores.mask.shape, generator=g).to(dev)
    new = chosen_log_probs(scores, actions)
    old = (new + 0.05 * torch.randn(new.shape, generator=g).to(dev)).detach()
    ref = (new + 0.1 * torch.randn(new.shape, generator=g).to(dev)).detach()
    adv = torch.tensor([1.0, -0.5, -0.5], device=dev)
    return grpo_policy_loss(new, old, ref, adv, scores.mask, clip=0.2, kl_coef=0.04)


def test_loss_and_gradients_are_finite_and_reach_only_lora():
    model = with_lora(tiny_qwen2())
    model.train()
    ids, mask, positions = batch()
    out = _grpo_step_loss(model, ids, mask, positions)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    lora_grads = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    assert lora_grads and all(g is not None and torch.isfinite(g).all() for g in lora_grads.values())
    assert any(g.abs().sum() > 0 for g in lora_grads.values())
    for name, p in model.named_parameters():
        if "lora_" not in name:
            assert not p.requires_grad and p.grad is None, name


def test_grpo_loss_math():
    new = torch.log(torch.tensor([[0.5, 0.2], [0.4, 0.9]])).requires_grad_(True)
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([2.0, -1.0])
    # on-policy, ref == new: loss is -mean(A) over valid decisions, no KL, no clipping
    out = grpo_policy_loss(new, new.detach(), new.detach(), adv, mask)
    assert out.loss.item() == pytest.approx(-(2 + 2 - 1) / 3)
    assert out.kl.item() == pytest.approx(0.0) and out.clip_fraction.item() == 0.0
    out.loss.backward()
    assert new.grad[1, 1] == 0  # masked decision gets no gradient
    # ratio 2 with positive advantage is clipped at 1.2 (zero gradient); k3 KL is >= 0
    new2 = torch.log(torch.tensor([[0.8]])).requires_grad_(True)
    old2 = torch.log(torch.tensor([[0.4]]))
    out2 = grpo_policy_loss(new2, old2, torch.log(torch.tensor([[0.5]])), torch.tensor([1.0]), kl_coef=0.0)
    assert out2.loss.item() == pytest.approx(-1.2)
    assert out2.clip_fraction.item() == 1.0
    kl = grpo_policy_loss(new2, old2, torch.log(torch.tensor([[0.5]])), torch.tensor([1.0]), kl_coef=1.0).kl
    assert kl.item() == pytest.approx(0.5 / 0.8 - torch.log(torch.tensor(0.5 / 0.8)).item() - 1, rel=1e-5)
    assert grpo_policy_loss(new2, old2, None, torch.tensor([1.0])).kl.item() == 0.0


FUSED_OPTIONS = [  # (backend, stored_weights, swiglu)
    ("op", True, "op"),
    ("op", False, "op"),
    ("op", True, "graph"),
    ("op", True, "op-compiled"),
    ("function", True, "op"),
    ("function", False, "graph"),
]


@pytest.mark.parametrize("options", FUSED_OPTIONS, ids=lambda o: "-".join(map(str, o)))
@pytest.mark.parametrize("left_pad", [False, True])
def test_fused_lora_matches_peft(left_pad, options):
    """The fused LoRA router gives peft's scores and peft's adapter gradients, on every path."""
    backend, stored, swiglu = options
    peft_model = with_lora(tiny_qwen2(tie=False))
    ids, mask, positions = batch(left_pad=left_pad)
    ref_loss = _grpo_step_loss(peft_model, ids, mask, positions).loss
    ref_loss.backward()
    layer0 = peft_model.get_base_model().model.layers[0]
    ref_grads = {
        "q_B": layer0.self_attn.q_proj.lora_B["default"].weight.grad.clone(),
        "v_A": layer0.self_attn.v_proj.lora_A["default"].weight.grad.clone(),
        "down_A": layer0.mlp.down_proj.lora_A["default"].weight.grad.clone(),
        "up_B": layer0.mlp.up_proj.lora_B["default"].weight.grad.clone(),
    }
    with torch.no_grad():
        ref_scores = action_logits(peft_model, ids, mask, positions, ACTIONS).logits

    fused = FusedLoRARouter(peft_model, backend=backend, stored_weights=stored, swiglu=swiglu)
    with torch.no_grad():
        scores = action_logits(fused, ids, mask, positions, ACTIONS).logits
        per_dec = action_logits_per_decision(fused, ids, mask, positions, ACTIONS).logits
    assert (scores - ref_scores).abs().max().item() < 1e-4
    assert (per_dec - ref_scores).abs().max().item() < 1e-4

    loss = _grpo_step_loss(fused, ids, mask, positions).loss
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    loss.backward()
    f0 = fused.layers[0]
    q, kv, inter = 64, 32, 128
    got = {
        "q_B": f0.qkv.lora_B.grad[:q],
        "v_A": f0.qkv.lora_A.grad[8:12],
        "down_A": f0.down.lora_A.grad,
        "up_B": f0.gate_up.lora_B.grad[inter:],
    }
    assert kv == 32
    for name in ref_grads:
        assert torch.allclose(got[name], ref_grads[name], atol=1e-5, rtol=1e-4), name
    assert all(p.grad is not None for p in fused.lora_parameters())
    assert {n for n, p in fused.named_parameters() if p.requires_grad} == {
        n for n, _ in fused.named_parameters() if "lora_" in n
    }


def test_fused_weight_storage_is_shared_and_follows_optimizer_steps():
    """The base weights are stored once (the transformers model keeps working on views of the
    fused storage), and an optimizer step on the adapter is what the next forward computes."""
    base = tiny_qwen2(tie=False)
    ids, mask, positions = batch()
    with torch.no_grad():
        want_base = action_logits(base, ids, mask, positions, ACTIONS).logits
    fused = FusedLoRARouter(base, r=4, alpha=8)
    plain = FusedLoRARouter(tiny_qwen2(tie=False), r=4, alpha=8, stored_weights=False)
    plain.load_state_dict(fused.state_dict())
    layer0, f0 = base.model.layers[0], fused.layers[0]
    assert f0.qkv.stored and f0.down.stored
    for linear, fused_linear in ((layer0.self_attn.q_proj, f0.qkv), (layer0.mlp.down_proj, f0.down)):
        assert linear.weight.untyped_storage().data_ptr() == fused_linear.storage.untyped_storage().data_ptr()
    with torch.no_grad():  # B = 0: the base model still gives its own scores through the views
        assert (action_logits(base, ids, mask, positions, ACTIONS).logits - want_base).abs().max() < 1e-5
    # fused AdamW updates parameters without bumping their version counters: the storage must follow
    opts = [torch.optim.AdamW(m.lora_parameters(), lr=1e-2, fused=True) for m in (fused, plain)]
    for _ in range(3):
        losses = []
        for model, opt in zip((fused, plain), opts):
            loss = _grpo_step_loss(model, ids, mask, positions).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach())
        assert torch.allclose(losses[0], losses[1], atol=1e-5)
    with torch.no_grad():
        got = action_logits(fused, ids, mask, positions, ACTIONS).logits
        want = action_logits(plain, ids, mask, positions, ACTIONS).logits
    assert (got - want).abs().max() < 1e-5 and (got - want_base).abs().max() > 1e-3
    # two forwards before one backward (nothing changed in between): the storage is not rewritten
    loss = _grpo_step_loss(fused, ids, mask, positions).loss + _grpo_step_loss(fused, ids, mask, positions).loss
    loss.backward()


@pytest.mark.parametrize("shape", [(32, 8), (8, 32)], ids=["wide-out", "narrow-out"])
def test_standalone_fused_linear_matches_the_unstored_path(shape):
    """A FusedLoRALinear used on its own (no router around it) syncs its storage itself."""
    from roro_sdk.policy.lora import FusedLoRALinear

    torch.manual_seed(0)
    out_f, in_f = shape
    weight = torch.randn(out_f, in_f)
    stored = FusedLoRALinear(weight, None, [out_f], r=4, alpha=8)
    plain = FusedLoRALinear(weight, None, [out_f], r=4, alpha=8, stored=False)
    assert stored.stored and not plain.stored
    with torch.no_grad():
        stored.lora_B.normal_()
        plain.load_state_dict(stored.state_dict())
    results = []
    for m in (stored, plain):
        x = torch.randn(6, in_f, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y = m(x)
        y.pow(2).sum().backward()
        results.append((y.detach(), x.grad, m.lora_A.grad, m.lora_B.grad))
    for got, want in zip(*results):
        assert torch.allclose(got, want, atol=1e-5)


def test_fused_fresh_adapter_starts_at_base_and_checkpointing_matches():
    base = tiny_qwen2()
    ids, mask, positions = batch()
    with torch.no_grad():
        want = action_logits(base, ids, mask, positions, ACTIONS).logits
    fused = FusedLoRARouter(base, r=4, alpha=8)  # B = 0: the adapter starts as the identity
    with torch.no_grad():
        got = action_logits(fused, ids, mask, positions, ACTIONS).logits
    assert (got - want).abs().max().item() < 1e-4
    with torch.no_grad():
        for p in fused.lora_parameters():
            p.normal_(0, 0.05)
    plain = _grpo_step_loss(fused, ids, mask, positions).loss
    plain.backward()
    grads = [p.grad.clone() for p in fused.lora_parameters()]
    fused.zero_grad()
    fused.checkpoint_layers = 1
    ckpt = _grpo_step_loss(fused, ids, mask, positions).loss
    ckpt.backward()
    assert torch.allclose(plain, ckpt)
    for g, p in zip(grads, fused.lora_parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


@pytest.mark.skipif(os.environ.get("RORO_COMPILE_TESTS") != "1", reason="slow (torch.compile): set RORO_COMPILE_TESTS=1")
@pytest.mark.parametrize(
    "options",
    [{}, {"stored_weights": False}, {"swiglu": "graph"}, {"swiglu": "op-compiled"}],
    ids=["default", "nobuf", "swiglu-graph", "swiglu-op-compiled"],
)
def test_fused_lora_under_torch_compile_matches_eager(options):
    """Compiled layers give the eager scores and adapter gradients (on CUDA when there is one).

    Guards against a silent failure seen on torch 2.11 + CUDA: an autograd.Function inside the
    compiled layers lost its gradients (the adapter never trained), hence the custom-op backend.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids, mask, positions = batch()
    ids, mask = ids.to(device), mask.to(device)
    results = []
    for compiled in (False, True):
        fused = FusedLoRARouter(with_lora(tiny_qwen2(tie=False)).to(device), **options)
        if compiled:
            fused.compile_layers()
        losses = []
        for _ in range(2):  # the second call runs the already-compiled graphs
            fused.zero_grad()
            loss = _grpo_step_loss(fused, ids, mask, positions).loss
            loss.backward()
            losses.append(loss.detach())
        results.append((losses, [p.grad.clone() for p in fused.lora_parameters()]))
    if options.get("swiglu") == "op-compiled":  # the element-wise chains really run as compiled kernels
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _grpo_step_loss(fused, ids, mask, positions).loss.backward()
        eager_ops = {e.key for e in prof.key_averages()} & {"aten::silu", "aten::sigmoid"}
        assert not eager_ops, eager_ops
    (eager_losses, eager_grads), (comp_losses, comp_grads) = results
    assert torch.allclose(comp_losses[1], eager_losses[1], atol=1e-4)
    assert len(comp_grads) == len(eager_grads)
    for a, b in zip(comp_grads, eager_grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)
