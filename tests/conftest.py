"""Shared fixtures: a local OpenAI-compatible server on 127.0.0.1 and pools over it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

# torch's compiler (the fused-LoRA 'op-compiled' tests) imports setuptools on first use; after the
# install tests' stub pip has put and removed package folders on sys.path, that late import found
# the standard library's distutils and failed (BackendCompilerFailed). Imported first, it is settled.
import setuptools  # noqa: E402,F401

from roro_sdk import ModelPool, RetryPolicy
from roro_sdk.testing import FakeModel, FakeOpenAIServer

FAST_RETRY = RetryPolicy(initial_s=0.01, max_s=0.02, jitter_s=0.0)


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory):
    """Every cache a test writes (generations, converted local models) lands in a temporary folder,
    never in ``~/.cache/roro-sdk`` or the user's ``$RORO_CACHE_DIR``: the code honours
    ``RORO_CACHE_DIR``, so the tests point it here. Local models already converted in the user's
    cache are linked in and only read, so the ``local_models`` tests do not convert them again."""
    from roro_sdk.local.registry import default_cache_dir, list_local_models

    folder = tmp_path_factory.mktemp("roro-cache")
    (folder / "models").mkdir()
    for info in list_local_models(default_cache_dir()):  # the user's cache, read before it is replaced
        if info.cached:
            (folder / "models" / info.name).symlink_to(info.path, target_is_directory=True)
        gguf = default_cache_dir() / ".gguf" / info.name  # verified GGUF files of the llama.cpp engine
        if any(gguf.glob("*.verified")):
            (folder / "models" / ".gguf").mkdir(exist_ok=True)
            (folder / "models" / ".gguf" / info.name).symlink_to(gguf, target_is_directory=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("RORO_CACHE_DIR", str(folder))
    yield folder
    mp.undo()


@pytest.fixture
def server():
    srv = FakeOpenAIServer(
        {
            "small": FakeModel(answer="41", steps=3, confidence=0.5, verdict="3"),
            "medium": FakeModel(answer="42", steps=3, confidence=0.7, verdict="6"),
            "large": FakeModel(answer="42", steps=3, confidence=0.95, verdict="9"),
        },
        timeout_sleep_s=2.0,
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def pool(server):
    return ModelPool(
        [server.spec("small", price=(0.1, 0.4)), server.spec("large", price=(1.0, 4.0))],
        retry=FAST_RETRY,
    )


@pytest.fixture
def pool3(server):
    return ModelPool(
        [server.spec("large", price=(1.0, 4.0)), server.spec("small", price=(0.1, 0.4)), server.spec("medium", price=(0.3, 1.2))],
        retry=FAST_RETRY,
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one torch thread avoids OpenMP spin-wait contention.
    Use per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
