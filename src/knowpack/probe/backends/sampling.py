"""Choosing next tokens: argmax for greedy rows, top-k inverse-CDF draws for sampled rows.

Each sampled sequence draws from its own generator, seeded by (request seed, sample index) and
nothing else, so a request's samples do not depend on its batch mates — which is what makes
early exit, continuous batching and byte-identical resumes leave the answers unchanged. A draw
takes exactly one uniform from that generator per step, so a sample drawn along a kept greedy
path (see ``retrace``) consumes its generator exactly as if it had been decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from knowpack.io import stable_hash

Distribution = tuple[torch.Tensor, "torch.Tensor | None"]  # (scaled top-k logits, their vocabulary ids or None)


def sample_generator(seed: int | None, index: int) -> torch.Generator:
    """The generator of sample ``index`` of a request seeded ``seed``: seeded by the two alone."""
    generator = torch.Generator()
    generator.manual_seed(int(stable_hash([str(seed), str(index)], length=15), 16))
    return generator


def draw(values: torch.Tensor, index: torch.Tensor | None, generators: list[torch.Generator]) -> list[int]:
    """Inverse-CDF sampling from rows of ``values``: one uniform per row from that row's own generator."""
    cdf = torch.softmax(values, dim=-1).cumsum(dim=-1).cpu()
    u = torch.tensor([[torch.rand(1, generator=g).item()] for g in generators], dtype=cdf.dtype)
    choice = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp(max=values.shape[-1] - 1)
    if index is not None:
        choice = index.cpu().gather(1, choice)
    return choice.squeeze(1).tolist()


@dataclass
class RowSampling:
    """How one row picks its tokens.

    ``generator``: set for a sampled row. ``path``: set for a greedy row whose samples may
    retrace it: the sampling distribution of every step it took, so a sample can later be drawn
    along it without running the model.
    """

    generator: torch.Generator | None = None
    path: list[Distribution] | None = None


def pick(logits: torch.Tensor, rows: list[RowSampling], temperature: float, top_k: int) -> list[int]:
    """The next token of each row of ``logits``: argmax, or a draw for rows with a generator;
    rows with a ``path`` record the step's distribution."""
    chosen = logits.argmax(dim=-1).tolist()
    spread = [k for k, row in enumerate(rows) if row.generator is not None or row.path is not None]
    if not spread:
        return chosen
    scaled = logits[spread] / temperature
    if top_k and top_k < scaled.shape[-1]:
        values, index = scaled.topk(top_k, dim=-1)  # sorted, deterministic
    else:
        values, index = scaled, None
    sampled = [i for i, k in enumerate(spread) if rows[k].generator is not None]
    if sampled:
        draws = draw(values[sampled], None if index is None else index[sampled],
                     [rows[spread[i]].generator for i in sampled])
        for i, token in zip(sampled, draws):
            chosen[spread[i]] = token
    for i, k in enumerate(spread):
        if rows[k].path is not None:
            rows[k].path.append((values[i:i + 1].clone(), None if index is None else index[i:i + 1].clone()))
    return chosen
