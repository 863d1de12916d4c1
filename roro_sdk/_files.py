"""Reading and writing the files a user names, with errors that say which file and what to fix.

Why one module: every path a user gives (a pool, a dataset, a config, an output file) can be
missing, a folder, unreadable, binary, or parse to the wrong shape, and each reader used to
surface that as its own raw ``UnicodeDecodeError``/``IsADirectoryError`` traceback. Callers pass
the :class:`~roro_sdk.errors.RoroError` subclass they raise (``PoolFileError``,
``DatasetError``, ...) and a short description of the file (``what="pool file"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, RoroError

_MAPPING_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


def read_text_file(path: str | os.PathLike[str], *, what: str = "file", error: type[RoroError] = ConfigError) -> str:
    """The UTF-8 text of ``path``; every way the read can fail becomes ``error`` naming the file."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{what} {p} is a folder; give the path of a file")
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {p} is not UTF-8 text (undecodable byte at offset {e.start}); is it a binary file?") from None
    except OSError as e:
        raise error(f"{what} {p} cannot be read: {e.strerror or e}") from None


def parse_mapping(text: str, *, suffix: str, source: str, what: str = "file",
                  error: type[RoroError] = ConfigError) -> dict[str, Any]:
    """Parse YAML/TOML/JSON text (chosen by ``suffix``) whose top level must be a mapping."""
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise error(f"{what} {source} must end in {', '.join(_MAPPING_SUFFIXES)}")
    except RoroError:
        raise
    except Exception as e:  # the parsers' own messages carry the line number
        raise error(f"cannot parse {what} {source}: {e}") from None
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {source}: the top level must be a mapping (key: value lines), not a {type(data).__name__}")
    return data


def load_mapping_file(path: str | os.PathLike[str], *, what: str = "config file",
                      error: type[RoroError] = ConfigError) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``), TOML or JSON file whose top level is a mapping."""
    p = Path(path)
    if p.suffix not in _MAPPING_SUFFIXES and p.is_file():
        raise error(f"{what} {p} must end in {', '.join(_MAPPING_SUFFIXES)}")
    return parse_mapping(read_text_file(p, what=what, error=error), suffix=p.suffix, source=str(p), what=what, error=error)


def output_file(path: str | os.PathLike[str], *, what: str = "output file", error: type[RoroError] = ConfigError) -> Path:
    """``path`` checked for writing a file (not a folder; its parent created); nothing is written."""
    p = Path(path)
    if str(path).strip() == "":
        raise error(f"the {what} path is empty")
    if p.is_dir():
        raise error(f"{what} {p} is a folder; give the path of a file")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise error(f"cannot create {what} {p}: a parent of it is a file, not a folder") from None
    except OSError as e:
        raise error(f"cannot create the folder of {what} {p}: {e.strerror or e}") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise error(f"{what} {p} is not writable")
    return p


def output_dir(path: str | os.PathLike[str], *, what: str = "output folder", error: type[RoroError] = ConfigError) -> Path:
    """``path`` created as a folder (an existing file there is an error)."""
    p = Path(path)
    if str(path).strip() == "":
        raise error(f"the {what} path is empty")
    if p.exists() and not p.is_dir():
        raise error(f"{what} {p} is a file; give the path of a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise error(f"cannot create {what} {p}: a parent of it is a file, not a folder") from None
    except OSError as e:
        raise error(f"cannot create {what} {p}: {e.strerror or e}") from None
    return p


def write_text_file(path: str | os.PathLike[str], text: str, *, what: str = "output file",
                    error: type[RoroError] = ConfigError) -> Path:
    """Write ``text`` to ``path`` (checked by :func:`output_file`); OS failures become ``error``."""
    p = output_file(path, what=what, error=error)
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as e:
        raise error(f"cannot write {what} {p}: {e.strerror or e}") from None
    return p


def parse_bool(value: Any, *, field: str, source: str = "", error: type[RoroError] = ConfigError) -> bool:
    """``value`` if it is a real boolean (YAML/TOML/JSON ``true``/``false``); anything else is
    ``error``. ``bool("false")`` is True, so a quoted value must never go through ``bool()``."""
    if isinstance(value, bool):
        return value
    where = f"{source}: " if source else ""
    hint = " (write it unquoted)" if isinstance(value, str) and value.strip().lower() in ("true", "false") else ""
    raise error(f"{where}{field} must be true or false, not {value!r}{hint}")
