"""Output folders of training runs: a run continues or replaces another only when asked to.

A re-run into a folder that already held a run used to resume it silently: with the same
``updates`` it made no update at all and printed the old router's results as if they were new.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from ..errors import RunExistsError

__all__ = ["check_output_folder", "remove_run_files"]


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
