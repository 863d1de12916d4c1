"""How a step is asked for, in the two generation modes.

*prefix* mode: the model continues one shared assistant text (steps joined by blank lines), so
models of different families continue each other's reasoning. *chat* mode: for chat-only APIs the
question and the steps so far go into a user turn, and the model is asked for the next step only;
every step then re-sends the whole prefix as input tokens, and the pool counts them.

The default wording is the one measured to work with small local models (DESIGN.md section 4):
a short system prompt, one worked example as a previous turn, then the problem.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from pydantic import ConfigDict, Field, field_validator

from .types import ConfigModel

STEP_DELIMITER = "\n\n"

_SYSTEM = (
    "You are a careful math tutor who shows reasoning before the answer. "
    "Write the solution as short steps separated by blank lines, then finish with 'Answer: <answer>'."
)
_EXAMPLE_Q = "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. How much change does he get?"
_EXAMPLE_STEPS = (
    "Each pen costs 3 dollars and Tom buys 4 pens, so the pens cost 4 * 3 = 12 dollars.",
    "He pays with 20 dollars, so his change is 20 - 12 = 8 dollars.",
    "Answer: 8",
)


class PromptTemplate(ConfigModel):
    """The wording of step requests. Every field is plain text a user may replace."""

    model_config = ConfigDict(extra="forbid")

    system: str = _SYSTEM
    example_question: str | None = _EXAMPLE_Q
    example_steps: tuple[str, ...] = _EXAMPLE_STEPS
    chat_instruction: str = (
        "Steps so far:\n\n{steps}\n\nWrite only the next step (one short paragraph). "
        "If the solution is complete, write 'Answer: <answer>'."
    )
    chat_first_instruction: str = "Write only the first step (one short paragraph)."
    delimiter: str = Field(STEP_DELIMITER, min_length=1)

    @field_validator("chat_instruction")
    @classmethod
    def _one_steps_placeholder(cls, v: str) -> str:
        """Checked when the template is loaded: ``.format(steps=...)`` would otherwise raise a
        KeyError at the first chat step of a run (``{oops}``), or the model would never see the steps."""
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        except ValueError as e:
            raise ValueError(f"chat_instruction is not a valid template ({e}); write a literal brace as '{{{{' or '}}}}'") from None
        unknown = fields - {"steps"}
        if unknown:
            raise ValueError(f"chat_instruction has unknown placeholder(s) {sorted(unknown)}; the only one is {{steps}} "
                             "(write a literal brace as '{{' or '}}')")
        if "steps" not in fields:
            raise ValueError("chat_instruction must contain {steps}, where the steps so far go")
        return v

    def _preamble(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}]
        if self.example_question:
            msgs.append({"role": "user", "content": self.example_question})
            msgs.append({"role": "assistant", "content": self.delimiter.join(self.example_steps)})
        return msgs

    def prefix_text(self, steps: Sequence[str]) -> str:
        """The shared assistant text that the next step continues."""
        return self.delimiter.join(steps) + self.delimiter if steps else ""

    def prefix_messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        msgs = self._preamble() + [{"role": "user", "content": question}]
        if steps:
            msgs.append({"role": "assistant", "content": self.prefix_text(steps)})
        return msgs

    def chat_messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        if steps:
            tail = self.chat_instruction.format(steps=self.delimiter.join(steps))
        else:
            tail = self.chat_first_instruction
        return self._preamble() + [{"role": "user", "content": f"{question}\n\n{tail}"}]

    def messages(self, mode: str, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        return self.prefix_messages(question, steps) if mode == "prefix" else self.chat_messages(question, steps)
