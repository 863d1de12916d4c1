"""``roro collect``, ``roro pairs`` and ``roro train-judge``: stage 1 and 2 of the method.

Registered through ``roro_sdk.cli._COMMAND_MODULES``; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._cli_common import add_ray_arguments, ray_from_args
from .._cli_common import choose_pool as _pool
from .._cli_common import load_queries
from .._cli_common import print_table as _table


def cmd_collect(args: argparse.Namespace) -> int:
    from ..collect import acollect
    from .._sync import run_sync

    ray = ray_from_args(args)  # a bad --ray is refused before anything is loaded
    queries = load_queries(args)
    pool = _pool(args)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    res = run_sync(acollect(queries, pool, policies, out=args.out, rollouts=args.rollouts, concurrency=args.concurrency,
                            cost_cap=args.cost_cap, seed=args.seed, progress=not args.quiet, fsync=not args.no_fsync,
                            max_steps=args.max_steps, token_budget=args.token_budget, cost_budget=args.cost_budget,
                            ray=ray))
    print(f"collect: {res.written} written, {res.existing} already in {res.out}, {res.errors} failed (retried on resume), "
          f"{res.skipped_cost_cap} not started (cost cap); planned {res.planned}")
    print(f"cost: ${res.cost_usd:.6f} this run, ${res.total_cost_usd:.6f} in total; {res.wall_s:.1f} s"
          + ("; STOPPED at the cost cap" if res.stopped_by_cost_cap else ""))
    if args.summary_json:
        Path(args.summary_json).write_text(res.model_dump_json(indent=2))
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..pairs import PairConfig, build_pairs, record_step_verifier, write_pairs
    from ..trajectories import read_trajectories

    trajs = read_trajectories(args.trajectories)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds:  # an empty list would silently build no pair at all
        raise ConfigError(f"--kinds {args.kinds!r} names no pair kind; use some of outcome,cost,process")
    cfg = PairConfig(kinds=kinds, cost_margin=args.cost_margin,
                     min_cost_delta=args.min_cost_delta, process_cost_tolerance=args.process_cost_tolerance,
                     process_margin=args.process_margin, max_pairs_per_query=args.max_per_query or None,
                     max_pairs_per_kind=args.max_per_kind, balance_kinds=args.balance_kinds, seed=args.seed)
    scores = None
    verifier = None
    scoring = None
    if args.process == "step-records":
        verifier = record_step_verifier
    elif args.process.startswith("judge:"):
        scores, scoring = _judge_scores(args.process.split(":", 1)[1], trajs)
    elif args.process.startswith("tree:"):
        from ..tree.labels import tree_step_verifier
        from ..tree.replay import tree_of_spec

        verifier = tree_step_verifier(tree_of_spec(args.process))
    elif args.process != "none":
        raise ConfigError(f"--process {args.process!r}: use 'step-records', 'tree:PATH', 'none' or 'judge:<config.yaml>'")
    ps = build_pairs(trajs, cfg, process_scores=scores, step_verifier=verifier)
    ps.stats.process_scoring = scoring
    n = write_pairs(args.out, ps.pairs)
    st = ps.stats
    print(f"pairs: {n} from {st.usable} usable trajectories of {st.queries} queries ({st.queries_with_pairs} with pairs) -> {args.out}")
    _table(st.table())
    for why, k in st.skipped.items():
        print(f"skipped: {k} ({why})")
    if scoring is not None:
        _print_scoring(scoring)
    if args.stats_json:
        Path(args.stats_json).write_text(st.model_dump_json(indent=2))
    return 0


def _judge_scores(config_path: str, trajs: list) -> tuple[dict[str, float], Any]:
    """Process scores of ``trajs`` by the Judge (under the Rubricor) of a config file, with the
    counts of what failed and what it cost; every item failing is an error (exit 2)."""
    from .._sync import run_sync
    from ..errors import ConfigError
    from ..judge import judge_from_config
    from ..pairs import judge_process_report
    from ..rubric import StaticRubricor, rubricor_from_config

    conf = _read_config(config_path)
    if not isinstance(conf.get("judge"), dict):
        raise ConfigError(f"{config_path}: needs a 'judge:' section (see examples/configs/judge_openai.yaml)")
    judge = judge_from_config(conf["judge"])
    rubricor = rubricor_from_config(conf["rubricor"]) if "rubricor" in conf else StaticRubricor()
    return run_sync(judge_process_report(trajs, judge, rubricor))


def _print_scoring(s: Any) -> None:
    failed = f"{s.failed} failed" + (f" ({', '.join(f'{k} {v}' for k, v in s.errors.items())})" if s.errors else "")
    print(f"process scores: {s.scored} of {s.trajectories} trajectories scored, {failed}; "
          f"{s.judge_failures} judgements and {s.rubric_failures} rubrics failed")
    if s.first_error:
        print(f"first failure: {s.first_error}")
    for who, u in (("judge", s.judge_usage), ("rubricor", s.rubricor_usage)):
        note = "" if u.priced else " (unpriced model: dollars unknown)"
        print(f"{who} spend: ${u.cost_usd:.6f}, {u.input_tokens} input + {u.output_tokens} output tokens{note}")


def _read_config(path: str) -> dict[str, Any]:
    from .._files import load_mapping_file

    return load_mapping_file(path, what="config file")


def cmd_train_judge(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..pairs import PairSet, PairStats, read_pairs
    from ..rubric import Criterion, LocalRubricor
    from ..judge import LocalJudge
    from ..trajectories import read_trajectories
    from .judge_training import (AlternatingTrainer, JudgeTrainingConfig, record_criterion_labeler, sim_demo_labeler,
                                 sim_demo_library, tiny_judge_and_rubricor)

    from .outdir import check_output_folder

    check_output_folder(args.out, resume=args.resume, what="train-judge run")
    # before anything is loaded: a bad --labeler is refused at once
    labelers = {"none": None, "step-records": record_criterion_labeler, "sim-demo": sim_demo_labeler}
    if args.labeler.startswith("tree:"):
        from ..tree import tree_criterion_labeler
        from ..tree.replay import tree_of_spec

        labeler = tree_criterion_labeler(tree_of_spec(args.labeler))
    elif args.labeler in labelers:
        labeler = labelers[args.labeler]
    else:
        raise ConfigError(f"--labeler {args.labeler!r}: use none, step-records, sim-demo or tree:PATH (a training tree)")
    trajs = {t.id: t for t in read_trajectories(args.trajectories)}
    pairs = read_pairs(args.pairs)
    data = PairSet(pairs=pairs, trajectories=trajs, stats=PairStats())
    conf = _read_config(args.config) if args.config else {}
    section = conf.get("training", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{args.config}: 'training:' must be a mapping of JudgeTrainingConfig fields, not {section!r}")
    train_kw = dict(section)
    for key in ("rounds", "judge_steps", "rubricor_steps", "seed", "split_seed"):
        v = getattr(args, key)
        if v is not None:
            train_kw[key] = v
    library = None
    if args.library:
        library = [Criterion.model_validate(c) for c in _read_config(args.library).get("criteria", [])]
    if args.tiny:
        from ..hf import load_causal_lm, save_model

        cfg = JudgeTrainingConfig.tiny(**train_kw)
        judge, rubricor = tiny_judge_and_rubricor(list(trajs.values()), library or sim_demo_library(), seed=cfg.seed)
        base = Path(args.out) / "base"
        if (base / "judge").is_dir() and (base / "rubricor").is_dir():  # resume on the very same random bases
            judge.model, judge.tokenizer = load_causal_lm(str(base / "judge"))
            rubricor.model, rubricor.tokenizer = load_causal_lm(str(base / "rubricor"))
        else:
            save_model(judge.model, judge.tokenizer, base / "judge")
            save_model(rubricor.model, rubricor.tokenizer, base / "rubricor")
    else:
        cfg = JudgeTrainingConfig(**train_kw)
        if not (args.judge and args.rubricor):
            raise ConfigError("give --judge and --rubricor (local model folders or registry names), or --tiny for the "
                              "synthetic demo with tiny random models")
        judge = LocalJudge.from_pretrained(args.judge, device=args.device, **conf.get("judge_options", {}))
        rkw = dict(conf.get("rubricor_options", {}))
        if library:
            rkw["library"] = library
        rubricor = LocalRubricor.from_pretrained(args.rubricor, device=args.device, **rkw)
    from .judge_training import write_run_models

    if args.tiny:
        jopt = {"render_kw": judge.render_kw, "instruction": judge.instruction}
        ropt = {"instruction": rubricor.instruction, "max_question_tokens": rubricor.max_question_tokens}
        write_run_models(args.out, str(Path(args.out) / "base" / "judge"), str(Path(args.out) / "base" / "rubricor"),
                         jopt, ropt, rubricor.library)
    else:
        write_run_models(args.out, args.judge, args.rubricor, conf.get("judge_options", {}),
                         {k: v for k, v in conf.get("rubricor_options", {}).items() if k != "library"}, rubricor.library)
    trainer = AlternatingTrainer(judge, rubricor, data, cfg, out_dir=args.out, criterion_labeler=labeler, resume=args.resume)
    hist = trainer.train()
    first, last = hist[0]["heldout"], hist[-1]["heldout"]
    rows = [("pair kind", "held-out n", "before", "after")]
    for kind, acc in last.get("accuracy", {}).items():
        rows.append((kind, str(last["n"][kind]), f"{first['accuracy'].get(kind, float('nan')):.1%}", f"{acc:.1%}"))
    _table(rows)
    print(f"adapters and state: {args.out}")
    return 0


def cmd_pick_judge(args: argparse.Namespace) -> int:
    """The table of the runs, then the chosen run's folder (or ``none``) alone on the last line,
    for scripts: ``JUDGE=$(roro pick-judge a b c | tail -1)``."""
    import math

    from .judge_training import pick_judge_run

    pick = pick_judge_run(args.runs, min_accuracy=args.min_accuracy, kind=args.kind)
    rows = [("run", "seed", f"held-out {args.kind} n", "before", "after", "mean margin")]
    for r in pick.runs:
        before = "" if r.before is None else f"{r.before:.1%}"
        rows.append((r.run, str(r.seed), str(r.n), before, f"{r.accuracy:.1%}",
                     "" if math.isnan(r.margin) else f"{r.margin:+.4f}"))
    _table(rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(pick.model_dump_json(indent=2))
    if pick.chosen is None:
        print(f"no Judge is above {args.min_accuracy:.0%} held-out pairwise accuracy: use none (outcome-only)",
              file=sys.stderr)
    print(pick.chosen or "none")
    return 0


def add_commands(sub: Any, common: Any) -> None:
    p = sub.add_parser("collect", help="collect routed trajectories from several policies (resumable)")
    p.add_argument("--dataset", default=None, help="'sample' (the default), 'rg:<generator>', 'sim[:preset]' (test bench), "
                                                   "'tree:PATH' (a recorded tree's queries; the default with --pool tree:PATH) "
                                                   "or a .jsonl file")
    p.add_argument("--policies", default="all-small,all-large,random:0.25,random:0.5,random:0.75",
                   help="comma-separated router specs (see 'roro routers'); each is part of the trajectory ids")
    p.add_argument("--rollouts", type=int, default=1, help="runs per (query, policy), seeded seed+r")
    p.add_argument("--out", required=True, help="append-only trajectories JSONL (resumed if it exists)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--cost-cap", type=float, default=None, help="dollars for the whole collection (file included)")
    p.add_argument("--no-fsync", action="store_true", help="skip fsync per line (faster, less crash-safe)")
    p.add_argument("--summary-json", default=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_ray_arguments(p)
    common(p)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("pairs", help="build outcome/cost/process preference pairs from trajectories")
    p.add_argument("--trajectories", required=True)
    p.add_argument("--out", required=True, help="pairs JSONL (replaced)")
    p.add_argument("--kinds", default="outcome,cost,process")
    p.add_argument("--cost-margin", type=float, default=0.2, help="cost pairs: cheaper by at least this share")
    p.add_argument("--min-cost-delta", type=float, default=0.0, help="cost pairs: and by at least this many dollars")
    p.add_argument("--process-cost-tolerance", type=float, default=0.25, help="process pairs: 'similar cost' bound")
    p.add_argument("--process-margin", type=float, default=0.1, help="process pairs: process score gap")
    p.add_argument("--process", default="step-records",
                   help="process scores: 'step-records' (step texts tagged [easy]/[hard] and 'mistake', as the sim "
                        "writes), 'tree:PATH' (exact step labels from a recorded routing tree's node values), "
                        "'none', or 'judge:<config.yaml>' (a Judge under a Rubricor)")
    p.add_argument("--max-per-query", type=int, default=16, help="cap per query and kind (0: none)")
    p.add_argument("--max-per-kind", type=int, default=None)
    p.add_argument("--balance-kinds", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats-json", default=None)
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("train-judge", help="alternating Judge/Rubricor training on preference pairs (resumable)")
    p.add_argument("--trajectories", required=True)
    p.add_argument("--pairs", required=True)
    p.add_argument("--out", required=True, help="folder for adapters (safetensors) and state.json; must be new or "
                                                "empty unless --resume")
    p.add_argument("--resume", action="store_true", help="continue the run already in --out after its last round")
    p.add_argument("--judge", default=None, help="local causal LM for the Judge (folder or registry name)")
    p.add_argument("--rubricor", default=None, help="local causal LM for the Rubricor")
    p.add_argument("--tiny", action="store_true", help="tiny random models built from the data (synthetic demo)")
    p.add_argument("--config", default=None, help="YAML/JSON with 'training:' (JudgeTrainingConfig fields), "
                                                 "'judge_options:', 'rubricor_options:'")
    p.add_argument("--library", default=None, help="YAML/JSON with 'criteria: [{text, kind}, ...]' (the Rubricor's candidates)")
    p.add_argument("--labeler", default="none",
                   help="per-criterion labels for the calibration term: none, step-records (sim-style step records), "
                        "sim-demo, or tree:PATH (exact labels from a training routing tree)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--judge-steps", type=int, default=None)
    p.add_argument("--rubricor-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the held-out query split (default: --seed); give several seeds one split to compare "
                        "them with 'roro pick-judge'")
    p.add_argument("--device", default="auto", help="auto (the GPU if torch sees one), cpu or cuda")
    p.set_defaults(func=cmd_train_judge)

    p = sub.add_parser("pick-judge", help="choose, among train-judge runs of one held-out split, the Judge with the "
                                          "best held-out pairwise accuracy (or none)")
    p.add_argument("runs", nargs="+", help="train-judge run folders")
    p.add_argument("--min-accuracy", type=float, default=0.5,
                   help="choose none unless the best held-out accuracy is above this (default 0.5: chance)")
    p.add_argument("--kind", default="all", choices=["all", "outcome", "cost", "process"], help="pair kind compared")
    p.add_argument("--json", default=None, help="write the comparison here")
    p.set_defaults(func=cmd_pick_judge)
