"""The learned router that ships in the package (``policy:default``): its files are pinned by a
manifest, it loads from its registry base with no tokenizer of its own, and it routes the default
pool. Exporting a trained router gives that small form."""

from __future__ import annotations

import json
import shutil

import pytest

from roro_sdk.errors import ConfigError
from roro_sdk.routers import ROUTER_SPECS
from roro_sdk.routers.shipped import (
    SHIPPED_ROUTERS,
    shipped_router_base,
    shipped_router_dir,
    verify_manifest,
    write_manifest,
)


def test_every_shipped_router_is_in_the_package_and_matches_its_manifest():
    for name in SHIPPED_ROUTERS:
        folder = shipped_router_dir(name)
        verify_manifest(folder)
        pins = json.loads((folder / "manifest.json").read_text())["files"]
        assert {"router.json", "adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                "provenance.json"} <= set(pins)
        assert sum(p["bytes"] for p in pins.values()) < 8_000_000  # a few MB in the wheel
        prov = json.loads((folder / "provenance.json").read_text())
        assert {"training_commit", "export_commit", "training_tree", "config", "seed", "heldout"} <= set(prov)
        adapter_cfg = json.loads((folder / "adapter" / "adapter_config.json").read_text())
        assert adapter_cfg["base_model_name_or_path"] == shipped_router_base(name)  # no path of the machine that trained it
    assert "policy:default" in ROUTER_SPECS
    with pytest.raises(ConfigError, match="no shipped router"):
        shipped_router_dir("nope")


def test_a_changed_or_missing_file_of_a_shipped_router_is_refused(tmp_path):
    folder = tmp_path / "r"
    shutil.copytree(shipped_router_dir("default"), folder)
    verify_manifest(folder)
    with open(folder / "router.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(ConfigError, match="sha256"):
        verify_manifest(folder)
    (folder / "router.json").unlink()
    with pytest.raises(ConfigError, match="missing"):
        verify_manifest(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="no manifest.json"):
        verify_manifest(folder)


def test_export_writes_a_small_pinned_router_without_machine_paths(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    from roro_sdk.policy.shipping import export_router

    src = tmp_path / "trained"
    (src / "adapter").mkdir(parents=True)
    (src / "tokenizer").mkdir()
    (src / "router.json").write_text(json.dumps({"models": ["a", "b"], "base": "smollm2-135m-instruct", "head": True}))
    save_file({"weight": torch.ones(2, 4), "bias": torch.zeros(2)}, str(src / "head.safetensors"))
    save_file({"base_model.model.x.lora_A.weight": torch.randn(8, 16)}, str(src / "adapter" / "adapter_model.safetensors"))
    (src / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/root/.cache/x", "r": 8}))
    dst = export_router(src, tmp_path / "out", provenance={"commit": "abc"})
    verify_manifest(dst)
    assert not (dst / "tokenizer").exists()  # the registry base brings it
    assert load_file(str(dst / "adapter" / "adapter_model.safetensors"))["base_model.model.x.lora_A.weight"].dtype == torch.float16
    assert load_file(str(dst / "head.safetensors"))["weight"].dtype == torch.float32
    assert json.loads((dst / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "smollm2-135m-instruct"
    assert "/root" not in "".join(p.read_text() for p in dst.rglob("*.json"))
    assert json.loads((dst / "provenance.json").read_text()) == {"commit": "abc"}
    (src / "router.json").write_text(json.dumps({"models": ["a", "b"], "base": "base"}))
    with pytest.raises(ConfigError, match="registry base"):
        export_router(src, tmp_path / "out2", provenance={})


def test_write_manifest_pins_every_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "sub" / "b.bin").write_bytes(b"xy")
    pins = write_manifest(tmp_path)
    assert set(pins) == {"a.json", "sub/b.bin"} and pins["sub/b.bin"]["bytes"] == 2
    verify_manifest(tmp_path)


@pytest.mark.local_models
def test_policy_default_routes_the_default_pool():
    pytest.importorskip("peft")
    from roro_sdk.defaults import default_pool
    from roro_sdk.local import list_local_models
    from roro_sdk.routers import make_router
    from roro_sdk.routers.base import RoutingState
    from roro_sdk.types import Query

    if not any(i.name == shipped_router_base() and i.installed for i in list_local_models()):
        pytest.skip(f"{shipped_router_base()} is not installed (roro models install)")
    pool = default_pool()
    router = make_router("learned")
    assert router.name == "policy:default" and router.free_steps == 2
    router.check(pool)
    d = router.decide(RoutingState(query=Query(id="q", question="What is 17 * 23?"), steps=[], pool=pool, max_steps=8))
    assert d.model in pool.names and sum(d.probabilities.values()) == pytest.approx(1.0)
