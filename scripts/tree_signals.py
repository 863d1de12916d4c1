"""Which signals a router has for free tell the problems apart? Zero model calls, on recorded trees.

For every problem whose tree holds every plan (a plan fixes the model of each free step), this
reads the outcome of each plan and a few signals a router could use without a side call: the
question's length and count of numbers, and each model's first step (its mean and lowest token
logprob, its length in tokens), which the tree records. It prints, for each signal, the AUC with
which it separates the problems where a target holds (e.g. "all-small is right") from the rest:
0.5 is no information, 1.0 (or 0.0) a perfect split. Then the token-share bounds
(``roro_sdk.tree.token_share``) over the same problems.

    python scripts/tree_signals.py data/trees/qwen2.5-coder-0.5b-1.5b/gsm_symbolic-train \\
        data/trees/qwen2.5-coder-0.5b-1.5b/gsm_symbolic-test --json docs/reports/real/signals.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from pathlib import Path


def numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:\.\d+)?", text.replace(",", "")))


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a positive's signal > a negative's), ties counted half: the Mann-Whitney AUC."""
    if not pos or not neg:
        return None
    return sum((x > y) + 0.5 * (x == y) for x in pos for y in neg) / (len(pos) * len(neg))


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", help="tree folders of one pool (their problems are pooled)")
    ap.add_argument("--share-cap", type=float, default=0.3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from roro_sdk.tree import RoutingTree
    from roro_sdk.tree.paths import step_key
    from roro_sdk.tree.token_share import best_plan_mix, best_under_share, complete_plans, plan_label, plans_of

    rows, all_trees, free, names, large = [], [], None, None, None
    for folder in args.trees:
        tree = RoutingTree(folder)
        pool = tree.manifest.make_pool()
        if names is not None and (list(pool.names), tree.free_steps) != (names, free):
            raise SystemExit(f"{folder}: another pool or depth than {args.trees[0]}; give trees of one pool")
        names, free, large = list(pool.names), tree.free_steps, pool.large
        plans = plans_of(names, free)
        for qt, plan_leaves in complete_plans(tree.query_trees(pool=pool), plans):
            leaves = {plan_label(p): leaf for p, leaf in zip(plans, plan_leaves)}
            all_trees.append(qt)
            q = qt.query.question
            sig: dict[str, float] = {"question chars": len(q), "question numbers": len(numbers(q))}
            for m in names:
                r = tree.store.lookup(step_key(pool, tree.store, m, q, ()))["r"]
                lp = r.get("token_logprobs")
                if not lp:
                    raise SystemExit(f"{folder}: the tree holds no token logprobs for {m}'s first step of {qt.query.id}")
                sig[f"{m} step 1 mean logprob"] = statistics.fmean(lp)
                sig[f"{m} step 1 min logprob"] = min(lp)
                sig[f"{m} step 1 tokens"] = len(lp)
            rows.append({"query": qt.query.id, "right": {k: bool(v.correct) for k, v in leaves.items()}, "signals": sig})
    if not rows:
        raise SystemExit("no problem holds every plan in these trees")
    small = pool.small
    all_small = plan_label([small] * free)
    targets = {f"{all_small} right": lambda r: r["right"][all_small]}
    for p in plans:  # for each plan that uses the large model: it is right where all-small is not
        lab = plan_label(p)
        if lab != all_small:
            targets[f"{lab} right, {all_small} wrong"] = lambda r, lab=lab: r["right"][lab] and not r["right"][all_small]
    table = {}
    for tname, hit in targets.items():
        table[tname] = {"positives": sum(bool(hit(r)) for r in rows), "auc": {}}
        for s in rows[0]["signals"]:
            table[tname]["auc"][s] = auc([r["signals"][s] for r in rows if hit(r)], [r["signals"][s] for r in rows if not hit(r)])
    kw = dict(names=names, free_steps=free)
    knows = best_under_share(all_trees, large, args.share_cap, **kw)
    blind = best_plan_mix(all_trees, large, args.share_cap, **kw)
    sig_names = list(rows[0]["signals"])
    keys = [f"T{i}" for i in range(1, len(table) + 1)]
    print(f"{len(rows)} problems holding every plan. Targets:")
    for k, (tname, t) in zip(keys, table.items()):
        print(f"  {k}: {tname} ({t['positives']} problems)")
    print("AUC of each signal for each target (0.5: no information; 0.3 or 0.7 is a weak signal):")
    width = max(len(s) for s in sig_names) + 2
    print(f"  {'signal':<{width}}" + "".join(f"{k:>7}" for k in keys))
    for s in sig_names:
        vals = [t["auc"][s] for t in table.values()]
        print(f"  {s:<{width}}" + "".join(f"{'n/a' if a is None else f'{a:.2f}':>7}" for a in vals))
    if knows is None:
        print(f"with {large} writing at most {args.share_cap:.0%} of output tokens: no routing fits")
    else:
        mix = "no plan mix fits" if blind is None else (
            f"{blind.accuracy:.1%} ({', '.join(f'{w:.2f} {p}' for p, w in blind.plans.items())})")
        print(f"with {large} writing at most {args.share_cap:.0%} of output tokens: best possible {knows.accuracy:.1%}; "
              f"best blind mix of plans {mix}")
    if args.json:
        from dataclasses import asdict

        out = {"trees": args.trees, "problems": len(rows), "targets": table, "share_cap": args.share_cap,
               "best_under_share": knows and asdict(knows), "best_plan_mix": blind and asdict(blind)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
