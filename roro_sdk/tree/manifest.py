"""What a routing tree was recorded with, pinned so a replay never mixes in another pool's outputs.

A recorded step is only valid for the exact way it was computed: the model (and, for a local
model, its weights and dtype), the prompt template, the decoding settings and the step cap. The
manifest holds all of them; :func:`check_pool` compares a pool against it field by field and
refuses with a :class:`TreeMismatchError` naming every difference. Prices are *not* pinned: a
replay prices the recorded tokens at the pool's current prices, so a tree answers "what would
this cost now".
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._version import __version__
from ..errors import DatasetError, TreeMismatchError
from ..pool import ModelPool
from ..types import ModelSpec

MANIFEST = "manifest.json"
FORMAT = 1
# The fields of a model that change what it writes; prices and timeouts do not.
_PINNED = ("model", "api_base", "mode", "max_tokens_per_step", "sampling", "extra")
COMPLETION_RULE = ("every model writes every step of the first `depth` steps; from step `depth` on, each branch is "
                   "continued by each single model to the end (routings m_0..m_{depth-1}, c, c, c, ...)")


class RecordingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: int = Field(ge=0, description="free routing decisions before each branch is completed by a single model")
    max_steps: int = Field(ge=1)
    stop_on_repeat: bool = True
    seed_in_key: bool = Field(description="whether the sampling seed changes outputs (the sim bench) and is part of keys")
    completion: str = COMPLETION_RULE
    side_call_routers: list[str] = Field(default_factory=list, description="routers run over the tree to record their calls")


class TreeManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    roro_version: str = __version__
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    pool: dict[str, Any] = Field(description="{models: [ModelSpec...], prompt: PromptTemplate, allow_unpriced}")
    weights: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per model: how its weights are pinned")
    recording: RecordingSettings
    datasets: list[dict[str, Any]] = Field(default_factory=list, description="where the queries came from (generator, seed, n)")
    stats: dict[str, Any] = Field(default_factory=dict, description="the last recording's throughput, time and size")
    files: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "sha256 and bytes of the compacted files (written by compaction; checked by RoutingTree.verify)"))

    # ----- files -------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        p = Path(folder) / MANIFEST
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(p)  # a kill mid-write leaves the old manifest, never half of one
        return p

    @classmethod
    def load(cls, folder: str | Path) -> TreeManifest:
        p = Path(folder) / MANIFEST
        if not p.is_file():
            raise DatasetError(f"{folder} is not a routing tree: it has no {MANIFEST} (record one with 'roro record-tree')")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DatasetError(f"{p}: unreadable manifest ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetError(f"{p}: tree format {data.get('format') if isinstance(data, dict) else '?'} is not {FORMAT}; "
                               "re-record it with this version of roro-sdk")
        try:
            return cls.model_validate(data)
        except Exception as e:
            raise DatasetError(f"{p}: invalid manifest: {e}") from None

    # ----- the pool --------------------------------------------------------------------------------
    @classmethod
    def of_pool(cls, pool: ModelPool, recording: RecordingSettings, *, weights: dict[str, dict[str, Any]] | None = None) -> TreeManifest:
        return cls(pool=pool_record(pool), weights=weights if weights is not None else weights_of(pool), recording=recording)

    def make_pool(self, *, keys: bool = False) -> ModelPool:
        """The pool the tree was recorded with. Without ``keys`` no API key variable is required:
        a replay calls no model."""
        specs = [ModelSpec.model_validate(m if keys else dict(m, api_key_env=None)) for m in self.pool["models"]]
        from ..prompts import PromptTemplate

        return ModelPool(specs, allow_unpriced=bool(self.pool.get("allow_unpriced")),
                         prompt=PromptTemplate.model_validate(self.pool["prompt"]))


def pool_record(pool: ModelPool) -> dict[str, Any]:
    return {"models": [s.model_dump(mode="json") for s in pool.specs], "prompt": pool.prompt.model_dump(mode="json"),
            "allow_unpriced": pool.allow_unpriced}


def weights_of(pool: ModelPool) -> dict[str, dict[str, Any]]:
    """How each model's weights are pinned: a registry model by the sha256 of the file its
    weights are converted from, and the dtype the engine computes in (greedy text differs across
    dtypes); a hosted model by its model string only (the provider does not let us pin more)."""
    out: dict[str, dict[str, Any]] = {}
    for s in pool.specs:
        provider, _, name = s.model.partition("/")
        if provider != "roro_local":
            out[s.name] = {"pinned_by": "model string", "model": s.model}
            continue
        rec: dict[str, Any] = {"pinned_by": "registered local model", "model": s.model}
        try:
            from ..local.registry import get_local_entry

            entry = get_local_entry(name)
            rec.update(pinned_by="registry sha256", sha256=entry.sha256, size=entry.size)
        except Exception:  # not a registry model: a folder or loader registered by the user
            pass
        out[s.name] = rec
    return out


def local_dtypes(pool: ModelPool) -> dict[str, str]:
    """The dtype each loaded local model computes in (after recording, when they are loaded)."""
    out = {}
    for s in pool.specs:
        provider, _, name = s.model.partition("/")
        if provider == "roro_local":
            try:
                from ..local import get_local_engine

                out[s.name] = get_local_engine(name).compute_kind
            except Exception:  # not loaded in this process (a replay, or a worker elsewhere)
                pass
    return out


def check_local_dtypes(manifest: TreeManifest, *, folder: str | Path = "the tree") -> None:
    """Before live calls are added to a tree: a local model must compute the way its steps were
    recorded (greedy text differs between bf16, fp32 and llama.cpp's quantised weights;
    ``dtype="auto"`` picks by CPU and ``backend="auto"`` by what is installed)."""
    recorded = {name: w for name, w in manifest.weights.items() if w.get("dtype")}
    if not recorded:
        return
    try:
        from ..local.provider import expected_compute_kind
    except Exception:  # the local extra is not installed: nothing local can be called here anyway
        return
    wrong = {}
    specs = {m.get("name"): m.get("model", "") for m in (manifest.pool or {}).get("models", [])}
    for name, w in recorded.items():
        model = str(w.get("model") or specs.get(name) or "").partition("/")[2]
        try:
            here = expected_compute_kind(model)
        except Exception:  # a model this process cannot serve: the call itself will say so
            continue
        if here != w["dtype"]:
            wrong[name] = (w["dtype"], here)
    if wrong:
        recorded_kind = next(iter(wrong.values()))[0]
        fix = ("set RORO_LOCAL_BACKEND=llamacpp" if recorded_kind.startswith("llama.cpp")
               else f"set RORO_LOCAL_BACKEND=torch RORO_LOCAL_DTYPE={recorded_kind}")
        raise TreeMismatchError(f"{folder}: {', '.join(f'{n} was recorded in {d}, here it would compute in {h}' for n, (d, h) in wrong.items())}; "
                                f"{fix} to add live steps to this tree")


def check_pool(manifest: TreeManifest, pool: ModelPool, *, folder: str | Path = "the tree") -> None:
    """Refuse ``pool`` unless it writes exactly what the tree was recorded with."""
    rec = {m["name"]: m for m in manifest.pool["models"]}
    diffs: list[str] = []
    if sorted(rec) != sorted(pool.names):
        diffs.append(f"models {sorted(pool.names)} vs recorded {sorted(rec)}")
    for s in pool.specs:
        if s.name not in rec:
            continue
        mine = s.model_dump(mode="json")
        for f in _PINNED:
            if mine.get(f) != rec[s.name].get(f):
                diffs.append(f"{s.name}.{f}: {mine.get(f)!r} vs recorded {rec[s.name].get(f)!r}")
    if pool.prompt.model_dump(mode="json") != manifest.pool["prompt"]:
        diffs.append("the prompt template differs")
    mine_w = weights_of(pool)
    for name, w in manifest.weights.items():
        if "sha256" in w and name in mine_w and mine_w[name].get("sha256") not in (None, w["sha256"]):
            diffs.append(f"{name} weights sha256 {mine_w[name]['sha256']} vs recorded {w['sha256']}")
    if diffs:
        raise TreeMismatchError(f"{folder} was recorded with another pool; replaying it with this one would mix outputs: "
                                + "; ".join(diffs))
