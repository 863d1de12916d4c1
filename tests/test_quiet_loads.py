"""A model load by roro-sdk is one log line of its own, not transformers' and peft's screen noise
(the quick start's screen): no progress bars, no notice about peft's use of a transformers
internal; every switch is restored afterwards, and other warnings still reach the user."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from roro_sdk._quiet import quiet_peft_internals, quiet_progress_bars  # noqa: E402


def test_a_model_and_its_adapter_load_without_bars_or_peft_notices(tmp_path, capfd):
    from roro_sdk.hf import add_lora, load_causal_lm, save_adapter, save_model, tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(["yes no met criterion"])
    base = save_model(model, tok, tmp_path / "base")
    adapter = save_adapter(add_lora(model), tmp_path / "adapter")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_causal_lm(str(base), adapter=adapter)
        add_lora(load_causal_lm(str(base))[0])
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s]" not in err, err
    assert not [w for w in seen if "is_gradient_checkpointing" in str(w.message)]


def test_only_that_notice_is_dropped_and_every_switch_comes_back():
    from transformers.utils import logging as hf_logging

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_peft_internals():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed", FutureWarning)
            warnings.warn("something the user should see", FutureWarning)
    assert [str(w.message) for w in seen] == ["something the user should see"]

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    with quiet_progress_bars(notices=True):
        assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() >= hf_logging.ERROR
    assert (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()) == (bars, verbosity)


def test_the_gguf_readers_own_bar_is_off_inside_and_restored_after():
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    if not hasattr(gguf_utils, "tqdm"):
        pytest.skip("this transformers draws no bar of its own in the GGUF reader")
    before = gguf_utils.tqdm
    with quiet_progress_bars():
        assert gguf_utils.tqdm(range(2)).disable
    assert gguf_utils.tqdm is before


def test_bars_stay_off_until_the_last_of_overlapping_loads_ends():
    """Two models loading on two threads: the first to finish must not switch the bars back on
    under the other (the torch engine's bars showed in a recording that loads both at once)."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    first, second = quiet_progress_bars(), quiet_progress_bars()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not hf_logging.is_progress_bar_enabled()
    second.__exit__(None, None, None)
    assert hf_logging.is_progress_bar_enabled()
