"""Refusal detection: does an answer decline to answer instead of naming something?

The paper counts "I couldn't find any information…" / "I cannot verify…" answers (Table 4) but its
code only checks for the word "information", which also fires on "Information technology". Here a
refusal needs a first-person or impersonal *statement of not knowing*, anchored on the verbs and
negations around it, never the topic word alone.
"""

from __future__ import annotations

import re

from knowpack.probe.matching import answer_span

_I = r"(?:i|we)"
_NOT = r"(?:not|n't|n’t|never)"
_PATTERNS = [
    # "I couldn't find (any) information", "I was unable to find", "I can't locate"
    rf"\b{_I}\s+(?:could|can|was|am|were|did|do)\s*{_NOT}\s+(?:find|locate|identify|determine|confirm|verify|say|tell|provide|answer|access|recall|be sure)",
    rf"\b{_I}\s+cannot\s+(?:find|locate|identify|determine|confirm|verify|say|tell|provide|answer|access|recall|be sure)",
    # "I don't know", "I do not have (any|enough) information/data/details"
    rf"\b{_I}\s+(?:do|did)\s*{_NOT}\s+(?:know|have|possess|recall|remember)\b",
    rf"\b{_I}\s*(?:'m|’m|\s+am)\s+not\s+(?:sure|certain|aware|familiar|able)\b",
    rf"\b{_I}\s+(?:have|had)\s+no\s+(?:information|idea|knowledge|data|record|details)\b",
    rf"\b{_I}\s*(?:'m|’m|\s+am|\s+was|\s+are)\s+(?:unable|not able)\s+to\b",
    # "The population of X is unknown (unverified)", "... is not known yet", "... is still undetermined"
    r"\b(?:is|are|was|were|remains?)\s+(?:still\s+|currently\s+)?(?:unknown|not known|undetermined|not determined|unverified)\b",
    r"\bno one (?:has|have|had) (?:ever\s+)?(?:confirmed|discovered|recorded|found|verified|documented)\b",
    r"\black of (?:information|data|records|sources)\b",
    r"\bunable to (?:find|locate|identify|determine|confirm|verify|provide|answer|access|say)\b",
    r"\b(?:not|n't) (?:aware|familiar) (?:of|with)\b",
    # impersonal: "There is no (available|reliable) information", "No information is available"
    r"\bthere (?:is|are|was|were|'s)\s+(?:no|not enough|insufficient|limited)\s+(?:\w+\s+){0,2}(?:information|data|record|records|evidence|details)\b",
    r"^\s*no (?:\w+\s+){0,2}(?:information|data|records?|details) (?:is |are |was |were )?(?:available|found|provided)\b",
    r"\b(?:information|data|details) (?:is|are|was|were) (?:not|n't) (?:available|found|provided)\b",
    r"\b(?:does|do|did) not (?:appear to )?(?:exist|have any (?:information|record))\b",
    r"\bi'?m sorry\b|\bi apologi[sz]e\b|\bunfortunately\b",
    r"\bas an ai\b|\bmy (?:knowledge|training data) (?:cutoff|does not|doesn't)\b",
    r"\b(?:unknown|not known|cannot be determined|can't be determined|not specified|not provided)\s*\.?\s*$",
]
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """Whether an answer declines to answer ("I couldn't find any information about…").

    Only the answer span (first non-empty line, "Answer:" removed) is inspected, with curly
    apostrophes treated like straight ones.
    """
    span = answer_span(text).replace("’", "'")
    return bool(span) and _REFUSAL.search(span) is not None
