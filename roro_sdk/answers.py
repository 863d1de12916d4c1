"""Finding the final answer in reasoning text, and checking it against a reference.

Extraction order: the last ``\\boxed{...}``, then the last ``Answer:`` line, then (only when asked)
the last number in the text. Checking is numeric with a tolerance when both sides parse as
numbers (fractions and LaTeX ``\\frac`` included), then yes/no and multiple-choice letters, then
normalised text, then ``math-verify`` when it is installed.

Answers are model output, so nothing here may raise or run long on them: a number is parsed only
when its text is at most :data:`MAX_NUMBER_CHARS` characters with a decimal exponent of at most
:data:`MAX_EXPONENT` (``1e400`` parses; ``1e100000000`` is compared as text), and numbers are
compared exactly as fractions, never through ``float`` (which overflows past ~1.8e308).
"""

from __future__ import annotations

import re
from fractions import Fraction

# Longer text is not read as a number: the regexes below stay linear and Fraction stays small.
MAX_NUMBER_CHARS = 1000
# Fraction("1e100000000") builds a 100-million-digit integer (minutes); refuse such exponents.
MAX_EXPONENT = 1000
_EXPONENT_RE = re.compile(r"[eE]\s*[+-]?\s*(\d+)")

_ANSWER_RE = re.compile(r"(?:final\s+answer|answer)\s*(?:is)?\s*[:：]\s*(.+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FRAC_RE = re.compile(r"^\\d?frac\{([^{}]+)\}\{([^{}]+)\}$")
_CHOICE_RE = re.compile(r"^\(?([A-Ea-e])\)?[.):]?$")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unbalanced: the model was cut off inside the box


def find_marked_answer(text: str) -> str | None:
    """The answer if the text carries an explicit marker (``\\boxed{}`` or ``Answer:``), else None."""
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    matches = _ANSWER_RE.findall(text)
    if matches:
        ans = matches[-1].strip().splitlines()[0].strip()
        ans = ans.strip().strip("*$. ").strip()
        inner = _last_boxed(ans)
        return inner or ans or None
    return None


def extract_answer(text: str, *, fallback_last_number: bool = True) -> str | None:
    """The final answer of a solution text (None when there is none)."""
    marked = find_marked_answer(text)
    if marked is not None:
        return marked
    if fallback_last_number:
        nums = _NUMBER_RE.findall(text)
        if nums:
            return nums[-1].replace(",", "")
    return None


def parse_number(s: str) -> Fraction | None:
    """A number from answer text: ``1,234``, ``$5``, ``50%``, ``3/4``, ``\\frac{3}{4}``, ``-2.5``, ``x = 7``.

    None when the text is not a number, or is beyond :data:`MAX_NUMBER_CHARS` / :data:`MAX_EXPONENT`."""
    if len(s) > MAX_NUMBER_CHARS:
        return None
    t = s.strip().replace("\\!", "").replace("\\,", "").replace("$", "").replace("\\%", "%")
    t = re.sub(r"^[a-zA-Z]\s*=\s*", "", t)  # "x = 7"
    t = re.sub(r"\\text\{[^}]*\}", "", t).strip()
    m = _FRAC_RE.match(t)
    if m:
        a, b = parse_number(m.group(1)), parse_number(m.group(2))
        return a / b if a is not None and b not in (None, 0) else None
    t = t.rstrip("%").strip()
    t = re.sub(r"\s*(dollars?|cents?|units?|meters?|km|kg|hours?|minutes?|days?|years?|people|items?)\.?$", "", t, flags=re.I)
    t = t.replace(",", "")
    if any(int(e) > MAX_EXPONENT for e in _EXPONENT_RE.findall(t)):
        return None
    try:
        if "/" in t:
            a, b = t.split("/", 1)
            return Fraction(a.strip()) / Fraction(b.strip())
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().strip(".").strip("$").lower())


def check_answer(predicted: str | None, reference: str | None, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Whether ``predicted`` matches ``reference`` (False when either is missing)."""
    if predicted is None or reference is None:
        return False
    p, r = parse_number(predicted), parse_number(reference)
    if p is not None and r is not None:
        return _close(p, r, rel_tol, abs_tol)
    pn, rn = _norm_text(predicted), _norm_text(reference)
    if pn in ("yes", "no", "true", "false") or rn in ("yes", "no", "true", "false"):
        truthy = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
        return truthy.get(pn) is not None and truthy.get(pn) == truthy.get(rn)
    pc, rc = _CHOICE_RE.match(pn), _CHOICE_RE.match(rn)
    if pc and rc:
        return pc.group(1).lower() == rc.group(1).lower()
    if pn == rn:
        return True
    return _math_verify(predicted, reference)


def _close(p: Fraction, r: Fraction, rel_tol: float, abs_tol: float) -> bool:
    """``math.isclose`` in exact arithmetic: no float overflow, no lost digits."""
    return abs(p - r) <= max(Fraction(rel_tol) * max(abs(p), abs(r)), Fraction(abs_tol))


def _math_verify(predicted: str, reference: str) -> bool:
    if max(len(predicted), len(reference)) > MAX_NUMBER_CHARS:
        return False  # sympy parsing of very long LaTeX can run for minutes
    try:
        from math_verify import parse, verify
    except ImportError:
        return False
    try:
        return bool(verify(parse(f"${reference}$"), parse(f"${predicted}$")))
    except Exception:  # math-verify raises on unparsable LaTeX; that is a mismatch, not a crash
        return False
