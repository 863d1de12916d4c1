"""Output folders of training runs: a run continues or replaces another only when asked to, and
what it writes survives a crash.

A re-run into a folder that already held a run used to resume it silently: with the same
``updates`` it made no update at all and printed the old router's results as if they were new.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import RunExistsError, TrainingConfigError


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def check_output_folder(folder: str | Path, *, resume: bool, what: str = "run", overwrite_hint: bool = False) -> None:
    """Refuse a folder that already holds files unless ``resume``; a new or empty folder is fine."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunExistsError(f"{folder} is a file, not a folder; choose a new --out")
    names = _entries(folder)
    if names and not resume:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        extra = " (or --overwrite to start afresh there)" if overwrite_hint else ""
        raise RunExistsError(f"{folder} already holds a {what} ({shown}): pass --resume or choose a new --out{extra}")


def remove_run_files(folder: str | Path, names: Iterable[str]) -> list[str]:
    """Delete the named files and folders of an earlier run in ``folder`` (and nothing else)."""
    folder = Path(folder)
    removed = []
    for name in names:
        p = folder / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


def prepare_run_folder(out: Path, config: dict[str, Any], *, resume: bool, overwrite: bool, run_files: Iterable[str],
                       resumable: Iterable[str]) -> None:
    """Refuse to continue or replace an earlier run unless asked (``resume`` / ``overwrite``, which
    deletes the earlier run's ``run_files`` and nothing else); on resume, refuse a ``config`` (as
    JSON data) that differs from the run's ``config.json`` in a field outside ``resumable``."""
    if overwrite:
        remove_run_files(out, run_files)
    check_output_folder(out, resume=resume or overwrite, what="run", overwrite_hint=True)
    old = out / "config.json"
    if resume and old.is_file():
        try:
            before = json.loads(old.read_text())
        except ValueError:
            before = None
        if isinstance(before, dict):
            # fields the earlier run's version did not have yet are not compared
            resumable = set(resumable)
            changed = sorted(k for k in before if k in config and k not in resumable and before[k] != config[k])
            if changed:
                free = ", ".join(sorted(resumable - {"out_dir", "resume", "overwrite"}))
                raise TrainingConfigError(f"cannot resume the run in {out}: its config differs in {', '.join(changed)}; "
                                          f"use the same config (only {free} may change), or choose a new --out")


def rewrite_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``path`` with one JSON line per record (through a temporary file, so a crash leaves
    the old file or the new one). Nothing is written when there is nothing to keep and no file."""
    if not records and not path.exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    tmp.replace(path)


def fsync_tree(folder: Path) -> None:
    """Flush the files of ``folder`` (one level) and the folder itself to disk, before it is
    renamed into place (a rename can reach the disk before the data it names)."""
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames into it) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
