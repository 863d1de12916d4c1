"""``roro train-router``: GRPO training of a LoRA router from a config file."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_set_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as overrides: the value is read as JSON (``0``, ``1e-4``, ``true``,
    ``null``, ``{"a": 1}``) and kept as a string when it is not JSON; a dotted key
    (``rewards.lambda_p``) names a field of a section (see :func:`~roro_sdk.train.grpo_config.apply_overrides`)."""
    from ..errors import TrainingConfigError

    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TrainingConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set rewards.lambda_p=0")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def cmd_train_router(args: argparse.Namespace) -> int:
    from .._cli_common import ray_from_args
    from .grpo import train_router
    from .grpo_config import load_grpo_config

    overrides = parse_set_overrides(args.set)
    if args.out:
        overrides["out_dir"] = args.out
    if args.resume:
        overrides["resume"] = True
    if args.overwrite:
        overrides["overwrite"] = True
    ray = ray_from_args(args)
    if ray is not None:
        overrides["ray"] = ray.model_dump()
    cfg = load_grpo_config(args.config, **overrides)
    keys = ("reward", "outcome", "process", "cost_norm", "accuracy", "large_share", "zero_adv_groups", "kl", "entropy", "seconds")

    def log(r: dict) -> None:
        extra = f"  judge_failures {r['judge_failures']}" if r.get("judge_failures") else ""
        print(f"update {r['update']:4d}  " + "  ".join(f"{k} {r[k]:.3f}" for k in keys) + extra, flush=True)

    result = train_router(cfg, log=log)
    if not result.updates_run:
        print(f"no update to run: the checkpoint in {cfg.out_dir} already holds all {cfg.updates} updates "
              "(raise updates with --set updates=N to train further)")
    print(f"router saved to {result.router_dir} (use it with --router policy:{result.router_dir})")
    if result.judge_usage is not None:
        u = result.judge_usage
        note = "" if u["priced"] else " (unpriced model: dollars unknown)"
        print(f"judge + rubricor: ${u['cost_usd']:.6f}, {u['input_tokens'] + u['output_tokens']} tokens{note}; "
              f"{result.judge_failures} rollouts skipped because the judge failed on them")
    if result.eval is not None:
        print("held-out: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.eval.items()))
    return 0


def add_commands(sub, common) -> None:
    p = sub.add_parser("train-router", help="train a LoRA policy router with GRPO (outcome + process + cost rewards)")
    p.add_argument("--config", default=None, help="YAML/JSON/TOML training config (see docs/training.md)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field (JSON values; section.field for nested ones, e.g. rewards.lambda_p=0), "
                        "repeatable")
    p.add_argument("--out", default=None, help="output folder (overrides out_dir); must be new or empty unless --resume "
                                               "or --overwrite")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh in the output folder, deleting an earlier "
                                                            "run's files there")
    from .._cli_common import add_ray_arguments

    add_ray_arguments(p)
    p.set_defaults(func=cmd_train_router)
