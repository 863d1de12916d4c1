"""llama.cpp (``llama-cpp-python``) behind the ``roro_local`` provider, for ``local_stepwise.py``.

Only for the benchmark: it answers "would llama.cpp serve the stepwise workload faster than our
engine?" on the same GGUF files, prompts and stop rule. llama-cpp-python's Python API runs one
sequence at a time; ``Llama.generate`` keeps the KV of the previous sequence and re-evaluates only
the tokens after the longest common prefix (its built-in prompt reuse), so requests are served
one by one in arrival order by one worker thread per model. Greedy (``temp=0``); no logprobs.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from pathlib import Path

from roro_sdk.local.engine import EngineStats, GenerationRequest, GenerationResult
from roro_sdk.local.prompting import render_prompt
from roro_sdk.local.stops import find_stop


class LlamaCppEngine:
    def __init__(self, name: str, gguf: Path, hf_tokenizer, *, threads: int, n_ctx: int = 4096):
        from llama_cpp import Llama

        self.name = name
        self.tokenizer = hf_tokenizer  # the chat template and the text of token ids, as the engine has them
        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
                         verbose=False)
        self.stats = EngineStats()
        self.eos = {self.llm.token_eos(), *(t for t in [hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id] if t is not None)}
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True, name=f"llamacpp-{name}").start()

    def encode(self, messages) -> tuple[list[int], bool]:
        text, prefix_mode, templated = render_prompt(self.tokenizer, messages)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=not templated, special=True), prefix_mode

    def submit(self, request: GenerationRequest) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((request, fut))
        return fut

    def generate(self, requests):
        return [f.result() for f in [self.submit(r) for r in requests]]

    def close(self) -> None:
        pass

    def _work(self) -> None:
        while True:
            request, fut = self._queue.get()
            try:
                fut.set_result(self._one(request))
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)

    def _one(self, r: GenerationRequest) -> GenerationResult:
        if r.logprobs:
            raise ValueError("the llama.cpp benchmark backend returns no logprobs")
        ids, prefix_mode = self.encode(r.messages)
        cached = list(self.llm._input_ids[: self.llm.n_tokens])
        reused = next((i for i, (a, b) in enumerate(zip(cached, ids)) if a != b), min(len(cached), len(ids)))
        reused = min(reused, len(ids) - 1)
        self.stats.requests += 1
        self.stats.prompt_tokens += len(ids)
        self.stats.reused_tokens += reused
        self.stats.prefill_tokens += len(ids) - reused
        limit = r.max_tokens or 512
        out: list[int] = []
        finish, text = "length", ""
        for tok in self.llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, reset=True):
            if tok in self.eos:
                finish = "stop"
                self.stats.completion_tokens += 1
                break
            out.append(tok)
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            if find_stop(text, r.stop) is not None:
                finish = "stop"
                break
            if len(out) >= limit:
                break
        self.stats.completion_tokens += len(out)
        self.stats.decode_steps += len(out)
        self.stats.decode_rows += len(out)
        match = find_stop(text, r.stop)
        return GenerationResult(text=match.content if match else text, finish_reason=finish, prompt_tokens=len(ids),
                                completion_tokens=len(out) + (finish == "stop" and not match), prefix_mode=prefix_mode,
                                batch_size=1, token_ids=out)


class _AsyncFace:
    def __init__(self, engine: LlamaCppEngine):
        self.engine = engine

    async def submit(self, request):
        import asyncio

        return await asyncio.wrap_future(self.engine.submit(request))


def gguf_file(name: str) -> Path:
    """The model's verified GGUF file, assembled once into the roro cache (``gguf/``)."""
    from roro_sdk.local.registry import _assemble, default_cache_dir, get_local_entry

    entry = get_local_entry(name)
    folder = default_cache_dir().parent / "gguf" / name
    target = folder / entry.gguf_name
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _assemble(entry, folder)
    return target


def install(*, threads: int) -> float:
    """Serve the default pool's models through llama.cpp; return the load time in seconds."""
    from transformers import AutoTokenizer

    from roro_sdk.defaults import DEFAULT_LARGE, DEFAULT_SMALL
    from roro_sdk.local import ensure_local_model, register_local_provider
    from roro_sdk.local import provider as prov

    register_local_provider()
    t0 = time.perf_counter()
    for name in (DEFAULT_SMALL, DEFAULT_LARGE):
        tok = AutoTokenizer.from_pretrained(str(ensure_local_model(name)), local_files_only=True)
        engine = LlamaCppEngine(name, gguf_file(name), tok, threads=threads)
        slot = prov._slot(name)
        slot.engine, slot.batcher = engine, _AsyncFace(engine)
    return time.perf_counter() - t0
