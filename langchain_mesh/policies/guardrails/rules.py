"""Text rules: PII detectors and forbidden terms, each a regex that finds candidates and a check that
confirms them, usable on a whole text and on a stream held back only as far as a match may reach.

    rule = pii_rule(name="pii", action="redact", entities=["EMAIL", "CREDIT_CARD"])
    text, found = rule.apply("card 4111 1111 1111 1111")   # "card [CREDIT_CARD]", ["CREDIT_CARD"]

What detects what, and why (no detector sends text anywhere; everything runs offline):

* ``PHONE``: a loose candidate pattern confirmed by ``phonenumbers`` (Google's libphonenumber,
  maintained, offline metadata for every country): ``is_valid_number``, so dates and order numbers
  are not phones.
* ``CREDIT_CARD``: 13-19 digits (spaces or dashes between) that pass the Luhn check; ``IBAN``:
  ISO 13616 shape that passes the ISO 7064 mod-97 check. Both checksums are a few lines, written
  here rather than pulling a library for each (schwifty, python-stdnum) into the gateway.
* ``EMAIL`` and ``API_KEY`` (OpenAI/Anthropic ``sk-``, AWS ``AKIA``/``ASIA``, Google ``AIza``,
  GitHub ``ghp_``..., Slack ``xox?-``, Hugging Face ``hf_``, GitLab ``glpat-``, JWTs, bearer tokens):
  shape patterns.
* Person names are NOT detected: every maintained detector needs a statistical NER model
  (presidio-analyzer's name recognizer is spaCy's, whose model is a separate download that an offline
  gateway does not have; its pattern recognizers alone cover the entities above and would add spaCy
  to the install). A ``judge`` guardrail on a local model is the way to police names.

The patterns use the ``regex`` module (not ``re``) for its partial matching: on a stream, the text
after the last point no match can still cross is held back, and nothing else (see
:meth:`TextRule.safe_end`), so a card number split across two chunks is redacted whole and ordinary
text flows on at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import regex

__all__ = ["TextRule", "Finding", "safe_end", "pii_rule", "terms_rule", "luhn_ok", "iban_ok", "ENTITIES"]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = "".join(ch for ch in text if ch.isdigit())
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _phone(text: str) -> bool:
    import phonenumbers

    try:
        # no + : read as a North American number (the most common unprefixed form in our traffic)
        number = phonenumbers.parse(text, None if text.lstrip().startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


# (entity, pattern, confirm) in the order overlaps are settled: the first to claim a span keeps it
_PII: list[tuple[str, str, Optional[Callable[[str], bool]]]] = [
    ("API_KEY", r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"
                r"|AIza[0-9A-Za-z_-]{35}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abpr]-[A-Za-z0-9-]{10,}"
                r"|hf_[A-Za-z0-9]{30,}|glpat-[A-Za-z0-9_-]{20,}"
                r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
                r"|[Bb][Ee][Aa][Rr][Ee][Rr]\s[A-Za-z0-9._~+/=-]{16,})", None),
    ("EMAIL", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", None),
    ("CREDIT_CARD", r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])", _card),
    ("IBAN", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", iban_ok),
    ("PHONE", r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d[\d .-]{5,14}\d(?!\w)", _phone),
]

ENTITIES = tuple(e for e, _p, _c in _PII)

# What a text must contain for an entity to be looked for at all, each a C-speed test made once per
# text (not once per entity: as generator expressions they were half of what a guarded chat request
# cost): most prose has no '@', no 16-character word, and many prompts no digit, so most patterns never
# run on it. EMAIL is then searched only around each '@' (a local part is at most 64 characters, RFC 5321).
_DIGIT = re.compile(r"[0-9]").search
_LONG_WORD = re.compile(r"(?<!\S)\S{16}").search  # a word of 16 characters or more (\s: str.isspace's set)
_DIGIT_ENTITIES = ("CREDIT_CARD", "IBAN", "PHONE")


def _lacking(text: str) -> frozenset[str]:
    """The hinted entities ``text`` cannot contain."""
    return _LACKING[_DIGIT(text) is None, "@" not in text, _LONG_WORD(text) is None]


_LACKING = {(d, e, k): frozenset((_DIGIT_ENTITIES if d else ()) + (("EMAIL",) if e else ()) + (("API_KEY",) if k else ()))
            for d in (False, True) for e in (False, True) for k in (False, True)}


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    label: str


@dataclass
class TextRule:
    """One text guardrail: candidates by regex, confirmed by ``checks[label]``, then redacted,
    blocked or flagged. ``stages`` says on which side it runs."""

    name: str
    action: str  # redact | block | flag
    stages: frozenset[str]
    parts: list[tuple[str, Any, Optional[Callable[[str], bool]]]]  # (label, compiled pattern, check)
    keys: tuple[str, ...] = ()
    mask: Callable[[str], str] = field(default=lambda label: f"[{label}]")
    hinted: bool = False  # PII parts: skip an entity the text cannot contain (_lacking)

    def find(self, text: str) -> list[Finding]:
        """Confirmed, non-overlapping findings in ``text``, in order."""
        found: list[Finding] = []
        lacking = _lacking(text) if self.hinted else frozenset()
        for label, pattern, check in self.parts:
            if label in lacking:
                continue
            for m in self._candidates(label, pattern, text):
                if m.start() == m.end() or any(f.start < m.end() and m.start() < f.end for f in found):
                    continue  # an earlier entity (or an earlier window around another '@') claimed it
                if check is not None and not check(m.group()):
                    continue
                found.append(Finding(m.start(), m.end(), label))
        return sorted(found, key=lambda f: f.start)

    def _candidates(self, label: str, pattern: Any, text: str) -> Iterator[Any]:
        if label != "EMAIL" or not self.hinted:
            return pattern.finditer(text)
        return self._emails(pattern, text)

    @staticmethod
    def _emails(pattern: Any, text: str) -> Iterator[Any]:
        at = text.find("@")
        while at >= 0:
            yield from pattern.finditer(text, max(0, at - 65), at + 256)
            at = text.find("@", at + 1)

    def redact(self, text: str, found: list[Finding]) -> str:
        out, at = [], 0
        for f in found:
            out.append(text[at:f.start])
            out.append(self.mask(f.label))
            at = f.end
        out.append(text[at:])
        return "".join(out)

    def held_from(self, text: str) -> int:
        """Where the first candidate that reaches the end of ``text`` starts (it may go on in the
        next chunk of a stream); ``len(text)`` when none does."""
        end = len(text)
        for _label, pattern, _check in self.parts:
            for m in pattern.finditer(text, partial=True):
                if m.partial or m.end() >= len(text):
                    end = min(end, m.start())
                    break
        return end

    def straddling(self, text: str, end: int) -> int:
        """``end`` moved back to the start of any finished candidate that crosses it."""
        for _label, pattern, _check in self.parts:
            for m in pattern.finditer(text):
                if m.start() < end < m.end():
                    end = m.start()
        return end


def safe_end(rules: list[TextRule], text: str) -> int:
    """How much of a stream's held ``text`` the ``rules`` can judge now: the rest waits for more."""
    end = min((r.held_from(text) for r in rules), default=len(text))
    while True:
        moved = min((r.straddling(text, end) for r in rules), default=end)
        if moved == end:
            return end
        end = moved


def pii_rule(name: str, action: str, stages: frozenset[str], entities: Optional[list[str]] = None,
             keys: tuple[str, ...] = ()) -> TextRule:
    wanted = set(entities or ENTITIES)
    parts = [(label, regex.compile(p), c) for label, p, c in _PII if label in wanted]
    return TextRule(name, action, stages, parts, keys, hinted=True)


def terms_rule(name: str, action: str, stages: frozenset[str], terms: list[str], patterns: list[str],
               keys: tuple[str, ...] = ()) -> TextRule:
    parts: list[tuple[str, Any, Optional[Callable[[str], bool]]]] = []
    if terms:
        words = "|".join(regex.escape(t) for t in sorted(terms, key=len, reverse=True))
        parts.append(("TERM", regex.compile(rf"(?i)(?<!\w)(?:{words})(?!\w)"), None))
    for p in patterns:
        parts.append(("PATTERN", regex.compile(p), None))
    return TextRule(name, action, stages, parts, keys, mask=lambda label: "[REDACTED]")
