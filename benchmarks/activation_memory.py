"""Activation memory of the router's policy update, per decoder layer, without a GPU.

What a layer saves for backward decides the update's peak memory far more than the weights do
(1.5B shape, 8 x 1024 tokens: ~0.4-0.6 GB per layer against 0.09 GB of bf16 weights). This counts
the bytes a layer saves, by implementation, through ``torch.autograd.graph.saved_tensors_hooks``
(each storage counted once; the layer's input, which the previous layer keeps anyway, excluded).
It runs one layer of the chosen shape on CPU in bf16 (eager, and compiled with ``--compile``:
inductor's partitioner decides what a compiled layer saves and what it recomputes, on CPU as on
CUDA), so it predicts a GPU variant's memory before spending device time on it.

    python benchmarks/activation_memory.py [--shape 1.5b --seq-len 1024 --group-size 8 --compile]

Writes ``benchmarks/results/activation_memory_<shape>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _result import write_result  # noqa: E402 -- benchmarks/ is on sys.path when run as a script

from grpo_throughput import LORA_TARGETS, SHAPES, policy_module  # noqa: E402

VARIANTS = {  # name -> (FusedLoRARouter options, r); "peft" is the stock transformers + peft layer
    "fused": ({}, 16),
    "fused+swiglu": ({"swiglu": "graph"}, 16),
    "fused+swigluk": ({"swiglu": "op-compiled"}, 16),
    "fused+nobuf": ({"stored_weights": False}, 16),
    "nolora": ({}, 0),
}


def saved_bytes(fn, exclude: list) -> int:
    """Bytes of the distinct storages autograd saves while ``fn()`` runs (minus ``exclude``)."""
    import torch

    seen: dict[int, int] = {}
    skip = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            s = t.untyped_storage()
            if s.data_ptr() not in skip:
                seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    params = {p.untyped_storage().data_ptr() for p in fn.params}  # weights are not activations
    total = sum(n for ptr, n in seen.items() if ptr not in params)
    del out
    return total


def measure(name: str, args) -> dict:
    import torch
    import transformers

    hidden, _, heads, kv_heads, inter = SHAPES[args.shape]
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=1024, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=inter, max_position_embeddings=32768,
    )
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.requires_grad_(False)
    G, T = args.group_size, args.seq_len
    if name == "peft":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
        layer = model.get_base_model().model.layers[0]
        rotary = model.get_base_model().model.rotary_emb
        params = list(model.parameters())

        def run_layer(h, pos):
            cos, sin = rotary(h, pos)
            return layer(h, attention_mask=None, position_embeddings=(cos, sin), position_ids=pos)
    else:
        options, r = VARIANTS[name]
        router = policy_module().FusedLoRARouter(model, r=r, alpha=32.0, **options)
        for layer_ in router.layers:
            for linear in layer_.fused_linears():
                linear.sync_storage()
        layer = router.layers[0]
        if args.compile:
            layer.compile(dynamic=False)
        params = list(router.parameters()) + list(router.buffers())

        def run_layer(h, pos):
            cos, sin = router.rotary_emb(h, pos)
            return layer(h, cos.unsqueeze(1), sin.unsqueeze(1), None)

    h = torch.randn(G, T, hidden, dtype=torch.bfloat16, requires_grad=True)
    pos = torch.arange(T).unsqueeze(0)

    def fn():
        out = run_layer(h, pos)
        return out[0] if isinstance(out, tuple) else out

    fn.params = params
    t0 = time.perf_counter()
    if args.compile and name != "peft":
        fn()  # compile outside the count (compilation itself saves nothing we keep)
    total = saved_bytes(fn, exclude=[h])
    return {"variant": name + ("+compile" if args.compile and name != "peft" else ""), "saved_gb_per_layer": total / 2**30,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="1.5b")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--variants", default="peft,fused,fused+swiglu,fused+swigluk,fused+nobuf,nolora")
    p.add_argument("--compile", action="store_true", help="also count each fused variant's compiled layer")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import torch

    layers = SHAPES[args.shape][1]
    rows = []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        for compiled in ([False, True] if args.compile and name != "peft" else [False]):
            args_c = argparse.Namespace(**{**vars(args), "compile": compiled})
            row = measure(name, args_c)
            row["all_layers_gb"] = row["saved_gb_per_layer"] * layers
            rows.append(row)
            print(f"{row['variant']:24} {row['saved_gb_per_layer'] * 1024:.2f} MB/layer  {row['all_layers_gb']:.2f} GB "
                  f"for {layers} layers  ({row['seconds']:.0f}s)", flush=True)
    result = {"benchmark": "activation_memory", "shape": args.shape, "seq_len": args.seq_len,
              "group_size": args.group_size, "layers": layers, "dtype": "bfloat16", "torch": torch.__version__,
              "rows": rows}
    out = write_result(args.out or ROOT / "benchmarks" / "results" / f"activation_memory_{args.shape}.json", result)
    print(f"\n| variant | saved MB / layer | GB for {layers} layers |\n|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['saved_gb_per_layer'] * 1024:.1f} | {r['all_layers_gb']:.2f} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
