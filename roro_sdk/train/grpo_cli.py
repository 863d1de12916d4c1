"""``roro train-router``: GRPO training of a LoRA router from a config file."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_commands"]


def cmd_train_router(args: argparse.Namespace) -> int:
    from .grpo import train_router
    from .grpo_config import load_grpo_config

    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.out:
        overrides["out_dir"] = args.out
    cfg = load_grpo_config(args.config, **overrides)
    keys = ("reward", "outcome", "process", "cost_norm", "accuracy", "large_share", "zero_adv_groups", "kl", "entropy", "seconds")

    def log(r: dict) -> None:
        print(f"update {r['update']:4d}  " + "  ".join(f"{k} {r[k]:.3f}" for k in keys), flush=True)

    result = train_router(cfg, log=log)
    print(f"router saved to {result['router_dir']} (use it with --router policy:{result['router_dir']})")
    if "eval" in result:
        print("held-out: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result["eval"].items()))
    return 0


def add_commands(sub, common) -> None:
    p = sub.add_parser("train-router", help="train a LoRA policy router with GRPO (outcome + process + cost rewards)")
    p.add_argument("--config", default=None, help="YAML/JSON/TOML training config (see docs/training.md)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (JSON values), repeatable")
    p.add_argument("--out", default=None, help="output folder (overrides out_dir)")
    p.set_defaults(func=cmd_train_router)
