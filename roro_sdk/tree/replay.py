"""A recorded tree as a pool: every router, evaluation, collection and GRPO rollout over it calls no model.

``RoutingTree(folder).pool()`` is a :class:`~roro_sdk.pool.ModelPool` whose cache is the tree's
store in replay mode: each step or side call is answered from the recording, with its original
tokens (so its cost at the pool's prices), and a call the tree does not hold raises
:class:`~roro_sdk.errors.OutsideTreeError`, which fails that query only. With ``grow=True`` such a
call is made live instead and recorded, so the tree grows (that needs the models and any API keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..pool import ModelPool
from ..types import Query
from .manifest import TreeManifest, check_local_dtypes, check_pool
from .paths import FrontierPoint, QueryTree, best_frontier, walk
from .queries import read_queries
from .store import TreeStore

TREE_PREFIX = "tree:"


class RoutingTree:
    """A routing tree folder (``manifest.json``, ``queries.jsonl``, ``calls.jsonl[.gz]``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = TreeManifest.load(self.folder)
        self._store: TreeStore | None = None

    @classmethod
    def of_pool(cls, pool: ModelPool) -> RoutingTree | None:
        """The routing tree ``pool`` replays (its cache is a tree's store), else None."""
        return cls(pool.cache.folder) if isinstance(pool.cache, TreeStore) else None

    @property
    def free_steps(self) -> int:
        """How many leading steps the tree records every model's choice for (``depth + 1``): a
        router may choose freely there, and must keep its last model after (the completion rule)."""
        return self.manifest.recording.depth + 1

    @property
    def recording_seed(self) -> int:
        """The seed its side-call routers were recorded with (the dataset's): a seeded router
        (random) given it replays its recorded paths instead of leaving the tree."""
        return int((self.manifest.datasets or [{}])[0].get("seed", 0))

    def check_max_steps(self, max_steps: int, *, option: str = "--max-steps", error: type[Exception] = ConfigError) -> None:
        """Refuse runs longer than the tree recorded (``error`` naming ``option``): their steps are not in it."""
        recorded = self.manifest.recording.max_steps
        if max_steps > recorded:
            raise error(f"{self.folder} was recorded with max_steps {recorded}; use {option} <= {recorded} "
                        f"(got {max_steps}): longer runs are not in the tree")

    @property
    def store(self) -> TreeStore:
        if self._store is None:
            self._store = TreeStore(self.folder, live=False, seed_in_key=self.manifest.recording.seed_in_key)
        return self._store

    @property
    def queries(self) -> list[Query]:
        return read_queries(self.folder)

    def pool(self, *, grow: bool = False, like: ModelPool | None = None) -> ModelPool:
        """The replay pool. ``like``: a pool of your own (its prices, retries, fallbacks) that must
        write what the tree was recorded with (else :class:`TreeMismatchError`)."""
        if like is not None:
            check_pool(self.manifest, like, folder=self.folder)
        if grow:
            check_local_dtypes(self.manifest, folder=self.folder)
        base = like or self.manifest.make_pool(keys=grow)
        specs = base.specs if grow else [s.model_copy(update={"api_key_env": None}) for s in base.specs]  # no key to replay
        store = TreeStore(self.folder, live=True, seed_in_key=self.manifest.recording.seed_in_key) if grow else self.store
        return ModelPool(specs, allow_unpriced=base.allow_unpriced, prompt=base.prompt, retry=base.retry, cache=store)

    def query_trees(self, queries: Sequence[Query] | None = None, *, pool: ModelPool | None = None,
                    max_steps: int | None = None) -> list[QueryTree]:
        """Every recorded routing of each query (default: all of the tree's), priced by ``pool``;
        ``max_steps`` below the recorded one cuts runs there, as a runtime with it would."""
        rec = self.manifest.recording
        p = pool or self.manifest.make_pool()
        cap = rec.max_steps if max_steps is None else min(max_steps, rec.max_steps)
        return [walk(p, self.store, q, depth=rec.depth, max_steps=cap, stop_on_repeat=rec.stop_on_repeat)
                for q in (self.queries if queries is None else queries)]

    def frontier(self, queries: Sequence[Query] | None = None, *, pool: ModelPool | None = None) -> list[FrontierPoint]:
        return best_frontier(self.query_trees(queries, pool=pool))

    def verify(self) -> None:
        """Check the compacted files against the sha256 the manifest pins (a committed tree):
        :class:`~roro_sdk.errors.DatasetError` naming the file that differs."""
        import hashlib

        from ..errors import DatasetError

        if not self.manifest.files:
            raise DatasetError(f"{self.folder}: the manifest pins no files (compact the tree: record-tree --compact)")
        for name, pin in self.manifest.files.items():
            p = self.folder / name
            if not p.is_file():
                raise DatasetError(f"{p} is missing (the manifest pins it)")
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if digest != pin["sha256"]:
                raise DatasetError(f"{p}: sha256 {digest} is not the pinned {pin['sha256']}; restore it from the repository")

    def __repr__(self) -> str:
        return f"RoutingTree({str(self.folder)!r})"


def is_tree_spec(spec: str | None) -> bool:
    return isinstance(spec, str) and spec.startswith(TREE_PREFIX)


def tree_of_spec(spec: str) -> RoutingTree:
    """``tree:PATH`` -> the tree at PATH."""
    return RoutingTree(spec[len(TREE_PREFIX):])
