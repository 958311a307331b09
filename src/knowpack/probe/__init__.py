"""The knowledge probe: few-shot prompts, answer matching, refusals, SliCK categories, backends."""

from knowpack.probe.config import ProbeConfig
from knowpack.probe.matching import answer_span, exact_match, is_correct, normalize
from knowpack.probe.refusal import is_refusal
from knowpack.probe.slick import CATEGORIES, categorize

__all__ = ["CATEGORIES", "ProbeConfig", "answer_span", "categorize", "exact_match", "is_correct",
           "is_refusal", "normalize"]
