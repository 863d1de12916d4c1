"""Turn OpenAI chat messages into the text a local model continues.

Two generation modes (DESIGN.md section 2):

* **prefix mode** -- the last message has role ``assistant``: the model *continues* that text.
  With a chat template this is ``apply_chat_template(messages, continue_final_message=True)``;
  the prompt then ends with the partial assistant text, and only the continuation is returned.
  Because the prefix is passed as *text* and re-tokenised by each model's own tokenizer, a model
  can continue text written by a model of another family (SmolLM2 continuing Qwen).
* **chat mode** -- anything else: ``apply_chat_template(messages, add_generation_prompt=True)``.

Tokenizers without a chat template get a plain rendering (documented in docs/local-models.md)::

    ### System
    <content>

    ### User
    <content>

    ### Assistant
    <content of a final assistant message, continued in prefix mode>

Chat mode ends with ``"### Assistant\\n"`` so the continuation starts directly with content in
both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _text_of(content: Any) -> str:
    """Message content as text: strings as is, OpenAI content parts joined, ``None`` as ``""``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise ValueError(f"local models accept text content only, got a part of type {part.get('type')!r}")
        return "".join(parts)
    return str(content)


def normalise_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """Plain ``{"role", "content"}`` dicts (pydantic/litellm Message objects accepted)."""
    out = []
    for m in messages:
        if not isinstance(m, dict):
            m = m.model_dump() if hasattr(m, "model_dump") else dict(m)
        role = m.get("role")
        if not role:
            raise ValueError(f"a message has no role: {m!r}")
        out.append({"role": str(role), "content": _text_of(m.get("content"))})
    if not out:
        raise ValueError("messages is empty")
    return out


def render_plain(messages: list[dict[str, str]], prefix_mode: bool) -> str:
    """The documented fallback rendering for tokenizers without a chat template."""
    body = messages[:-1] if prefix_mode else messages
    text = "".join(f"### {m['role'].capitalize()}\n{m['content']}\n\n" for m in body)
    text += "### Assistant\n"
    if prefix_mode:
        text += messages[-1]["content"]
    return text


def render_prompt(tokenizer: Any, messages: Sequence[Any]) -> tuple[str, bool, bool]:
    """``(prompt_text, prefix_mode, used_chat_template)`` for ``messages``.

    With a chat template the text already holds any BOS token the template adds, so it must be
    tokenised with ``add_special_tokens=False``; the plain rendering needs ``True``.
    """
    msgs = normalise_messages(messages)
    prefix_mode = msgs[-1]["role"] == "assistant"
    if getattr(tokenizer, "chat_template", None):
        if prefix_mode:
            text = tokenizer.apply_chat_template(msgs, continue_final_message=True, tokenize=False)
        else:
            text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return text, prefix_mode, True
    return render_plain(msgs, prefix_mode), prefix_mode, False
