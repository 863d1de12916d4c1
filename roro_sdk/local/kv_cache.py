"""A memory-bounded radix tree of KV states keyed by token-id prefixes (one per local model).

Why: stepwise reasoning sends the same text again and again -- every query shares the system
prompt and worked example, and step k+1 of a trajectory is step k's prompt plus one step. With
this cache a request prefills only the tokens no earlier request of this model has computed.

The design is SGLang's radix cache, sized for one CPU process: each node holds the keys/values of
one *segment* of tokens (``[1, heads, len(segment), head_dim]`` per layer) and children keyed by
their first token, so shared prefixes are stored once. :meth:`match` walks the tree and returns
the KV of the longest cached prefix (a concatenation of the segments on the path); :meth:`insert`
adds what is new, splitting a node where a prompt diverges inside it. When the stored bytes pass
``max_bytes`` the least recently used *leaves* are evicted first (an inner node is needed by all
its descendants), so the bound holds after every insert.

Exactness: a KV column is a pure function of the tokens at and before it, so the KV of a prefix
is the same whichever request computed it (up to float rounding of a different matmul shape:
see docs/local-models.md for what that changes).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

#: The KV of some tokens: one ``(keys, values)`` pair per layer, each ``[1, heads, tokens, dim]``.
KV = list[tuple[torch.Tensor, torch.Tensor]]


def kv_bytes(kv: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


def kv_slice(kv: KV, start: int, stop: int) -> KV:
    """Columns ``start:stop`` as new contiguous tensors (a view would pin the whole source)."""
    return [(k[:, :, start:stop].clone(), v[:, :, start:stop].clone()) for k, v in kv]


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]
    kv: KV | None  # None only for the root
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    last_used: int = 0

    @property
    def nbytes(self) -> int:
        return kv_bytes(self.kv) if self.kv else 0


@dataclass
class PrefixCacheStats:
    lookups: int = 0
    hits: int = 0  # lookups that reused at least one token
    reused_tokens: int = 0
    inserted_tokens: int = 0
    evicted_tokens: int = 0


class PrefixCache:
    """Radix tree of KV segments with LRU eviction of leaves; not thread-safe (one engine thread uses it)."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.stats = PrefixCacheStats()
        self._root = _Node(tokens=(), kv=None, parent=None)
        self._clock = itertools.count(1)

    @property
    def tokens(self) -> int:
        """Token columns stored (shared prefixes counted once)."""
        return sum(len(n.tokens) for n in self._nodes())

    def match(self, ids: Sequence[int], *, limit: int | None = None) -> tuple[int, KV | None]:
        """Length of the longest cached prefix of ``ids`` (at most ``limit``) and its KV (new tensors)."""
        self.stats.lookups += 1
        limit = len(ids) if limit is None else min(limit, len(ids))
        pieces: list[tuple[_Node, int]] = []
        node, pos, now = self._root, 0, next(self._clock)
        while pos < limit:
            child = node.children.get(ids[pos])
            if child is None:
                break
            m = _common(child.tokens, ids, pos, limit)
            child.last_used = now
            pieces.append((child, m))
            pos += m
            if m < len(child.tokens):
                break
            node = child
        if pos == 0:
            return 0, None
        self.stats.hits += 1
        self.stats.reused_tokens += pos
        layers = len(pieces[0][0].kv)
        kv = [
            (torch.cat([n.kv[i][0][:, :, :m] for n, m in pieces], dim=2),
             torch.cat([n.kv[i][1][:, :, :m] for n, m in pieces], dim=2))
            for i in range(layers)
        ]
        return pos, kv

    def insert(self, ids: Sequence[int], kv: KV) -> None:
        """Store the KV of ``ids`` (``kv`` covers exactly ``len(ids)`` columns); keeps only what is new."""
        if not ids or not kv or self.max_bytes == 0:
            return
        if kv[0][0].shape[2] != len(ids):
            raise ValueError(f"KV covers {kv[0][0].shape[2]} tokens, ids {len(ids)}")
        node, pos, now = self._root, 0, next(self._clock)
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                break
            m = _common(child.tokens, ids, pos, len(ids))
            child.last_used = now
            if m < len(child.tokens):
                child = self._split(child, m)
            pos += m
            node = child
        if pos < len(ids):
            leaf = _Node(tokens=tuple(ids[pos:]), kv=kv_slice(kv, pos, len(ids)), parent=node, last_used=now)
            if leaf.nbytes > self.max_bytes:
                return  # larger than the whole budget: storing it would evict everything for nothing
            node.children[leaf.tokens[0]] = leaf
            self.bytes += leaf.nbytes
            self.stats.inserted_tokens += len(leaf.tokens)
        self._evict()

    def clear(self) -> None:
        self._root = _Node(tokens=(), kv=None, parent=None)
        self.bytes = 0

    # ---- internals ----------------------------------------------------------------------------
    def _split(self, node: _Node, m: int) -> _Node:
        """Cut ``node`` after ``m`` tokens; return the new upper part (the old node keeps the rest)."""
        upper = _Node(tokens=node.tokens[:m], kv=[(k[:, :, :m].clone(), v[:, :, :m].clone()) for k, v in node.kv],
                      parent=node.parent, last_used=node.last_used)
        node.parent.children[upper.tokens[0]] = upper
        node.tokens = node.tokens[m:]
        node.kv = [(k[:, :, m:].clone(), v[:, :, m:].clone()) for k, v in node.kv]
        node.parent = upper
        upper.children[node.tokens[0]] = node
        return upper

    def _nodes(self):
        stack = list(self._root.children.values())
        while stack:
            n = stack.pop()
            yield n
            stack.extend(n.children.values())

    def _evict(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        leaves = sorted((n for n in self._nodes() if not n.children), key=lambda n: n.last_used)
        while self.bytes > self.max_bytes and leaves:
            leaf = leaves.pop(0)
            parent = leaf.parent
            del parent.children[leaf.tokens[0]]
            self.bytes -= leaf.nbytes
            self.stats.evicted_tokens += len(leaf.tokens)
            if parent is not self._root and not parent.children:  # the parent became a leaf
                _insort_by_age(leaves, parent)


def _common(segment: tuple[int, ...], ids: Sequence[int], pos: int, limit: int) -> int:
    n = min(len(segment), limit - pos)
    for i in range(n):
        if segment[i] != ids[pos + i]:
            return i
    return n


def _insort_by_age(leaves: list[_Node], node: _Node) -> None:
    i = 0
    while i < len(leaves) and leaves[i].last_used <= node.last_used:
        i += 1
    leaves.insert(i, node)
