"""Capacity: how many new facts fit into an adapter before harm, and how many bits it stores.

``search`` finds the largest n whose trial meets the reliability target inside every harm budget;
``bits`` measures knowledge written and destroyed per adapter (likelihood and exact-match bits).
"""

from knowpack.capacity.bits import (
    ALLEN_ZHU_LI_BITS_PER_PARAMETER,
    AdapterBits,
    BitsMeasurement,
    BitsTotals,
    answer_log2probs,
    answer_rarity_bits,
    base_and_adapted_log2probs,
    exact_match_bits,
    likelihood_bits,
    measure_bits,
)
from knowpack.capacity.search import (
    CapacitySearchConfig,
    CapacitySearchResult,
    LimitCheck,
    TrialRecord,
    TrialResult,
    check_trial,
    search_capacity,
)

__all__ = [
    "ALLEN_ZHU_LI_BITS_PER_PARAMETER", "AdapterBits", "BitsMeasurement", "BitsTotals", "CapacitySearchConfig",
    "CapacitySearchResult", "LimitCheck", "TrialRecord", "TrialResult", "answer_log2probs", "answer_rarity_bits",
    "base_and_adapted_log2probs", "check_trial", "exact_match_bits", "likelihood_bits", "measure_bits",
    "search_capacity",
]
