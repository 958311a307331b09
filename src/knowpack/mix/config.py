"""MixConfig: how a training mixture is composed, and how mixtures are named in tables and plots."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from knowpack.schema import StrictModel

MixKind = Literal["highly_known", "maybe_known", "paraphrase", "same_relation_known", "control"]
KINDS: tuple[str, ...] = ("highly_known", "maybe_known", "paraphrase", "same_relation_known", "control")
# Category a known-fact kind draws from (a control mixture holds HighlyKnown facts only).
KIND_CATEGORY = {"highly_known": "HighlyKnown", "maybe_known": "MaybeKnown", "control": "HighlyKnown"}
# same_relation_known draws from these categories, in this order: the relation's HighlyKnown facts
# first, its MaybeKnown facts only once those run out (the surest known facts protect best, and a
# relation rarely has enough of them alone).
SAME_RELATION_CATEGORIES: tuple[str, ...] = ("HighlyKnown", "MaybeKnown")
KIND_LABELS = {"highly_known": "HK", "maybe_known": "MK", "paraphrase": "Para", "same_relation_known": "SameRel",
               "control": "Ctrl"}


class MixConfig(StrictModel):
    """n Unknown facts + k extra items per Unknown fact of one kind, drawn with ``seed``.

    ``heldout_per_category`` facts of every category are reserved for locality evaluation
    before any training fact is drawn, so the held-out sets do not depend on n or k and are
    the same across a study grid that shares the seed. ``retention_sample`` of the held-out
    HighlyKnown facts are re-checked after every training epoch.

    ``kind="same_relation_known"``: the k extras of each Unknown fact are known facts of that fact's
    relation — HighlyKnown ones first, MaybeKnown ones once the relation has no HighlyKnown left —
    to ask whether known facts of the same relation protect old knowledge or interfere with it.

    ``kind="control"`` is the yardstick of the cell (n, k) it controls: the same number of
    training examples, n·(1 + k), hence the same optimizer steps, but every one a HighlyKnown fact
    — so its shifts measure what fine-tuning itself does, without new knowledge.
    """

    unknown: int = Field(ge=1, description="n: Unknown facts to train on")
    extra: int = Field(0, ge=0, description="k: extra items per Unknown fact")
    kind: MixKind = Field("paraphrase", description="what the k extras are: highly_known | maybe_known | "
                                                    "paraphrase | same_relation_known (known facts of the new "
                                                    "fact's own relation); control = only known facts")
    seed: int = Field(0, description="seed of every draw (held-out sets, trained facts, extras)")
    heldout_per_category: int = Field(50, ge=0, description="held-out facts per category (locality checks)")
    retention_sample: int = Field(20, ge=0, description="held-out HighlyKnown facts re-checked every epoch")

    @property
    def label(self) -> str:
        return mixture_label(self.extra, self.kind)


def mixture_label(extra: int, kind: str) -> str:
    """The paper's mixture label: ``w/o`` for k = 0, else e.g. ``10 Para`` / ``1 HK``; controls ``Ctrl k``."""
    if kind == "control":
        return f"Ctrl {int(extra)}" if int(extra) else "Ctrl"
    return "w/o" if int(extra) == 0 else f"{int(extra)} {KIND_LABELS.get(kind, kind)}"


def mixture_sort_key(extra: int, kind: str) -> tuple[int, int, int]:
    """The paper's column order: w/o first, then by kind (HK, MK, Para) and k; controls last."""
    if kind == "control":
        return (2, 0, int(extra))
    if int(extra) == 0:
        return (0, 0, 0)
    return (1, KINDS.index(kind) if kind in KINDS else len(KINDS), int(extra))


def mixture_from_label(label: str) -> tuple[int, str] | None:
    """(k, kind) of a label made by :func:`mixture_label` (None for a label it cannot have made).

    ``w/o`` stands for every kind at k = 0; it is returned as paraphrase, the default kind.
    """
    if label == "w/o":
        return 0, "paraphrase"
    if label == "Ctrl":
        return 0, "control"
    count, _, short = str(label).partition(" ")
    if label.startswith("Ctrl "):
        count, short = label.split(" ", 1)[1], "Ctrl"
    kinds = {v: k for k, v in KIND_LABELS.items()}
    if short in kinds and count.isdigit():
        return int(count), kinds[short]
    return None


def label_sort_key(label: str) -> tuple:
    """Sort key of a mixture label in the paper's column order (unknown labels last, by name).

    A report label may carry the cell's other varying axes after ``" | "`` (``10 Para | tiny-a``):
    labels are then grouped by that suffix first, so each model's (or setting's) mixtures stand
    side by side in the paper's order.
    """
    head, _, facets = str(label).partition(" | ")
    parsed = mixture_from_label(head)
    return (facets, *((3, 0, 0) if parsed is None else mixture_sort_key(*parsed)), label)
