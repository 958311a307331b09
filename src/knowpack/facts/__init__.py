"""Facts: the record type, file IO/validation, statistics, the default set and Head-to-Tail builder."""

from knowpack.facts.default_set import build_default_facts, load_default_facts, sample_facts
from knowpack.facts.head_to_tail import HeadToTailConfig, build_head_to_tail
from knowpack.facts.io import check_facts, facts_hash, read_facts, write_facts
from knowpack.facts.schema import FACT_COLUMNS, REQUIRED_COLUMNS, TIERS, Fact
from knowpack.facts.stats import FactStats, compute_stats
from knowpack.facts.tiers import h2t_tiers

__all__ = [
    "FACT_COLUMNS", "REQUIRED_COLUMNS", "TIERS", "Fact", "FactStats", "HeadToTailConfig",
    "build_default_facts", "build_head_to_tail", "check_facts", "compute_stats", "facts_hash",
    "h2t_tiers", "load_default_facts", "read_facts", "sample_facts", "write_facts",
]
