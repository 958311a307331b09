"""Bits of knowledge an adapter wrote and destroyed, per trainable parameter (knowpack.capacity.bits).

Written: over the trained Unknown facts; destroyed: over the held-out facts the base model knew
(HighlyKnown or MaybeKnown). Likelihood bits come from teacher-forced answer log-probabilities in
the training prompt format (base = the same model with its adapter disabled); exact-match bits from
whether a fact is answered correctly before and after — here "correctly" means on at least half
of the probe's prompts. An answer's rarity is counted within its relation over the mixture's facts
(trained and held out), so collapsing onto one popular answer earns little.
"""

from __future__ import annotations

import math
from pathlib import Path

from knowpack.evaluate.registry import MetricOutput, metric


# Saved with a VeRA adapter but frozen: the random projections every layer shares.
FROZEN_SAVED_TENSORS = ("vera_A", "vera_B")


def trainable_parameters(adapter_dir: Path) -> int:
    """Parameters the adapter trained, as PEFT counted them while training.

    knowpack's trainer records that count in the adapter's manifest; it is the one to use because
    the saved tensors can differ from what trained (a PiSSA adapter is saved as a rank-2r LoRA on
    the original weights). Otherwise every saved tensor counts except VeRA's shared projections.
    """
    from safetensors import safe_open

    from knowpack.manifest import Manifest
    from knowpack.models.adapters import weight_files

    if Manifest.exists(adapter_dir):
        recorded = Manifest.read(adapter_dir).details.get("trainable_parameters")
        if isinstance(recorded, int) and recorded > 0:
            return recorded
    total = 0
    for file in weight_files(adapter_dir):  # a fully fine-tuned model: every saved tensor trained
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():
                if any(part in FROZEN_SAVED_TENSORS for part in name.split(".")):
                    continue
                total += math.prod(fh.get_slice(name).get_shape())
    return total


def _majority(flags: list[bool]) -> bool:
    return bool(flags) and 2 * sum(map(bool, flags)) >= len(flags)


@metric("bits", needs=("answer_log2p", "adapter_dir", "mix", "base_probe", "adapter_probe", "reliability_answers"))
def bits(*, config, answer_log2p, adapter_dir, mix, base_probe, adapter_probe, reliability_answers) -> MetricOutput:
    """Likelihood and exact-match bits written (trained facts) and destroyed (held-out known facts)."""
    from knowpack.capacity.bits import answer_rarity_bits, measure_bits

    trained, heldout = answer_log2p["trained"], answer_log2p["heldout"]
    if not trained and not heldout:
        return MetricOutput(summary={"status": "no trained or held-out known facts to measure"})
    pool = mix.facts
    before = {f: _majority(base_probe[f]["greedy_correct"]) for f in trained + heldout}
    after = {**{f: _majority(reliability_answers["trained"][f]) for f in trained},
             **{f: _majority(adapter_probe[f]["greedy_correct"]) for f in heldout}}
    parameters = trainable_parameters(adapter_dir)
    result = measure_bits(base_log2p=answer_log2p["base"], adapted_log2p=answer_log2p["adapted"],
                          rarity=answer_rarity_bits(pool.values()), correct_before=before, correct_after=after,
                          trained_ids=trained, heldout_ids=heldout,
                          trainable_parameters=parameters)
    summary = result.summary.model_dump(mode="json")
    summary["definition"] = ("written: trained Unknown facts; destroyed: held-out facts the base model knew; "
                             "correct = right on at least half of the probe's prompts")
    return MetricOutput(summary=summary, per_fact=result.per_fact)
