"""What every local engine does the same way, whatever computes its logits (torch or llama.cpp):
render and encode a request, check it, turn generated ids into text, stop a row, build its
OpenAI-shaped result, and the callers' face over the engine's ``submit``.

Why one place: the step delimiter, EOS and ``max_tokens`` rules, and which logprobs a result
carries, must not differ between engines, or a recorded step would depend on the backend in more
ways than its numerics.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from roro_sdk.local.prompting import render_prompt
from roro_sdk.local.rows import GenerationRequest, GenerationResult, RowState
from roro_sdk.local.stops import find_stop

# End-of-turn markers that should end generation when the tokenizer has them as special tokens.
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "</s>")


class RowText:
    """Mixin over ``self.tokenizer`` (a Hugging Face tokenizer), ``self.name``,
    ``self.max_context``, ``self.default_max_tokens``, ``self.stats`` and ``self.submit`` (queue
    one request, return a future of its :class:`GenerationResult`)."""

    tokenizer: Any
    name: str
    max_context: int
    default_max_tokens: int

    def submit(self, request: GenerationRequest) -> concurrent.futures.Future:
        raise NotImplementedError

    async def asubmit(self, request: GenerationRequest) -> GenerationResult:
        """:meth:`submit` for async callers (any event loop); cancelling the awaiting task
        withdraws the request (a running row leaves the batch at its next token)."""
        import asyncio

        # encoding renders the chat template and tokenises a long prompt: not on the event loop
        return await asyncio.wrap_future(await asyncio.to_thread(self.submit, request))

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Run ``requests`` concurrently; raise the first request's error, if any."""
        results = self.generate_many(requests)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    def generate_many(self, requests: list[GenerationRequest]) -> list[GenerationResult | Exception]:
        """Like :meth:`generate`, but a request that is invalid on its own (prompt too long,
        bad ``max_tokens``, unreadable messages) gets its exception in its slot instead of failing
        the other requests."""
        futures = [self.submit(r) for r in requests]
        out: list[GenerationResult | Exception] = []
        for f in futures:
            exc = f.exception()
            out.append(exc if exc is not None else f.result())  # type: ignore[arg-type]
        return out

    def _config_eos_ids(self) -> list[int]:
        """End ids the model's own config names (a torch model's generation config)."""
        return []

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set(self._config_eos_ids())
        source = self.tokenizer.eos_token_id
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
        specials = set(getattr(self.tokenizer, "all_special_tokens", []) or [])
        for marker in END_MARKERS:
            if marker in specials:
                tid = self.tokenizer.convert_tokens_to_ids(marker)
                if isinstance(tid, int) and tid >= 0:
                    ids.add(tid)
        return ids

    def encode(self, messages: list[Any]) -> tuple[list[int], bool]:
        """Prompt token ids and whether this is prefix mode."""
        text, prefix_mode, templated = render_prompt(self.tokenizer, messages)
        ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        return list(ids), prefix_mode

    def checked(self, r: GenerationRequest) -> tuple[list[int], bool, int]:
        """Encode and validate one request: ``(prompt ids, prefix mode, token limit)``; raises
        ``ValueError`` saying what to fix."""
        try:
            ids, prefix_mode = self.encode(r.messages)
        except (TypeError, KeyError) as exc:
            raise ValueError(str(exc)) from exc
        limit = self._limit(r, ids)
        if r.top_p is not None and not 0.0 <= float(r.top_p) <= 1.0:
            raise ValueError(f"top_p must be within [0, 1], got {r.top_p}")
        if r.temperature is not None and float(r.temperature) < 0:
            raise ValueError(f"temperature must be >= 0, got {r.temperature}")
        return ids, prefix_mode, limit

    def _limit(self, r: GenerationRequest, prompt: list[int]) -> int:
        if not prompt:
            raise ValueError("the rendered prompt is empty")
        room = self.max_context - len(prompt)
        if room <= 0:
            raise ValueError(f"the prompt has {len(prompt)} tokens; {self.name!r} takes at most {self.max_context}")
        want = self.default_max_tokens if r.max_tokens is None else int(r.max_tokens)
        if want < 1:
            raise ValueError(f"max_tokens must be >= 1, got {want}")
        return min(want, room)

    def decode_continuation(self, context_id: int | None, ids: list[int]) -> str:
        """Text of generated ``ids``. Decoding after one context token keeps a leading space that
        SentencePiece-style decoders would drop at the start of a sequence."""
        if context_id is None:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        head = self.tokenizer.decode([context_id], skip_special_tokens=True)
        full = self.tokenizer.decode([context_id, *ids], skip_special_tokens=True)
        if head and full.startswith(head):
            return full[len(head) :]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _token_text(self, tid: int) -> str:
        return self.tokenizer.decode([tid], skip_special_tokens=False)

    def advance(self, row: RowState, tid: int) -> bool:
        """Append the chosen token to ``row``; return whether the row is finished (EOS, a stop
        string in its text, or its token limit)."""
        row.generated.append(tid)
        if tid in self.eos_ids:
            row.finish = "stop"
        else:
            row.text = self.decode_continuation(row.context_id, row.generated)
            if find_stop(row.text, row.request.stop) is not None:
                row.finish = "stop"
            elif len(row.generated) >= row.limit:
                row.finish = "length"
        return row.finish is not None

    def result(self, row: RowState) -> GenerationResult:
        """The finished row as a :class:`GenerationResult` (the text cut at the first stop)."""
        req, gen = row.request, row.generated
        match = find_stop(row.text, req.stop)
        content = match.content if match is not None else row.text
        self.stats.completion_tokens += len(gen)
        logprobs = None
        if req.logprobs:
            logprobs = []
            start = 0
            for k, (lp, top_ids, top_vals) in enumerate(row.lp_raw):
                if start >= len(content):  # this token starts in the delimiter/after the cut, or is EOS
                    break
                end = len(self.decode_continuation(row.context_id, gen[: k + 1]))
                tok = self._token_text(gen[k])
                logprobs.append({
                    "token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8")),
                    "top_logprobs": [
                        {"token": (t := self._token_text(tid)), "logprob": v, "bytes": list(t.encode("utf-8"))}
                        for tid, v in zip(top_ids, top_vals)
                    ],
                })
                start = max(start, end)
        return GenerationResult(
            text=content, finish_reason=row.finish or "length", prompt_tokens=len(row.prompt),
            completion_tokens=len(gen), prefix_mode=row.prefix_mode, batch_size=row.peak_batch,
            logprobs=logprobs, token_ids=list(gen),
        )
