"""Export a trained policy router in the small form that ships (``policy:default``): LoRA weights
in float16, no tokenizer (its registry base model has it), a provenance record, a sha256 manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..routers.shipped import write_manifest


def export_router(src: str | Path, dst: str | Path, *, provenance: dict[str, Any], dtype: str = "float16") -> Path:
    """Write the router saved in ``src`` (by ``roro train-router`` or :meth:`PolicyRouter.save`)
    to ``dst``: ``router.json``, ``head.safetensors``, ``adapter/`` (weights cast to ``dtype``; its
    config names the registry base instead of this machine's path), ``provenance.json`` and
    ``manifest.json``. The base must be a registry name, so the router stays a few MB."""
    import torch
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    meta = json.loads((src / "router.json").read_text())
    if meta.get("base") in (None, "base"):
        raise ConfigError(f"{src}: the router's base travels with it (base: {meta.get('base')!r}); only a router on a "
                          "registry base model (e.g. smollm2-135m-instruct) can be exported small")
    if not (src / "adapter" / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{src} has no adapter/adapter_model.safetensors to export")
    cast = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}.get(dtype)
    if cast is None:
        raise ConfigError(f"dtype must be float16, bfloat16 or float32, not {dtype!r}")
    if src.resolve() == dst.resolve() or src.resolve().is_relative_to(dst.resolve()):
        raise ConfigError(f"export {src} to another folder than itself or one holding it, not {dst}")
    final, dst = dst, dst.with_name(dst.name + ".tmp")  # the old export stays until the new one is whole
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "adapter").mkdir(parents=True)
    shutil.copy2(src / "router.json", dst / "router.json")
    if (src / "head.safetensors").is_file():  # a few KB: kept in float32
        shutil.copy2(src / "head.safetensors", dst / "head.safetensors")
    weights = load_file(str(src / "adapter" / "adapter_model.safetensors"))
    save_file({k: (v.to(cast) if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
              str(dst / "adapter" / "adapter_model.safetensors"))
    config = json.loads((src / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = meta["base"]  # not the path of the machine that trained it
    config["inference_mode"] = True
    (dst / "adapter" / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (dst / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    write_manifest(dst)
    if final.exists():
        shutil.rmtree(final)
    dst.rename(final)
    return final
