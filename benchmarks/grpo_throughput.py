"""GRPO policy-update throughput of the learned router: one-pass trajectory scoring vs per decision.

One timed step = forward over G trajectories of T tokens, action logits at D decisions each,
GRPO loss (PPO-clip + k3 KL), backward, AdamW step on the LoRA adapter. The base is a randomly
initialised Qwen2-shaped causal LM (`--shape tiny|0.5b|1.5b`). Old/reference log-probs are
inputs (in a GRPO loop they are computed once per rollout batch, without grad), so they are not
timed. Variants run side by side in ONE run, each in its own subprocess (an OOM, a compile error
or a hang loses only that variant; memory is measured per process):

    impl[+flag...]   impl: peft (transformers + peft LoRA), fused (roro_sdk.policy.lora),
                           nolora (fused path without adapter: frozen base, activation grads only)
                     flags: compile (torch.compile per decoder layer), perdec (one forward per
                            decision instead of one per trajectory), ckptN (recompute first N layers),
                            nocat (fused path: LoRA as a separate addmm, no GEMM concatenation),
                            nobuf (fused path: concatenate W per call instead of keeping it in a
                            storage with room for the adapter; the path measured before that),
                            swiglu (fused path: SwiGLU element-wise work outside the custom op,
                            for torch.compile to fuse), swigluk (inside the op, as small compiled
                            kernels), fn (autograd.Function instead of custom ops)

MFU counts useful FLOPs only: 4 x non-embedding params x tokens (forward + input gradient of a
frozen base; LoRA, attention and recompute are not counted), against a bf16 matmul peak measured
at start (8192^3) and against the 790 TFLOP/s reference of docs/DESIGN section 5.
For `perdec`, MFU uses the tokens actually processed (every prefix), while tokens/s and
decisions/s count trajectory tokens and decisions, so they compare directly with one-pass.

    python benchmarks/grpo_throughput.py --shape tiny --variants peft,fused,fused+compile,peft+perdec
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES = {
    # hidden, layers, heads, kv heads, intermediate (Qwen2-0.5B / Qwen2-1.5B shapes; vocab 151,936)
    "tiny": (64, 2, 4, 2, 128),
    "0.5b": (896, 24, 14, 2, 4864),
    "1.5b": (1536, 28, 12, 2, 8960),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
REFERENCE_PEAK_TFLOPS = 790.0


def policy_module():
    """``roro_sdk.policy``; if the package's ``__init__`` needs what this machine lacks (a GPU box
    with torch/transformers/peft only), import the subpackage without running it."""
    try:
        import roro_sdk.policy as policy
    except ImportError:
        import types

        for name in [n for n in sys.modules if n == "roro_sdk" or n.startswith("roro_sdk.")]:
            del sys.modules[name]
        stub = types.ModuleType("roro_sdk")
        stub.__path__ = [str(ROOT / "roro_sdk")]
        sys.modules["roro_sdk"] = stub
        import roro_sdk.policy as policy
    return policy


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--variants", default="peft,fused,fused+compile,nolora+compile,peft+perdec,fused+perdec")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--group-size", type=int, default=8, help="G trajectories per step")
    p.add_argument("--decision-every", type=int, default=64, help="one decision per this many tokens")
    p.add_argument("--num-actions", type=int, default=2, help="K")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--perdec-steps", type=int, default=None, help="timed steps for perdec variants (default: 2 on GPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="bf16 on GPU, fp32 on CPU by default")
    p.add_argument("--time-budget", type=float, default=None, help="seconds for the whole run (300 GPU, 3600 CPU)")
    p.add_argument("--min-variant-s", type=float, default=30.0, help="skip a variant when less time is left")
    p.add_argument("--out", default=None, help="JSON file, or folder for grpo_throughput_<device>.json")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--profile", default="", help="comma-separated variants to profile one extra step of "
                   "(torch.profiler; the top kernels by device time go into the JSON)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resolve(args):
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    name = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    dtype = name or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    return torch.device(device), dtype


# ----------------------------------------------------------------------------- workers
def measure_peak(args) -> dict:
    """Dense matmul rate: 8192^3 bf16 on GPU (10 timed after 3 warm-ups), 1024^3 on CPU."""
    import torch

    device, dtype = resolve(args)
    n = 8192 if device.type == "cuda" else 1024
    torch.manual_seed(0)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    reps = 10 if device.type == "cuda" else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    dt = (time.perf_counter() - t0) / reps
    out = {"variant": "peak", "ok": True, "n": n, "dtype": str(dtype), "tflops": 2 * n**3 / dt / 1e12}
    out["device_name"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return out


def parse_variant(spec: str) -> dict:
    parts = spec.split("+")
    impl, flags = parts[0], parts[1:]
    if impl not in ("peft", "fused", "nolora"):
        raise ValueError(f"unknown implementation {impl!r} in variant {spec!r}")
    out = {"impl": impl, "compile": False, "perdec": False, "ckpt": 0, "nocat": False, "fn": False,
           "nobuf": False, "swiglu": False, "swigluk": False}
    for f in flags:
        if f in ("compile", "perdec", "nocat", "fn", "nobuf", "swiglu", "swigluk"):
            out[f] = True
        elif f.startswith("ckpt") and f[4:].isdigit():
            out["ckpt"] = int(f[4:])
        else:
            raise ValueError(f"unknown flag {f!r} in variant {spec!r}")
    if out["swiglu"] and out["swigluk"]:
        raise ValueError(f"variant {spec!r}: pick one of the flags swiglu and swigluk")
    return out


def build_router(spec: dict, args, device, dtype):
    """A fresh randomly initialised router (same seed for every variant) and its trainable params."""
    import torch
    import transformers

    FusedLoRARouter = policy_module().FusedLoRARouter
    torch.manual_seed(0)
    hidden, layers, heads, kv_heads, inter = SHAPES[args.shape]
    config = transformers.Qwen2Config(
        vocab_size=151936, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=inter, max_position_embeddings=32768, tie_word_embeddings=True,
    )
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.requires_grad_(False)
    n_nonembed = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    if spec["impl"] == "peft":
        import peft

        if spec["ckpt"]:
            raise ValueError("ckptN is implemented for the fused path only")
        cfg = peft.LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
        router = peft.get_peft_model(model, cfg)
        if spec["compile"]:
            for layer in router.get_base_model().model.layers:
                layer.compile(dynamic=False)
    else:
        r = args.r if spec["impl"] == "fused" else 0
        router = FusedLoRARouter(
            model, r=r, alpha=args.alpha, checkpoint_layers=spec["ckpt"], require_input_grad=r == 0,
            backend="function" if spec["fn"] else "op",
            stored_weights=not (spec["nobuf"] or spec["nocat"]), swiglu="graph" if spec["swiglu"] else "op-compiled" if spec["swigluk"] else "op",
        )
        if spec["nocat"]:
            for m in router.modules():
                if hasattr(m, "cat_in"):
                    m.cat_in = m.cat_out = False
        if spec["compile"]:
            router.compile_layers()
    router.train()
    params = [p for p in router.parameters() if p.requires_grad]
    return router, params, n_nonembed


def profile_step(step, device, top: int = 25) -> list[dict]:
    """One more step under torch.profiler: the kernels that take the most device (or CPU) time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        dev_us = getattr(e, "self_device_time_total", None)
        if dev_us is None:
            dev_us = getattr(e, "self_cuda_time_total", 0)
        rows.append({"name": e.key[:120], "calls": e.count, "self_device_ms": dev_us / 1e3,
                     "self_cpu_ms": e.self_cpu_time_total / 1e3})
    key = "self_device_ms" if cuda else "self_cpu_ms"
    rows.sort(key=lambda r: -r[key])
    total = sum(r[key] for r in rows)
    for r in rows:
        r["share"] = r[key] / total if total else 0.0
    return rows[:top]


def run_variant(name: str, args) -> dict:
    import torch

    pol = policy_module()
    action_logits, chosen_log_probs, grpo_policy_loss = pol.action_logits, pol.chosen_log_probs, pol.grpo_policy_loss
    torch._dynamo.config.cache_size_limit = 64
    spec = parse_variant(name)
    device, dtype = resolve(args)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    t_build = time.perf_counter()
    router, params, n_nonembed = build_router(spec, args, device, dtype)
    log(f"{name}: built in {time.perf_counter() - t_build:.1f}s, {n_nonembed / 1e6:.1f}M non-embedding params, "
        f"{sum(p.numel() for p in params) / 1e6:.2f}M trainable")
    opt = torch.optim.AdamW(params, lr=1e-5, fused=cuda) if params else None

    G, T, K = args.group_size, args.seq_len, args.num_actions
    D = max(1, T // args.decision_every)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 151936, (G, T), generator=gen).to(device)
    positions = (torch.arange(1, D + 1) * (T // D) - 1).expand(G, D).contiguous().to(device)
    actions = torch.randint(0, K, (G, D), generator=gen).to(device)
    action_ids = torch.arange(100, 100 + K, device=device)
    # stand-ins for the rollout policy's and the reference policy's log-probs of the taken actions
    base = torch.full((G, D), -torch.log(torch.tensor(float(K))).item())
    old = (base + 0.05 * torch.randn(G, D, generator=gen)).to(device)
    ref = (base + 0.05 * torch.randn(G, D, generator=gen)).to(device)
    rewards = torch.randn(G, generator=gen)
    adv = ((rewards - rewards.mean()) / (rewards.std() + 1e-6)).to(device)

    grad_check = {}

    def step(check: bool = False):
        if spec["perdec"]:  # one forward per decision (all G prefixes of decision d in one batch)
            total = 0.0
            for d in range(D):
                p = int(positions[0, d])
                scores = action_logits(router, ids[:, : p + 1], None, positions[:, d : d + 1], action_ids)
                new = chosen_log_probs(scores, actions[:, d : d + 1])
                out = grpo_policy_loss(new, old[:, d : d + 1], ref[:, d : d + 1], adv)
                (out.loss / D).backward()
                total += out.loss.detach() / D
            loss = total
        else:
            scores = action_logits(router, ids, None, positions, action_ids)
            new = chosen_log_probs(scores, actions)
            loss = grpo_policy_loss(new, old, ref, adv, scores.mask).loss
            loss.backward()
            loss = loss.detach()
        if check:  # a variant whose adapter gets no gradient measures nothing useful
            grads = [p.grad for p in params]
            grad_check["lora_grads_missing"] = sum(g is None for g in grads)
            norm = sum(float(g.float().pow(2).sum()) for g in grads if g is not None) ** 0.5
            grad_check["lora_grad_norm"] = norm
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss

    steps = args.steps
    if spec["perdec"]:
        steps = args.perdec_steps or (2 if cuda else args.steps)
    t0 = time.perf_counter()
    for i in range(args.warmup if not spec["perdec"] else 1):
        loss = step(check=i == 0)
        sync()
        log(f"{name}: warm-up step {i} {time.perf_counter() - t0:.1f}s loss {float(loss):.4f}")
    warmup_s = time.perf_counter() - t0
    peak_warm = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    step_s = times[len(times) // 2]

    processed = G * int((positions[0] + 1).sum()) if spec["perdec"] else G * T
    flops = 4 * n_nonembed * processed
    res = {
        "variant": name, "ok": True, **spec, "steps": steps, "step_s_median": step_s, "step_s_all": times,
        "warmup_s": warmup_s, "tokens_per_s": G * T / step_s, "processed_tokens_per_s": processed / step_s,
        "decisions_per_s": G * D / step_s, "achieved_tflops": flops / step_s / 1e12, "loss": float(loss),
        "loss_finite": bool(torch.isfinite(torch.tensor(float(loss)))), "n_nonembed": n_nonembed,
        "decisions_per_seq": D, "processed_tokens_per_step": processed, **grad_check,
    }
    if params:
        norm = grad_check.get("lora_grad_norm", 0.0)
        res["grad_ok"] = grad_check.get("lora_grads_missing", 1) == 0 and 0 < norm < float("inf")
    if cuda:
        res["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        res["peak_mem_gb_incl_warmup"] = max(peak_warm, res["peak_mem_gb"])
    else:
        res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if name in args.profile.split(","):  # after the memory readings: the profiler allocates too
        res["profile_top"] = profile_step(step, device)
    return res


# ----------------------------------------------------------------------------- orchestrator
def device_tag(name: str) -> str:
    low = name.lower()
    for chip in ("h200", "h100", "a100", "l40s", "a10g", "l4"):
        if chip in low:
            return chip
    return "".join(c if c.isalnum() else "_" for c in low).strip("_") or "gpu"


def run_worker(variant: str, argv: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", variant]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "ok": False, "error": f"timed out after {timeout:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"variant": variant, "ok": False, "error": f"worker exited with {proc.returncode} and no result"}


def fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def table(results: dict) -> str:
    peak = results.get("peak_tflops")
    cuda = results["device"] != "cpu"
    head = "| variant | step ms | tokens/s | decisions/s | MFU (measured peak) | MFU (790) | peak mem GB | note |"
    lines = [head, "|" + "---|" * 8]
    for r in results["variants"]:
        if not r.get("ok"):
            lines.append(f"| {r['variant']} | - | - | - | - | - | - | FAILED: {r.get('error', '')[:80]} |")
            continue
        mfu = r["achieved_tflops"] / peak if peak else None
        mfu790 = r["achieved_tflops"] / REFERENCE_PEAK_TFLOPS if cuda else None
        mem = r.get("peak_mem_gb", r.get("peak_rss_gb"))
        note = "RSS" if "peak_rss_gb" in r else ""
        if r.get("grad_ok") is False:
            note += " BROKEN: adapter got no gradient"
        if r.get("perdec"):
            ratio = r["processed_tokens_per_step"] / (r["tokens_per_s"] * r["step_s_median"])
            note += f" per-decision, {ratio:.1f}x tokens"
        lines.append(
            f"| {r['variant']} | {r['step_s_median'] * 1e3:.1f} | {r['tokens_per_s']:,.0f} | {r['decisions_per_s']:,.0f} | "
            f"{fmt(mfu and 100 * mfu, '{:.1f}%')} | {fmt(mfu790 and 100 * mfu790, '{:.1f}%')} | "
            f"{fmt(mem, '{:.2f}')} | {note.strip()} |"
        )
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        try:
            res = measure_peak(args) if args.worker == "peak" else run_variant(args.worker, args)
        except Exception as exc:  # report, don't crash: the orchestrator records the failure
            import traceback

            traceback.print_exc()
            res = {"variant": args.worker, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        print("RESULT " + json.dumps(res), flush=True)
        return

    import torch
    import transformers

    device, dtype = resolve(args)
    budget = args.time_budget or (300.0 if device.type == "cuda" else 3600.0)
    start = time.perf_counter()
    results = {
        "benchmark": "grpo_throughput", "device": device.type, "shape": args.shape, "seq_len": args.seq_len,
        "group_size": args.group_size, "decision_every": args.decision_every, "num_actions": args.num_actions,
        "lora_r": args.r, "lora_alpha": args.alpha, "dtype": str(dtype), "torch": torch.__version__,
        "transformers": transformers.__version__, "variants": [], "reference_peak_tflops": REFERENCE_PEAK_TFLOPS,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        import peft

        results["peft"] = peft.__version__
    except ImportError:
        results["peft"] = None
    tag = "cpu"
    if not args.no_peak:
        peak = run_worker("peak", argv, timeout=120)
        if peak.get("ok"):
            results["peak_tflops"] = peak["tflops"]
            results["device_name"] = peak["device_name"]
            tag = device_tag(peak["device_name"]) if device.type == "cuda" else "cpu"
            log(f"matmul peak {peak['tflops']:.1f} TFLOP/s on {peak['device_name']}")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results"
    if out.suffix != ".json":
        out = out / f"grpo_throughput_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        left = budget - (time.perf_counter() - start)
        if left < args.min_variant_s:
            skipped = {"variant": variant, "ok": False, "error": f"skipped: {left:.0f}s of budget left"}
            results["variants"].append(skipped)
            continue
        log(f"--- {variant} ({left:.0f}s of budget left)")
        t = time.perf_counter()
        res = run_worker(variant, argv, timeout=left)
        res["wall_s"] = time.perf_counter() - t
        results["variants"].append(res)
        log(f"{variant}: {'ok' if res.get('ok') else res.get('error')} in {res['wall_s']:.0f}s")
        out.write_text(json.dumps(results, indent=2))  # after every variant: a later crash loses nothing
    results["total_s"] = time.perf_counter() - start
    out.write_text(json.dumps(results, indent=2))
    print(f"\nGRPO update, shape {args.shape}, G={args.group_size} x {args.seq_len} tokens, "
          f"{max(1, args.seq_len // args.decision_every)} decisions/seq, LoRA r={args.r}, {dtype}, "
          f"{results.get('device_name', device.type)}, peak {fmt(results.get('peak_tflops'))} TFLOP/s")
    print(table(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
