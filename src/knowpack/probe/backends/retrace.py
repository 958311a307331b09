"""Samples drawn along a greedy answer's path instead of prefilling their prompt again.

A probe asks for the greedy answer of a prompt and, often, for n samples of the same prompt.
The greedy row already ran the prompt, and at each step it keeps the sampling distribution it
would have drawn from. A sample that draws the greedy token at a step is still on the greedy
path and costs nothing; where it first draws another token it leaves the path, and continues
decoding from the greedy row's cached columns up to that step. Most samples at T=0.5 follow
greedy for most of a short answer, so this removes their prefill and most of their decode.

The draws use the sample's own generator (one uniform per step, as in decoding), so a retraced
sample is the same as a freshly decoded one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from knowpack.probe.backends.sampling import Distribution, draw
from knowpack.probe.backends.scheduler import Departure


@dataclass
class KeptPath:
    """The tensors a greedy answer leaves for the samples of its prompt.

    ``columns``: per layer, the row's (keys, values) after its prefix — the prompt's remaining
    tokens and the greedy tokens that went through the model; ``path``: the sampling
    distribution at each greedy step; ``prefix_kv``: the shared prefix the row attended to.
    """

    columns: list[tuple[torch.Tensor, torch.Tensor]]
    path: list[Distribution]
    prefix_kv: list | None


def departure(path: list[Distribution], picks: list[int], generator: torch.Generator) -> Departure | None:
    """Draw along ``path`` (greedy chose ``picks``) until the sample leaves it; None if it never does.

    Stops at the first differing draw, so the generator has consumed exactly the draws of the
    steps the sample shares with greedy plus the one where it leaves.
    """
    for step, (values, index) in enumerate(path):
        token = draw(values, index, [generator])[0]
        if token != picks[step]:
            return Departure(step, token)
    return None
