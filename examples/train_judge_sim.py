"""Stage 1 and 2 of RoRo, offline, in about a minute on a laptop CPU: collect routed trajectories
on the sim bench, build preference pairs, train a Judge and a Rubricor (tiny random local models)
by alternating optimisation, and use the trained Judge as a process-reward model.

The sim bench is a TEST BENCH: its ``careful`` preset makes a trajectory correct iff the large
model wrote every hard step, so the preferences follow a known rule and learning is checkable.
For real work, collect on your own pool and load real models (``LocalJudge.from_pretrained``), or
use an API Judge (``examples/configs/judge_openai.yaml``).

    python examples/train_judge_sim.py [--queries 48] [--out runs/judge_sim] [--resume]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from roro_sdk.train import (  # noqa: E402
    AlternatingTrainer,
    JudgeTrainingConfig,
    sim_demo_labeler,
    sim_preference_data,
    tiny_judge_and_rubricor,
    write_pairs,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue the run already in --out/run")
    ap.add_argument("--out", default="runs/judge_sim")
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a busy 2-core machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. trajectories from four routing policies, then outcome and cost pairs (balanced)
    data = sim_preference_data(args.queries, seed=args.seed, out=out / "trajectories.jsonl")
    write_pairs(out / "pairs.jsonl", data.pairs)
    print(f"{len(data.trajectories)} trajectories in pairs, {len(data.pairs)} pairs: "
          + ", ".join(f"{k} {s.n}" for k, s in data.stats.per_kind.items()))

    # 2. alternating optimisation: Judge phase (Bradley-Terry + format + calibration), then Rubricor phase (GRPO)
    judge, rubricor = tiny_judge_and_rubricor(data, seed=args.seed)
    cfg = JudgeTrainingConfig.tiny(rounds=args.rounds, seed=args.seed)
    trainer = AlternatingTrainer(judge, rubricor, data, cfg, out_dir=out / "run", criterion_labeler=sim_demo_labeler,
                                 resume=args.resume)
    hist = trainer.train()

    first, last = hist[0]["heldout"], hist[-1]["heldout"]
    print("\nheld-out pairwise accuracy (queries never trained on)")
    print(f"{'kind':<9}{'n':>4}{'before':>9}{'after':>9}")
    for kind, acc in last["accuracy"].items():
        print(f"{kind:<9}{last['n'][kind]:>4}{first['accuracy'][kind]:>9.1%}{acc:>9.1%}")
    for h in hist[1:]:
        r = h["rubricor"]
        print(f"round {h['round']}: Rubricor mean reward {r['mean_reward_before']:.3f} -> {r['mean_reward_after']:.3f}")

    # 3. the trained pair in use: a rubric for a held-out query, and process rewards for its trajectories
    qid = trainer.heldout_ids[0]
    query = trainer.queries[qid]
    rubric = rubricor.rubric(query)
    print(f"\nrubric for held-out query {qid}:\n{rubric.render()}")
    trajs = [t for t in data.trajectories.values() if t.query.id == qid]
    for res, t in zip(judge.score_many([(query, rubric, t) for t in trajs]), trajs):
        print(f"  {t.router:<11} correct={t.correct!s:<5} cost=${t.cost_usd:.5f}  judge score {res.score:.3f}")
    print(f"\nadapters (safetensors) and state.json under {out / 'run'}")


if __name__ == "__main__":
    main()
