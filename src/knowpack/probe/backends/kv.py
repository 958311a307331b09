"""A row-editable KV cache for continuous batching on a transformers model.

Rows (sequences) join and leave the running batch between decode steps. Every row is laid out
left-padded in one shared column space: ``[padding | its tokens]``, with an attention mask
marking real columns. A rebuild keeps the live rows, appends joining rows (padded on the left
to the batch width) and trims columns that became padding for every row.

Why not ``DynamicCache`` as is: it concatenates the whole cache at every decode step, and on
CPU those fresh multi-megabyte allocations cost more than the attention itself. ``GrowingLayer``
writes new columns in place into spare capacity instead (``spare`` columns allocated ahead,
about the decode steps of one answer).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A dynamic cache layer with ``spare`` columns of capacity ahead, appended in place."""

    def __init__(self, spare: int):
        super().__init__()
        self.spare = spare

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.buffer_keys: torch.Tensor | None = None
        self.buffer_values: torch.Tensor | None = None
        self.length = 0
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        needed = self.length + key_states.shape[-2]
        if self.buffer_keys is None or needed > self.buffer_keys.shape[-2]:
            self._reserve(key_states, needed + self.spare)
        self.buffer_keys[:, :, self.length:needed] = key_states
        self.buffer_values[:, :, self.length:needed] = value_states
        self.length = needed
        self._expose()
        return self.keys, self.values

    def set(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the whole content (rows × heads × columns × dim), keeping spare capacity."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        self.buffer_keys = self.buffer_values = None
        self.length = 0
        self.update(keys, values)

    def adopt(self, buffer_keys: torch.Tensor, buffer_values: torch.Tensor, length: int) -> None:
        """Take over buffers whose first ``length`` columns hold the content."""
        self.is_initialized = True
        self.device = buffer_keys.device
        self.buffer_keys, self.buffer_values, self.length = buffer_keys, buffer_values, length
        self._expose()

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self.set(self.keys[indices], self.values[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self.set(self.keys.repeat_interleave(repeats, dim=0), self.values.repeat_interleave(repeats, dim=0))

    def _reserve(self, like: torch.Tensor, capacity: int) -> None:
        rows, heads, _, dim = like.shape
        keys = like.new_empty((rows, heads, capacity, dim))
        values = like.new_empty((rows, heads, capacity, dim))
        if self.length:
            keys[:, :, :self.length] = self.buffer_keys[:, :, :self.length]
            values[:, :, :self.length] = self.buffer_values[:, :, :self.length]
        self.buffer_keys, self.buffer_values = keys, values

    def _expose(self) -> None:
        self.keys = self.buffer_keys[:, :, :self.length]
        self.values = self.buffer_values[:, :, :self.length]


def supports_row_editing(model) -> bool:
    """True when every cache layer of ``model`` is a plain full-attention dynamic layer.

    Sliding-window and recurrent layers keep state that cannot be padded or re-sliced by
    column, so such models use one batch per call instead of continuous batching.
    """
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - configs without a text config etc.
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def new_cache(model, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None, *, spare: int) -> DynamicCache:
    """A cache of GrowingLayers for ``model``, optionally filled with per-layer (keys, values)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer(spare) for _ in cache.layers]
    if layers is not None:
        for layer, (keys, values) in zip(cache.layers, layers):
            layer.set(keys, values)
    return cache


def plain_cache(model) -> DynamicCache:
    """The model's own dynamic cache (for models whose cache cannot be cut into rows)."""
    try:
        return DynamicCache(config=getattr(model, "config", None))
    except TypeError:
        return DynamicCache()


def empty_rows(like: torch.Tensor, rows: int, width: int, spare: int) -> torch.Tensor:
    """An uninitialised (rows × heads × width+spare × dim) buffer shaped after ``like``'s heads and dim.

    Callers fill every used column and zero the padding: zeroing whole buffers costs as much
    memory traffic as the copies themselves.
    """
    return like.new_empty((rows, like.shape[-3], width + spare, like.shape[-1]))


def adopt_cache(model, layers: list[tuple[torch.Tensor, torch.Tensor]], width: int, *, spare: int) -> DynamicCache:
    """A cache over ready buffers (from ``empty_rows``) whose first ``width`` columns are filled."""
    cache = new_cache(model, spare=spare)
    for layer, (keys, values) in zip(cache.layers, layers):
        layer.adopt(keys, values, width)
    return cache


def layer_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (keys, values) of every layer."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _runs(sources: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """(part, source start, destination start, length) of each run of destination rows that come
    from consecutive rows of one part; ``sources``: (part, source row) per destination row."""
    runs: list[tuple[int, int, int, int]] = []
    for destination, (part, source) in enumerate(sources):
        if runs and runs[-1][0] == part and runs[-1][1] + runs[-1][3] == source:
            runs[-1] = (part, runs[-1][1], runs[-1][2], runs[-1][3] + 1)
        else:
            runs.append((part, source, destination, 1))
    return runs


def rebuild_rows(parts: list[tuple[DynamicCache, torch.Tensor, list[int]]],
                 order: list[tuple[int, int]] | None = None, *, spare: int) -> tuple[DynamicCache, torch.Tensor]:
    """One batch of the rows ``keep`` of each (cache, mask, keep) part: part after part, or in
    ``order`` ((part index, index into that part's ``keep``) per row of the result).

    One copy into fresh buffers (with ``spare`` columns ahead): rows are copied run by run, columns no
    kept row uses are dropped, and narrower parts are zero-padded on the left (zeros, not
    garbage: a masked column still enters the attention product with weight 0). The first
    part's cache object is reused for the result.
    """
    trimmed = []
    for cache, mask, keep in parts:
        kept = mask[keep]
        used = kept.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else kept.shape[1]
        trimmed.append((cache, kept[:, start:], keep, start))
    width = max(m.shape[1] for _, m, _, _ in trimmed)
    if order is None:
        order = [(p, i) for p, (_, _, keep, _) in enumerate(trimmed) for i in range(len(keep))]
    runs = _runs([(p, trimmed[p][2][i]) for p, i in order])
    target = parts[0][0]
    for layer_idx, layer in enumerate(target.layers):
        new = []
        for which in ("keys", "values"):
            buffer = empty_rows(getattr(layer, which), len(order), width, spare)
            for p, source_row, row, count in runs:
                cache, kept_mask, _, start = trimmed[p]
                source = getattr(cache.layers[layer_idx], which)
                part_width = kept_mask.shape[1]
                buffer[row:row + count, :, :width - part_width].zero_()
                buffer[row:row + count, :, width - part_width:width] = \
                    source[source_row:source_row + count, :, start:start + part_width]
            new.append(buffer)
        layer.adopt(new[0], new[1], width)
    offsets = [0]
    for _, _, keep, _ in trimmed:
        offsets.append(offsets[-1] + len(keep))
    masks = torch.cat([pad_left(m, width, 1) for _, m, _, _ in trimmed])
    return target, masks[torch.tensor([offsets[p] + i for p, i in order], device=masks.device)]


def pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` zero-padded on the left of ``dim`` to ``width``."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
