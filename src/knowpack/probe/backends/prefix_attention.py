"""Attention to a few-shot prefix held once per batch instead of once per row.

Every probe prompt starts with one of a handful of few-shot prefixes (≈130 tokens) followed by
a short question (≈15 tokens) and an answer of a few tokens. A plain KV cache stores each row's
copy of its prefix, so every decode step, and every rebuild of the running batch when rows join
or leave, moves several times more memory than the rows' own tokens need. Here the per-row
cache holds only the tokens after the prefix; each distinct prefix's KV is held once, and the
attention function registered with transformers (``AttentionInterface``) attends every row to
its group's prefix and its own columns under one joint softmax, which is the same attention
as over the concatenated sequence.

The function only takes over while a ``PrefixLayout`` is active (``attending``); the model's own
attention implementation is restored afterwards. ``works_with`` checks that a model routes its
attention through the interface at all (old custom architectures do not), and every forward
checks that each layer was served, so a model that bypasses the function fails loudly instead
of silently ignoring its prefix.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "knowpack_prefix"
_ACTIVE = threading.local()


@dataclass
class PrefixGroup:
    """Rows (batch indices) that share one prefix, and that prefix's (keys, values) per layer,
    each ``kv_heads × prefix_len × head_dim``."""

    rows: torch.Tensor | slice
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[-2]


@dataclass
class PrefixLayout:
    """The prefix groups of one batch. Rows in no group attend to their own columns only.

    With few groups each group's prefix is multiplied against its rows' queries in one matmul
    (the prefix is read once per group). With many groups (``--shots relation``: nearly one
    prefix per request) a Python loop per group and layer would dominate, so with ``per_row``
    each row's prefix is laid out per row once for the batch, as a plain cache would hold it.
    """

    groups: list[PrefixGroup]
    batch_size: int
    per_row: bool = False
    calls: int = 0
    _row_cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return max((group.length for group in self.groups), default=0)

    def row_prefixes(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys, values, valid) of every row's prefix, left-padded to the widest: batch ×
        kv_heads × width × dim, and batch × width (False for padding and rows in no group)."""
        if layer_idx not in self._row_cache:
            width, like = self.width, self.groups[0].layers[layer_idx][0]
            keys = like.new_zeros((self.batch_size, like.shape[0], width, like.shape[-1]))
            values = keys.clone()
            valid = torch.zeros((self.batch_size, width), dtype=torch.bool, device=like.device)
            for group in self.groups:
                group_keys, group_values = group.layers[layer_idx]
                keys[group.rows, :, width - group.length:] = group_keys
                values[group.rows, :, width - group.length:] = group_values
                valid[group.rows, width - group.length:] = True
            self._row_cache[layer_idx] = (keys, values, valid)
        return self._row_cache[layer_idx]


def row_selector(rows: list[int], device) -> torch.Tensor | slice:
    """Batch indices as a slice when they are consecutive (a view, no gather), else a tensor."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return torch.tensor(rows, dtype=torch.long, device=device)


def prefix_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Attention of ``query`` (batch × heads × L × dim) to the row's prefix group and its own
    ``key``/``value`` columns (batch × kv_heads × S × dim), masked by ``attention_mask``."""
    layout: PrefixLayout | None = getattr(_ACTIVE, "layout", None)
    if layout is None:  # switched but no layout active (another caller of the model): plain SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if any(kwargs.get(name) is not None for name in ("softcap", "s_aux", "sliding_window")):
        raise NotImplementedError("prefix attention does not support softcapping, sinks or sliding windows")
    layout.calls += 1
    batch, heads, length, dim = query.shape
    kv_heads, own = key.shape[1], key.shape[2]
    repeat = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    work = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    # Query heads grouped under their key/value head: batch × kv_heads × (repeat·L) × dim, scaled once.
    q = query.to(work).reshape(batch, kv_heads, repeat * length, dim) * scale
    own_keys, own_values = key.to(work), value.to(work)
    width = layout.width
    scores = q.new_full((batch, kv_heads, repeat * length, width + own), float("-inf"))
    own_scores = torch.matmul(q, own_keys.transpose(-1, -2))
    if attention_mask is None:
        if length > 1:  # causal within the row's own columns
            visible = torch.ones((length, own), dtype=torch.bool, device=q.device).tril(own - length)
            own_scores = own_scores.view(batch, kv_heads, repeat, length, own).masked_fill(
                ~visible, float("-inf")).view_as(own_scores)
    elif attention_mask.dtype == torch.bool:
        own_scores = own_scores.view(batch, kv_heads, repeat, length, own).masked_fill(
            ~attention_mask[:, :, None, :, -own:], float("-inf")).view_as(own_scores)
    else:
        own_scores = (own_scores.view(batch, kv_heads, repeat, length, own)
                      + attention_mask[:, :, None, :, -own:].to(work)).view_as(own_scores)
    scores[..., width:] = own_scores
    per_row = layout.per_row
    if per_row:
        row_keys, row_values, valid = layout.row_prefixes(module.layer_idx)
        row_keys, row_values = row_keys.to(work), row_values.to(work)
        prefix_scores = torch.matmul(q, row_keys.transpose(-1, -2))
        scores[..., :width] = prefix_scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    else:
        for group in layout.groups:
            group_keys = group.layers[module.layer_idx][0].to(work)
            q_group = q[group.rows]
            rows = q_group.shape[0]
            # kv_heads × (rows·repeat·L) × dim against kv_heads × dim × prefix: one matmul per group.
            flat = q_group.transpose(0, 1).reshape(kv_heads, rows * repeat * length, dim)
            group_scores = torch.matmul(flat, group_keys.transpose(-1, -2))
            scores[group.rows, :, :, width - group.length:width] = \
                group_scores.view(kv_heads, rows, repeat * length, -1).transpose(0, 1)
    # A padding query of a row without prefix sees no column at all: zeros, not NaN (which
    # would reach the real tokens through its cached values).
    probs = torch.softmax(scores, dim=-1).nan_to_num_(0.0)
    out = torch.matmul(probs[..., width:], own_values)
    if per_row:
        out += torch.matmul(probs[..., :width], row_values)
    else:
        for group in layout.groups:
            group_values = group.layers[module.layer_idx][1].to(work)
            group_probs = probs[group.rows, :, :, width - group.length:width]
            rows = group_probs.shape[0]
            flat = group_probs.transpose(0, 1).reshape(kv_heads, rows * repeat * length, group.length)
            part = torch.matmul(flat, group_values).view(kv_heads, rows, repeat * length, dim).transpose(0, 1)
            if isinstance(group.rows, slice):
                out[group.rows] += part
            else:
                out.index_add_(0, group.rows, part)
    out = out.view(batch, heads, length, dim).transpose(1, 2).contiguous().to(query.dtype)
    return out, None


AttentionInterface.register(NAME, prefix_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)


def _configs(model) -> list:
    """Every distinct config of ``model``'s transformers (sub)models, PEFT wrappers included."""
    from transformers import PreTrainedModel

    seen, out = set(), []
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and id(module.config) not in seen:
            seen.add(id(module.config))
            out.append(module.config)
    return out


@contextmanager
def attending(model, layout: PrefixLayout) -> Iterator[None]:
    """Run ``model`` with ``layout``'s prefixes: switches its attention to the prefix function
    for the duration; ``layout.calls`` counts the attention layers it served."""
    configs = _configs(model)
    before = [config._attn_implementation_internal for config in configs]
    for config in configs:
        config._attn_implementation_internal = NAME
    _ACTIVE.layout = layout
    layout.calls = 0
    try:
        yield
    finally:
        _ACTIVE.layout = None
        for config, implementation in zip(configs, before):
            config._attn_implementation_internal = implementation


def works_with(model, layers: int) -> bool:
    """Does the prefix function serve ``model``'s attention, every layer, with the same result?

    Compares one short forward under an empty layout with the model's own attention: an
    architecture that bypasses the interface, or whose attention has features the function
    does not implement (softcapping, sinks), is probed without prefix reuse.
    """
    device = next(model.parameters()).device
    input_ids = torch.tensor([[1, 2, 3]], dtype=torch.long, device=device)
    layout = PrefixLayout([], batch_size=1)
    try:
        with torch.inference_mode():
            expected = model(input_ids=input_ids, use_cache=False).logits.float()
            with attending(model, layout):
                got = model(input_ids=input_ids, use_cache=False).logits.float()
    except Exception:  # noqa: BLE001 - a model that cannot run it does not work with it
        return False
    # Half-precision models round differently in their own attention kernel than in fp32 scores.
    tolerance = 1e-3 if next(model.parameters()).dtype == torch.float32 else 5e-2
    return layout.calls == layers and torch.allclose(got, expected, rtol=tolerance,
                                                     atol=tolerance * float(expected.abs().max()))
