"""Learned routers that ship inside the package (``policy:default``), and the check that a
shipped folder is the one its manifest pins. Torch-free: ``roro models install`` reads a shipped
router's base model name from here on a machine without the training extras."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from .._pins import pin, sha256_of

# name -> what it is (the 'roro routers' listing). Each lives in roro_sdk/data/routers/<name>/.
SHIPPED_ROUTERS = {
    "default": "trained with GRPO (LoRA on SmolLM2-135M) on recorded routing trees of the default local pool",
}
MANIFEST = "manifest.json"


def shipped_router_dir(name: str = "default") -> Path:
    """The folder of the shipped router ``name`` (a :class:`~roro_sdk.policy.router.PolicyRouter` folder)."""
    if name not in SHIPPED_ROUTERS:
        raise ConfigError(f"no shipped router {name!r}; shipped: {', '.join(SHIPPED_ROUTERS)}")
    return Path(__file__).resolve().parents[1] / "data" / "routers" / name


def shipped_router_base(name: str = "default") -> str:
    """The offline-registry name of the base model the shipped router ``name`` runs on."""
    meta = json.loads((shipped_router_dir(name) / "router.json").read_text())
    return str(meta["base"])


def write_manifest(folder: str | Path) -> dict[str, dict[str, int | str]]:
    """Pin every file of ``folder`` (relative path -> sha256 and size) in ``manifest.json``."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    pins = {p.relative_to(folder).as_posix(): pin(p) for p in files}
    (folder / MANIFEST).write_text(json.dumps({"files": pins}, indent=2) + "\n")
    return pins


def verify_manifest(folder: str | Path) -> None:
    """Raise :class:`~roro_sdk.errors.ConfigError` unless every file ``manifest.json`` pins is
    there with its sha256 (a truncated or edited install of a shipped router is refused)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{folder} has no {MANIFEST}; reinstall roro-sdk (pip install --force-reinstall roro-sdk)")
    for rel, pinned in json.loads(path.read_text())["files"].items():
        f = folder / rel
        if not f.is_file():
            raise ConfigError(f"{f} is missing from the shipped router; reinstall roro-sdk")
        if sha256_of([f])[0] != pinned["sha256"]:
            raise ConfigError(f"{f} does not match its pinned sha256 in {path}; reinstall roro-sdk")
