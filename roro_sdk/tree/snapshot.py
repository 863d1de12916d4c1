"""A pinned, compacted copy of the complete part of a tree that is still being recorded.

A long recording (hours on a CPU) is useful before it ends: :func:`snapshot_tree` copies its
longest complete prefix of queries (the kept queries stay a prefix of the dataset, so a later,
larger snapshot only adds queries) into a new folder, compacts and pins it. The source is only
read; the recorder can keep appending to it meanwhile.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ConfigError
from .manifest import TreeManifest
from .record import file_pins, tree_bytes
from .replay import RoutingTree
from .store import COMPACT, CALLS, TreeStore

QUERIES = "queries.jsonl"


def _side_calls_replayed(tree: RoutingTree, n: int) -> int:
    """How many of the first ``n`` queries every side-call router of the recording replays to the
    end inside the tree. A recording runs them on each query right after its tree (until
    2026-11-30: after the trees of all its queries), so a query whose tree is complete may still
    lack their calls when the recording stopped between the two; a snapshot stops before it."""
    routers = tree.manifest.recording.side_call_routers
    if not routers or n == 0:
        return n
    from ..routers import make_router
    from ..runtime import StepwiseRuntime

    rec = tree.manifest.recording
    seed = tree.recording_seed
    pool, queries = tree.pool(), tree.queries[:n]
    for spec in routers:
        rt = StepwiseRuntime(pool, make_router(spec, seed=seed), max_steps=rec.max_steps, stop_on_repeat=rec.stop_on_repeat)
        for i, t in enumerate(rt.run_many(queries)):
            if t.stop_reason == "error":
                n = i
                break
        queries = queries[:n]
    return n


def snapshot_tree(src: str | Path, dst: str | Path, *, limit: int | None = None) -> RoutingTree:
    """Copy the first complete queries of the tree in ``src`` (at most ``limit``) into ``dst``
    (replaced), compacted and pinned by its manifest. A query is complete when every routing of
    the tree's depth reaches its end and every side-call router of the recording replays it to
    the end; the first incomplete one ends the snapshot."""
    src, dst = Path(src), Path(dst)
    if not (src / "manifest.json").is_file():
        raise ConfigError(f"{src} is not a routing tree (no manifest.json); record one with 'roro record-tree'")
    if dst.resolve() == src.resolve():
        raise ConfigError("a snapshot needs another folder than the tree it copies")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in ("manifest.json", CALLS, COMPACT):
        if (src / name).is_file():
            shutil.copy(src / name, tmp / name)
    lines = [line for line in (src / QUERIES).read_text().splitlines() if line.strip()]
    (tmp / QUERIES).write_text("\n".join(lines) + "\n")
    keep = []
    for line, qt in zip(lines, RoutingTree(tmp).query_trees()):
        if qt.missing or not qt.leaves:
            break
        keep.append(line)
    keep = keep[:limit] if limit is not None else keep
    keep = keep[:_side_calls_replayed(RoutingTree(tmp), len(keep))]
    if not keep:
        shutil.rmtree(tmp)
        raise ConfigError(f"{src}: no query is complete yet; let the recording run longer")
    (tmp / QUERIES).write_text("\n".join(keep) + "\n")
    manifest = TreeManifest.load(tmp)
    sources: list[dict] = []  # a resumed recording lists its dataset once per run
    for d in manifest.datasets or []:
        d = {**d, "n": len(keep)}
        if d not in sources:
            sources.append(d)
    manifest.datasets = sources
    TreeStore(tmp, live=True).compact()
    manifest.files = file_pins(tmp)
    # the recorder's numbers are those of its last run, not of this copy: kept apart
    manifest.stats = {"queries": len(keep), "calls_in_tree": len(TreeStore(tmp)), "bytes": tree_bytes(tmp),
                      "snapshot_of_a_recording": {"queries_listed": len(lines), "last_run": manifest.stats}}
    manifest.save(tmp)
    RoutingTree(tmp).verify()
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return RoutingTree(dst)
