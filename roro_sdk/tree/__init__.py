"""Routing trees recorded from real models: zero-call replay and the exact best possible router.

With greedy decoding a step is a pure function of (model, prefix), so the trajectories every
router can produce on a query form a tree. Recorded once (:func:`record_tree`, ``roro
record-tree``), it answers every router, evaluation and GRPO rollout with no model call
(:class:`RoutingTree`, ``--pool tree:PATH``), and the best routing inside it is computed exactly
(:func:`best_frontier`, the "best possible" line of ``roro eval --report``; under a cap on the
large model's share of tokens, :func:`best_under_share` and, for a router that knows nothing of
the query, :func:`best_plan_mix`).
"""

from .labels import (
    NodeValue,
    RoutingPlan,
    TreeStepVerifier,
    leaf_trajectories,
    node_values,
    tree_criterion_labeler,
    tree_judge,
    tree_step_verifier,
)
from .manifest import RecordingSettings, TreeManifest, check_pool
from .paths import FrontierPoint, Leaf, QueryTree, best_at_cost, best_for_weight, best_frontier, gain_share, walk
from .queries import read_queries
from .record import RecordResult, arecord_tree, record_tree
from .replay import RoutingTree, is_tree_spec, tree_of_spec
from .snapshot import snapshot_tree
from .store import TreeStore
from .token_share import ShareBound, best_plan_mix, best_under_share

__all__ = [
    "FrontierPoint", "Leaf", "NodeValue", "QueryTree", "RecordResult", "RecordingSettings", "RoutingPlan", "RoutingTree",
    "ShareBound", "TreeManifest", "TreeStepVerifier", "TreeStore", "arecord_tree", "best_at_cost", "best_for_weight",
    "best_frontier", "best_plan_mix", "best_under_share",
    "check_pool", "gain_share", "is_tree_spec", "leaf_trajectories", "node_values", "read_queries", "record_tree",
    "snapshot_tree", "tree_criterion_labeler", "tree_judge", "tree_of_spec", "tree_step_verifier", "walk",
]
