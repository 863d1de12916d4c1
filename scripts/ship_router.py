"""Choose the router that ships as ``policy:default`` and export it into the package.

    python scripts/ship_router.py --train-tree data/trees/qwen2.5-coder-0.5b-1.5b/gsm_symbolic-train \
        --candidate "roro s0=runs/real/roro-s0" --candidate "roro s1=runs/real/roro-s1" ... \
        --heldout docs/reports/real/results.json --out roro_sdk/data/routers/default

The choice never looks at the held-out tree: each candidate (a ``roro train-router`` output
folder) is replayed on its *training* tree and the one with the highest APGR there (ties: lower
large-token share) ships. Its held-out numbers (from ``scripts/real_eval.py``'s JSON, under the
same label) go into the provenance with the data, config, seed and commit it came from.
With ``--incumbent policy:default`` the router that ships now is replayed beside them, and it is
replaced only by a candidate with a higher APGR there (no export otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-tree", required=True)
    ap.add_argument("--candidate", action="append", required=True, help="LABEL=RUN_DIR (LABEL as in the held-out JSON)")
    ap.add_argument("--heldout", required=True, help="results JSON of scripts/real_eval.py on the held-out tree")
    ap.add_argument("--out", default="roro_sdk/data/routers/default")
    ap.add_argument("--incumbent", default=None, help="router spec of the router that ships now (e.g. policy:default): "
                    "kept unless a candidate beats its training-tree APGR")
    args = ap.parse_args()

    from roro_sdk.eval import evaluate
    from roro_sdk.policy.router import PolicyRouter
    from roro_sdk.policy.shipping import export_router
    from roro_sdk.tree import RoutingTree

    if args.incumbent and any(c.split("=", 1)[0] == "incumbent" for c in args.candidate):
        ap.error("'incumbent' names the router that ships now (--incumbent); give the candidate another label")
    tree = RoutingTree(args.train_tree)
    runs = dict(c.split("=", 1) for c in args.candidate)
    routers = ["all-small", "all-large"]
    for label, run in runs.items():
        r = PolicyRouter.load(Path(run) / "router")
        r.name = label  # one curve per candidate
        routers.append((label, r))
    if args.incumbent:
        from roro_sdk.routers import make_router

        incumbent = make_router(args.incumbent)  # loaded before the export may replace its files
        incumbent.name = "incumbent"
        routers.append(("incumbent", incumbent))
    # the problems the candidates were trained on (the tree may have grown since), never others
    n_train = min(json.loads((Path(r) / "config.json").read_text()).get("train_queries", 10**9) for r in runs.values())
    res = evaluate(tree.pool(), tree.queries[:n_train], routers, max_steps=tree.manifest.recording.max_steps, progress=False,
                   dataset=f"tree:{tree.folder.name} (training)")
    curves = {c.family: c for c in res.analysis.curves}
    scores = {}
    for run_ in res.runs:
        if run_.label in runs or run_.label == "incumbent":
            c = curves.get(run_.family)
            apgr = (c.share or {}).get("apgr") if c is not None and len(c.points) == 1 else None
            scores[run_.label] = {"accuracy": run_.accuracy, "large_token_share": run_.large_token_share, "apgr": apgr}
    def rank(k: str) -> tuple[float, float]:
        return scores[k]["apgr"] if scores[k]["apgr"] is not None else -1.0, -scores[k]["large_token_share"]

    best = max((k for k in scores if k != "incumbent"), key=rank)
    if "incumbent" in scores and rank("incumbent") >= rank(best):
        _table(scores, "incumbent")
        print(f"the incumbent ({args.incumbent}) keeps shipping: no candidate beats its APGR on the training tree")
        return 0
    heldout = json.loads(Path(args.heldout).read_text())
    run = Path(runs[best])
    config = json.loads((run / "config.json").read_text())
    provenance = {
        "label": best,
        "run": str(run),
        "seed": config.get("seed"),
        "config": config,
        "training_tree": {"path": args.train_tree, "queries": min(len(tree.queries), config.get("train_queries", 10**9)),
                          "files_at_training": tree.manifest.files, "tree_commit": _git("log", "-1", "--format=%h", "--",
                                                                                         str(tree.folder / "manifest.json"))},
        "selection": {"rule": "highest APGR on the training tree (never the held-out tree)"
                      + (f", above the incumbent's ({args.incumbent})" if args.incumbent else ""), "candidates": scores},
        "heldout": {"tree": heldout.get("tree"), "queries": heldout.get("queries"),
                    "metrics": heldout.get("routers", {}).get(best)},
        "export_commit": _git("rev-parse", "HEAD"),
        # the run does not record its commit; the last commit before its router was written is the best bound
        "training_commit": _git("log", "-1", "--format=%H", f"--before={int((run / 'router' / 'router.json').stat().st_mtime)}"),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dst = export_router(run / "router", args.out, provenance=provenance)
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    _table(scores, best)
    print(f"exported {best} ({run}) to {dst}: {size / 1e6:.2f} MB")
    return 0


def _table(scores: dict, ships: str) -> None:
    print(f"{'candidate':<14} {'train acc':>9} {'large tok':>9} {'APGR':>6}")
    for label, s in scores.items():
        apgr = "-" if s["apgr"] is None else f"{s['apgr']:.3f}"
        print(f"{label:<14} {s['accuracy']:>9.1%} {s['large_token_share']:>9.1%} {apgr:>6}{'  <- ships' if label == ships else ''}")


if __name__ == "__main__":
    raise SystemExit(main())
