"""Shared helpers for local Hugging Face causal LMs: load, build tiny random ones, LoRA, read logits.

Used by the local Judge and Rubricor (and their trainer) and meant for any other trainer that puts
a causal LM behind a decision (the GRPO router). Everything here is plain transformers/peft; torch
and transformers are imported when this module is imported, so import it lazily.

* :func:`word_tokenizer` builds a word-level tokenizer on the fly from a corpus (no download);
  :func:`tiny_causal_lm` a randomly initialised Qwen2/Llama model (hidden ~64, 2 layers) for it.
  Together they give tests a real transformers model that trains in seconds on a CPU.
* :func:`load_causal_lm` loads a folder, a hub id already in the local cache, or a name of the
  local-model registry (:mod:`roro_sdk.local`), with an optional LoRA adapter.
* :func:`add_lora`, :func:`save_adapter`, :func:`load_adapter`: peft adapters, safetensors only.
* :func:`encode_batch`, :func:`decoder_of`, :func:`decoder_states`, :func:`token_logits`: the one-forward read-out of
  next-token logits of a few chosen tokens at chosen positions, without the full-vocabulary
  logits (a judge reads P(yes) this way, a router its action tokens).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._extras import require
from ._quiet import quiet_peft_internals, quiet_progress_bars

require("torch", extra="train")  # one line naming the extra, not a torch traceback
import torch
from torch import Tensor

from .errors import ConfigError, ModelUnavailableError, UnsafeWeightsError

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>"}
# Words every on-the-fly vocabulary holds: answers, digits, punctuation, the templates' own words.
BASE_WORDS = (
    "yes no true false met include weight hard rule principle criterion criteria rubric question step steps "
    "answer final model cost total small large query trajectory ok by of the a is was it to and in on with "
    "0 1 2 3 4 5 6 7 8 9 . , : ; ? ! $ ( ) [ ] { } \" ' - + * / = # % < > _"
).split()


def set_seed(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- tokenizers
def word_tokenizer(corpus: Iterable[str] = (), *, vocab: Iterable[str] = (), lowercase: bool = True,
                   max_vocab: int | None = None, min_freq: int = 1):
    """A word-level ``PreTrainedTokenizerFast`` built from ``corpus`` (texts) and ``vocab`` (words).

    Pre-tokenisation splits on whitespace and punctuation and splits numbers into single digits,
    so a small vocabulary covers prices and step numbers. Unknown words map to ``<unk>``.
    ``max_vocab`` keeps the most frequent corpus words (the base words always stay).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from tokenizers import decoders as tk_decoders
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    norm = normalizers.Lowercase() if lowercase else None
    counts: Counter[str] = Counter()
    for text in corpus:
        t = text.lower() if lowercase else text
        counts.update(w for w, _ in pre.pre_tokenize_str(t))
    words: list[str] = list(SPECIAL_TOKENS.values())
    seen = set(words)

    def add(w: str) -> None:
        if w not in seen:
            seen.add(w)
            words.append(w)

    for w in BASE_WORDS:
        add(w.lower() if lowercase else w)
    for w in vocab:
        add(w.lower() if lowercase else w)
    ranked = [w for w, c in counts.most_common() if c >= min_freq]
    if max_vocab is not None:
        ranked = ranked[: max(0, max_vocab - len(words))]
    for w in ranked:
        add(w)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre
    if norm is not None:
        tok.normalizer = norm
    tok.decoder = tk_decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.padding_side = "right"
    return fast


# ----------------------------------------------------------------------------- models
def tiny_causal_lm(tokenizer_or_vocab_size: Any, *, arch: str = "qwen2", hidden_size: int = 64, num_layers: int = 2,
                   num_heads: int = 4, num_kv_heads: int | None = None, intermediate_size: int | None = None,
                   max_positions: int = 4096, tie_word_embeddings: bool = True, init_std: float = 0.1, seed: int = 0,
                   sliding_window: int | None = None):
    """A randomly initialised causal LM (Qwen2 or Llama architecture) sized for CPU tests.

    ``init_std`` (the config's ``initializer_range``) defaults to 0.1, five times transformers'
    0.02: at 0.02 a tiny model's last hidden state hardly depends on the context (attention is
    near uniform and the current token's embedding dominates), so any read-out that has to tell
    contexts apart (a Judge's criteria, a Rubricor's candidates) starts flat and learns slowly.

    ``sliding_window`` (Qwen2 only) limits every layer's attention to the last W tokens: a tiny
    router then reads the recent steps instead of averaging over hundreds of random-attention
    tokens, and learns in minutes on a CPU. It is a property of the model, so one-pass training
    and step-by-step inference still see exactly the same contexts."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if isinstance(tokenizer_or_vocab_size, int):
        vocab, pad, bos, eos = tokenizer_or_vocab_size, 0, None, None
    else:
        tk = tokenizer_or_vocab_size
        vocab, pad, bos, eos = len(tk), tk.pad_token_id, tk.bos_token_id, tk.eos_token_id
    kw = dict(vocab_size=vocab, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
              num_key_value_heads=num_kv_heads or num_heads, intermediate_size=intermediate_size or 2 * hidden_size,
              max_position_embeddings=max_positions, tie_word_embeddings=tie_word_embeddings,
              pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, initializer_range=init_std)
    if arch == "qwen2":
        if sliding_window:
            kw.update(use_sliding_window=True, sliding_window=sliding_window, max_window_layers=0)
        cfg, cls = Qwen2Config(**kw), Qwen2ForCausalLM
    elif arch == "llama":
        cfg, cls = LlamaConfig(**kw), LlamaForCausalLM
    else:
        raise ConfigError(f"arch must be 'qwen2' or 'llama', got {arch!r}")
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(cfg)
    model.eval()
    return model


def tiny_model_and_tokenizer(corpus: Iterable[str] = (), *, seed: int = 0, **model_kw: Any):
    """``(model, tokenizer)``: :func:`word_tokenizer` over ``corpus`` plus :func:`tiny_causal_lm`."""
    tok = word_tokenizer(corpus)
    return tiny_causal_lm(tok, seed=seed, **model_kw), tok


def save_model(model: Any, tokenizer: Any, folder: str | os.PathLike[str]) -> Path:
    """Save a model (safetensors) and its tokenizer so :func:`load_causal_lm` can read the folder."""
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p, safe_serialization=True)
    tokenizer.save_pretrained(p)
    return p


# Weight files that are Python pickles: loading one can run arbitrary code, so they are refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(folder: str | os.PathLike[str], what: str = "model") -> None:
    """Refuse a local weights folder that holds pickle weights and no safetensors
    (:class:`~roro_sdk.errors.UnsafeWeightsError` naming the file); anything else passes (a
    non-folder is left to the loader)."""
    p = Path(folder)
    if not p.is_dir() or any(p.glob("*.safetensors")):
        return
    pickles = sorted(f for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES and f.is_file())
    if pickles:
        raise UnsafeWeightsError(
            f"{pickles[0]} is a pickle checkpoint and {p} has no .safetensors weights: roro loads the {what} from "
            "safetensors only (a pickle can run code when loaded). If you trust the file, convert it once, e.g. "
            "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(new_folder, safe_serialization=True)")


def _resolve(name_or_path: str) -> str:
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    try:  # a name of the local-model registry (models shipped in PyPI packages)
        from .local.registry import ensure_local_model

        return str(ensure_local_model(name_or_path))
    except ImportError:
        return name_or_path
    except Exception as e:
        if "unknown" in str(e).lower() or isinstance(e, KeyError):
            return name_or_path  # not a registry name: let transformers try the hub cache
        raise


def _load_tokenizer(src: str, auto: Any) -> Any:
    """A plain ``tokenizers`` tokenizer (what :func:`word_tokenizer` saves) must not be reloaded as
    the model family's tokenizer class, which would rebuild it from absent vocab files."""
    import json

    cfg = Path(src) / "tokenizer_config.json"
    if cfg.is_file():
        try:
            cls = json.loads(cfg.read_text()).get("tokenizer_class")
        except ValueError:
            cls = None
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(src, local_files_only=True)
    return auto.from_pretrained(src, local_files_only=True)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None) is the GPU where torch sees one, else the CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {str(device)!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: torch sees no CUDA GPU here; use 'cpu' or 'auto'")
    return dev


def load_causal_lm(name_or_path: str, *, adapter: str | os.PathLike[str] | None = None, trainable_adapter: bool = False,
                   dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` from a folder, a cached hub id or a local-registry name, with an
    optional LoRA adapter folder, on ``device`` (``auto``: the GPU if there is one). The model is
    in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _resolve(str(name_or_path))
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}.get(dtype)
        if dtype is None:
            raise ConfigError("dtype must be one of float32, bfloat16, float16")
    require_safetensors(src)
    try:
        tok = _load_tokenizer(src, AutoTokenizer)
        with quiet_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype or torch.float32, use_safetensors=True,
                                                         local_files_only=True)  # a folder or the hub cache, never a download
    except OSError as e:
        raise ModelUnavailableError(f"cannot load the causal LM {name_or_path!r}: {e}; pass a model folder, a "
                                    "local-registry name (see 'roro local list') or a hub id in the local cache") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.to(resolve_device(device))
    if adapter is not None:
        model = load_adapter(model, adapter, trainable=trainable_adapter)
    model.eval()
    return model, tok


# ----------------------------------------------------------------------------- LoRA
def has_adapter(model: Any) -> bool:
    return hasattr(model, "peft_config")


def add_lora(model: Any, *, r: int = 8, alpha: int = 16, dropout: float = 0.0,
             target_modules: str | Sequence[str] = "all-linear", seed: int = 0):
    """Wrap ``model`` in a fresh trainable LoRA adapter (peft). Base weights stay frozen."""
    require("peft", extra="train")
    from peft import LoraConfig, get_peft_model

    if r <= 0:
        raise ConfigError(f"LoRA rank must be positive, got {r}")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", task_type="CAUSAL_LM",
                     target_modules=target_modules if isinstance(target_modules, str) else list(target_modules))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with quiet_peft_internals():
            return get_peft_model(model, cfg)


def save_adapter(model: Any, folder: str | os.PathLike[str]) -> Path:
    """Save the LoRA adapter of a peft model as safetensors (``adapter_model.safetensors``)."""
    if not has_adapter(model):
        raise ConfigError("this model has no LoRA adapter to save; call add_lora() first")
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p, safe_serialization=True)
    if not (p / "adapter_model.safetensors").is_file():  # pragma: no cover - peft always writes it
        raise ModelUnavailableError(f"peft did not write {p / 'adapter_model.safetensors'}")
    return p


def load_adapter(model: Any, folder: str | os.PathLike[str], *, trainable: bool = False):
    """Load a saved LoRA adapter onto ``model`` (a base model, or a peft model whose adapter is replaced)."""
    require("peft", extra="train")
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    p = Path(folder)
    weights = p / "adapter_model.safetensors"
    require_safetensors(p, "LoRA adapter")
    if not weights.is_file():
        raise ModelUnavailableError(f"no adapter_model.safetensors in {p}; adapters are saved as safetensors only")
    if has_adapter(model):  # same architecture: swap the weights in place
        set_peft_model_state_dict(model, load_file(str(weights)))
        for n, prm in model.named_parameters():
            if "lora_" in n:
                prm.requires_grad_(trainable)
        return model
    with quiet_peft_internals():
        return PeftModel.from_pretrained(model, str(p), is_trainable=trainable)  # reads adapter_model.safetensors first


# ----------------------------------------------------------------------------- read-out
def single_token_ids(tokenizer: Any, variants: Iterable[str]) -> list[int]:
    """Ids of the variants that are one token each (e.g. ``" yes"``, ``"Yes"``), deduplicated."""
    out: list[int] = []
    for v in variants:
        ids = tokenizer.encode(v, add_special_tokens=False)
        if len(ids) == 1 and ids[0] != tokenizer.unk_token_id and ids[0] not in out:
            out.append(ids[0])
    return out


def yes_no_token_ids(tokenizer: Any, yes: Sequence[str] = (" yes", "yes", " Yes", "Yes", " YES"),
                     no: Sequence[str] = (" no", "no", " No", "No", " NO")) -> tuple[list[int], list[int]]:
    """The single-token spellings of yes and of no; raises if either has none."""
    y, n = single_token_ids(tokenizer, yes), single_token_ids(tokenizer, no)
    if not y or not n:
        raise ConfigError("the tokenizer has no single-token 'yes'/'no'; pass other answer words")
    return y, n


def encode_batch(tokenizer: Any, texts: Sequence[str], *, max_length: int | None = None,
                 truncate_left: bool = True) -> tuple[Tensor, Tensor]:
    """Right-padded ``(input_ids, attention_mask)``. Over-long texts lose their *beginning* by
    default (the read-out positions are at the end)."""
    rows = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if max_length is not None:
        rows = [r[-max_length:] if truncate_left else r[:max_length] for r in rows]
    width = max((len(r) for r in rows), default=0) or 1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
    return ids, mask


def unwrap_adapter(model: Any) -> Any:
    """The transformers model under an optional peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_of(model: Any) -> Any:
    """The decoder stack (``Qwen2Model``/``LlamaModel``-like) that returns last hidden states."""
    base = unwrap_adapter(model)
    get_decoder = getattr(base, "get_decoder", None)
    dec = get_decoder() if callable(get_decoder) else None
    if dec is None:
        dec = getattr(base, "model", None)
    if dec is None:
        raise TypeError(f"cannot find the decoder of {type(base).__name__}: expected get_decoder() or .model")
    return dec


@functools.lru_cache(maxsize=None)
def _cache_kwarg_of(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def cache_kwarg(module: Any) -> str:
    """The KV-cache argument ``module.forward`` takes: transformers 5.x renamed ``past_key_values``
    to ``cache`` (the old name warns until 5.40). Looked up once per class."""
    return _cache_kwarg_of(type(module))


def decoder_states(model: Any, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Last hidden states ``[B, L, H]`` (decoder only: the LM head is not applied). Right padding."""
    dev = next(model.parameters()).device
    if attention_mask is not None and bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
        # Right padding: causal attention never lets a real token see a pad, so no mask is needed
        # and the fast causal kernel applies (results at real positions are unchanged).
        attention_mask = None
    out = decoder_of(model)(input_ids=input_ids.to(dev), attention_mask=None if attention_mask is None else attention_mask.to(dev),
                          use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def prefix_suffix_states(model: Any, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]],
                         owner: Sequence[int], pad_id: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Hidden states of many suffixes that share a few prefixes, computing each prefix once.

    ``owner[j]`` is the index of the prefix that suffix ``j`` continues. The prefixes run in one
    left-padded forward with a KV cache; the cache rows are gathered per suffix and the suffixes
    run in one right-padded forward on top (positions continue each prefix's real length), so
    suffix ``j`` sees exactly ``prefixes[owner[j]] + suffixes[j]`` and nothing else. Returns
    ``(prefix_states [P, Lp, H] left-padded, prefix_pad [P] (pad count per row), suffix_states
    [S, Ls, H] right-padded)``. Differentiable when grad is enabled.
    """
    from transformers import DynamicCache

    dev = next(model.parameters()).device
    lp = max(len(x) for x in prefixes)
    ids_p = torch.full((len(prefixes), lp), pad_id, dtype=torch.long)
    mask_p = torch.zeros_like(ids_p)
    for i, row in enumerate(prefixes):
        if row:
            ids_p[i, lp - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask_p[i, lp - len(row):] = 1
    pos_p = (mask_p.cumsum(1) - 1).clamp(min=0)
    dec = decoder_of(model)
    cache = DynamicCache()
    out = dec(input_ids=ids_p.to(dev), attention_mask=mask_p.to(dev), position_ids=pos_p.to(dev), use_cache=True,
              **{cache_kwarg(dec): cache})
    p_states = out.last_hidden_state
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None) or cache
    own = torch.tensor(list(owner), dtype=torch.long)
    cache.batch_select_indices(own.to(dev))
    ls = max(len(x) for x in suffixes)
    ids_s = torch.full((len(suffixes), ls), pad_id, dtype=torch.long)
    mask_s = torch.zeros_like(ids_s)
    for j, row in enumerate(suffixes):
        ids_s[j, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask_s[j, : len(row)] = 1
    real = mask_p.sum(1)[own]
    pos_s = real[:, None] + torch.arange(ls)[None, :]
    full_mask = torch.cat([mask_p[own], mask_s], 1)
    out_s = dec(input_ids=ids_s.to(dev), attention_mask=full_mask.to(dev), position_ids=pos_s.to(dev), use_cache=True,
                **{cache_kwarg(dec): cache})
    return p_states, (lp - mask_p.sum(1)), out_s.last_hidden_state


def _gather(states: Tensor, positions: Tensor | Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Hidden states at ``positions[b] = [p0, p1, ...]`` (padded with -1) -> ``[N, H]`` and the row index."""
    if not isinstance(positions, Tensor):
        width = max((len(p) for p in positions), default=0)
        positions = torch.tensor([list(p) + [-1] * (width - len(p)) for p in positions], dtype=torch.long)
    positions = positions.to(states.device)
    b_idx, slot = torch.nonzero(positions >= 0, as_tuple=True)
    return states[b_idx, positions[b_idx, slot]], b_idx


def token_logits(model: Any, input_ids: Tensor, attention_mask: Tensor, positions: Tensor | Sequence[Sequence[int]],
                 token_ids: Sequence[int] | Sequence[Sequence[int]]) -> Tensor:
    """Next-token logits of a few tokens at chosen positions, in one forward: ``[N, K]``.

    ``positions`` is per row a list of token positions (the logits *after* that token);
    the N results are in row-major order over the valid positions. ``token_ids`` is K ids, or K
    groups of ids whose logits are combined by logsumexp (e.g. all spellings of "yes").
    """
    return token_logits_from_states(model, decoder_states(model, input_ids, attention_mask), positions, token_ids)


def token_logits_from_states(model: Any, states: Tensor, positions: Tensor | Sequence[Sequence[int]],
                             token_ids: Sequence[int] | Sequence[Sequence[int]]) -> Tensor:
    """:func:`token_logits` from precomputed :func:`decoder_states` (to reuse one forward)."""
    h, _ = _gather(states, positions)
    head = model.get_output_embeddings()
    groups = [[t] if isinstance(t, int) else list(t) for t in token_ids]
    flat = [t for g in groups for t in g]
    w = head.weight[flat]
    logits = h.to(w.dtype) @ w.t()
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[flat]
    if all(len(g) == 1 for g in groups):
        return logits.float()
    out, j = [], 0
    for g in groups:
        out.append(torch.logsumexp(logits[:, j: j + len(g)], dim=-1))
        j += len(g)
    return torch.stack(out, -1).float()


def full_logits_at(model: Any, states: Tensor, positions: Tensor | Sequence[Sequence[int]]) -> Tensor:
    """Full-vocabulary logits at chosen positions only (``[N, V]``), from precomputed states."""
    h, _ = _gather(states, positions)
    return model.get_output_embeddings()(h).float()
