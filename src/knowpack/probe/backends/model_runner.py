"""The engine's model runner: executes the scheduler's plans on a transformers model.

It owns every tensor — the running batch's row-editable cache (``kv``), the KV of each shared
few-shot prefix, the greedy paths kept for retracing, the rows' generators — and nothing about
policy: which rows run, in which order and when the batch is rebuilt all come in the plan.

Why not ``model.generate``: the probe needs four things it does not offer together —
1. each few-shot prefix (the same for many requests) is prefilled once and its KV held once per
   batch: rows cache only their own tokens and attend to their prefix through
   ``prefix_attention`` (prefill of ≈145-token prompts dominates on CPU, and per-row prefix
   copies would make every step and every batch rebuild move five times more memory);
2. a sequence stops as soon as its answer span is complete, and finished rows leave the batch
   instead of decoding padding;
3. new requests join the running batch while others still decode (continuous batching);
4. sampled answers come from a per-sequence random generator (``sampling``).
Only the last position goes through the LM head (``logits_to_keep=1``).
"""

from __future__ import annotations

import inspect
import itertools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from knowpack.probe.backends.engine_config import EngineConfig
from knowpack.probe.backends.kv import (adopt_cache, empty_rows, layer_tensors, new_cache, plain_cache, rebuild_rows,
                                        supports_row_editing)
from knowpack.probe.backends.prefix_attention import PrefixGroup, PrefixLayout, attending, row_selector, works_with
from knowpack.probe.backends.retrace import KeptPath, departure
from knowpack.probe.backends.sampling import RowSampling, pick, sample_generator
from knowpack.probe.backends.scheduler import (AdmitPlan, AdmitResult, Fork, Prefill, PrefixRows, Retrace,
                                               StepPlan)

PrefixKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: kv_heads × length × dim


def cache_keyword(model) -> str:
    """The forward argument that takes the KV cache: ``cache`` in transformers ≥ 5.20, before that
    ``past_key_values`` (vLLM's environment pins an older transformers than the main one)."""
    from knowpack.models.adapters import causal_lm

    forward = inspect.signature(causal_lm(model).forward).parameters  # PEFT forwards **kwargs
    return "cache" if "cache" in forward else "past_key_values"


@dataclass
class _Part:
    """Rows decoded together (by id): their cache, attention mask and the position of each
    pending token; ``layout``: the rows' shared prefixes, built on first forward."""

    rows: list[int]
    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    layout: PrefixLayout | None = None


@dataclass
class _RowTensors:
    sampling: RowSampling
    prefix_kv: PrefixKV | None


class ModelRunner:
    """Runs plans on ``model``. ``tokens_processed`` counts prompt and generated tokens run
    through the model (for MFU), ``forward_passes`` the passes."""

    def __init__(self, model, *, pad_id: int, config: EngineConfig, batch_size: int):
        self.model = model
        self.pad_id = pad_id
        self.spare = config.spare_columns
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.row_editing = supports_row_editing(model)
        self.prefix_attention: bool | None = None  # decided on first use (needs eval mode)
        self._attention_layers = 0
        self.tokens_processed = 0
        self.forward_passes = 0
        self._prefixes: dict[tuple[int, ...], PrefixKV] = {}
        self._cache_kwarg = cache_keyword(model)
        self.end_call(keep_prefixes=True)

    def prepare(self) -> None:
        """Check once, in eval and inference mode, whether prefix attention serves this model."""
        if self.prefix_attention is None:
            self._attention_layers = len(new_cache(self.model, spare=0).layers) if self.row_editing else 0
            self.prefix_attention = self.row_editing and works_with(self.model, self._attention_layers)

    def begin_call(self, temperature: float, top_k: int) -> None:
        """Start serving a call with these sampling settings."""
        self.end_call(keep_prefixes=True)
        self.temperature, self.top_k = temperature, top_k

    def end_call(self, *, keep_prefixes: bool) -> None:
        """Free everything a call held; the prefix caches too unless ``keep_prefixes`` (only
        valid while the weights do not change)."""
        self._batch: _Part | None = None
        self._joining: list[_Part] = []  # parts started since the last step
        self._rows: dict[int, _RowTensors] = {}
        self._paths: dict[int, KeptPath] = {}
        if not keep_prefixes:
            self._prefixes.clear()

    # -- plans -----------------------------------------------------------------------------
    def admit(self, plan: AdmitPlan) -> AdmitResult:
        """Prefill the plan's prompts (after their shared prefixes) and draw its samples along
        greedy paths; the prefilled rows wait to be composed into the batch by the next step."""
        self._keep_paths(plan.snapshots)
        for handle in plan.dropped:
            self._paths.pop(handle, None)
        kv = self._prefix_kv(plan) if plan.prefills else {}
        first_tokens = []
        for prefill in plan.prefills:
            part, logits = self._prefill(prefill, kv)
            self._joining.append(part)
            first_tokens.append(pick(logits, [self._rows[r].sampling for r in part.rows], self.temperature,
                                     self.top_k))
        return AdmitResult(first_tokens, [self._retrace(retrace) for retrace in plan.retraces])

    def step(self, plan: StepPlan) -> list[int]:
        """Compose the batch as planned and run one decode step; the chosen token per live row."""
        self._keep_paths(plan.snapshots)
        if plan.forks:
            self._joining.append(self._fork_part(plan.forks))
        for handle in plan.released:
            self._paths.pop(handle, None)
        self._compose(plan)
        for row in plan.leaving:
            del self._rows[row]
        batch = self._batch
        pending = torch.tensor([[token] for token in plan.pending], device=self.device)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
        if batch.layout is None:
            batch.layout = self._layout(plan.prefix_groups, plan.per_row, batch.rows)
        logits = self._forward(pending, batch.mask, batch.positions.unsqueeze(1), batch.cache, batch.layout)
        batch.positions = batch.positions + 1
        return pick(logits[plan.live], [self._rows[batch.rows[k]].sampling for k in plan.live], self.temperature,
                    self.top_k)

    # -- prefill ---------------------------------------------------------------------------
    def _prefix_kv(self, plan: AdmitPlan) -> dict[tuple[int, ...], PrefixKV]:
        """The KV of each prefix the plan attends to: cached ones, and new ones prefilled together
        (one pass per list of ``plan.prefix_fills``)."""
        found = {prefix: self._prefixes[prefix] for prefix in plan.prefixes if prefix in self._prefixes}
        for prefixes in plan.prefix_fills:
            found.update(self._prefill_prefixes(prefixes))
            self._prefixes.update((prefix, found[prefix]) for prefix in prefixes)
        for prefix in plan.evicted:
            self._prefixes.pop(prefix, None)
        return found

    def _prefill_prefixes(self, prefixes: list[tuple[int, ...]]) -> dict[tuple[int, ...], PrefixKV]:
        """Per-layer KV of each prefix, from one left-padded pass."""
        input_ids, mask, positions = self._left_padded([list(prefix) for prefix in prefixes], [0] * len(prefixes))
        width = input_ids.shape[1]
        cache = new_cache(self.model, spare=self.spare)
        self._forward(input_ids, mask, positions, cache)
        layers = layer_tensors(cache)
        return {prefix: [(keys[row, :, width - len(prefix):].clone(), values[row, :, width - len(prefix):].clone())
                         for keys, values in layers]
                for row, prefix in enumerate(prefixes)}

    def _prefill(self, prefill: Prefill, kv: dict[tuple[int, ...], PrefixKV]) -> tuple[_Part, torch.Tensor]:
        """Run the prompts of ``prefill`` through the model, after their shared prefixes.

        Layout per row: ``[padding | its prompt after the prefix]``; the prefix itself is
        attended through the pass's prefix layout. Returns the rows (n per sampled request, who
        share their request's pass) as a part with pending positions, and their next-token logits.
        """
        for row in prefill.sequences:
            sampling = RowSampling(sample_generator(row.request.seed, row.index) if row.sampled else None,
                                   [] if row.keeps_path else None)
            self._rows[row.id] = _RowTensors(sampling, kv.get(row.prefix))
        input_ids, mask, positions = self._left_padded(prefill.prompts, [len(prefix) for prefix in prefill.prefixes])
        cache = new_cache(self.model, spare=self.spare) if self.row_editing else plain_cache(self.model)
        ends = torch.tensor([len(prefix) + len(prompt) for prefix, prompt in zip(prefill.prefixes, prefill.prompts)],
                            device=self.device)
        layout = PrefixLayout([PrefixGroup(row_selector(list(group.rows), self.device), kv[group.prefix])
                               for group in prefill.prefix_groups], batch_size=len(prefill.prompts),
                              per_row=prefill.per_row)
        logits = self._forward(input_ids, mask, positions, cache, layout)
        rows = [row.id for row in prefill.sequences]
        if len(prefill.expand) == len(prefill.prompts):
            return _Part(rows, cache, mask, ends, layout=layout), logits
        index = torch.tensor(prefill.expand, device=self.device)
        if self.row_editing:
            cache, mask = rebuild_rows([(cache, mask, prefill.expand)], spare=self.spare)
        else:
            cache.batch_select_indices(index)
            mask = mask[index]
        return _Part(rows, cache, mask, ends[index]), logits[index]

    def _left_padded(self, sequences: list[list[int]], starts: list[int]):
        """(input ids, attention mask, positions) of token ``sequences`` left-padded to the longest,
        sequence i at positions ``starts[i]`` onwards."""
        width = max(len(tokens) for tokens in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        positions = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, (tokens, start) in enumerate(zip(sequences, starts)):
            input_ids[row, width - len(tokens):] = torch.tensor(tokens)
            mask[row, width - len(tokens):] = 1
            positions[row, width - len(tokens):] = torch.arange(start, start + len(tokens))
        return input_ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _forward(self, input_ids, attention_mask, position_ids, cache, layout: PrefixLayout | None = None):
        """Next-token logits of each row; rows attend to their prefixes through ``layout``."""
        prefixed = layout is not None and bool(layout.groups)
        with attending(self.model, layout) if prefixed else nullcontext():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
        if prefixed and layout.calls != self._attention_layers:
            raise RuntimeError(f"prefix attention served {layout.calls} of {self._attention_layers} layers")
        self.tokens_processed += int(input_ids.shape[0] * input_ids.shape[1])
        self.forward_passes += 1
        return out.logits[:, -1, :].float()

    # -- greedy paths ----------------------------------------------------------------------
    def _keep_paths(self, snapshots: list[tuple[int, int]]) -> None:
        for row, handle in snapshots:
            self._paths[handle] = self._snapshot(row)

    def _snapshot(self, row: int) -> KeptPath:
        """The row's KV after its prefix (the tokens it has run through the model) and its path."""
        part = next(part for part in [self._batch, *self._joining] if part is not None and row in part.rows)
        k = part.rows.index(row)
        columns = part.mask[k].nonzero().squeeze(1)
        kept = [(keys[k][:, columns].clone(), values[k][:, columns].clone()) for keys, values in layer_tensors(part.cache)]
        tensors = self._rows[row]
        return KeptPath(kept, list(tensors.sampling.path), tensors.prefix_kv)

    def _retrace(self, retrace: Retrace) -> list:
        """Each sample's departure from the greedy path, drawn with the sample's own generator
        (which its row keeps, should it fork)."""
        handle = retrace.state.handle
        if retrace.snapshot_of is not None:
            self._paths[handle] = self._snapshot(retrace.snapshot_of)
        kept = self._paths[handle]
        out = []
        for row in retrace.sequences:
            generator = sample_generator(row.request.seed, row.index)
            self._rows[row.id] = _RowTensors(RowSampling(generator), kept.prefix_kv)
            out.append(departure(kept.path, retrace.state.picks, generator))
        return out

    def _fork_part(self, forks: list[Fork]) -> _Part:
        """Rows that left their greedy path at step t: the prompt after its prefix + t greedy
        tokens cached, the drawn token pending."""
        spans = [(self._paths[fork.handle], fork.sequence.prompt_len - len(fork.sequence.prefix) + fork.step)
                 for fork in forks]
        width = max(c for _, c in spans)
        shortest = min(c for _, c in spans)
        mask = torch.zeros((len(forks), width), dtype=torch.long, device=self.device)
        layers = []
        for layer_idx, like in enumerate(spans[0][0].columns):
            pair = []
            for which, like_tensor in enumerate(like):
                buffer = empty_rows(like_tensor, len(forks), width, self.spare)
                buffer[:, :, :width - shortest].zero_()
                for row_idx, (kept, c) in enumerate(spans):
                    buffer[row_idx, :, width - c:width] = kept.columns[layer_idx][which][:, :c]
                pair.append(buffer)
            layers.append(tuple(pair))
        for row_idx, (_, c) in enumerate(spans):
            mask[row_idx, width - c:] = 1
        positions = torch.tensor([fork.sequence.prompt_len + fork.step for fork in forks], device=self.device)
        return _Part([fork.sequence.id for fork in forks], adopt_cache(self.model, layers, width, spare=self.spare),
                     mask, positions)

    # -- the batch -------------------------------------------------------------------------
    def _compose(self, plan: StepPlan) -> None:
        """Make the batch ``plan.rows``: the existing part holding exactly them, or one copy of
        those rows out of every part holding some (part after part, in the plan's order)."""
        parts = [part for part in [self._batch, *self._joining] if part is not None]
        self._joining = []
        if not plan.rebuild:
            self._batch = next(part for part in parts if part.rows == plan.rows)
            return
        where = {row: (p, k) for p, part in enumerate(parts) for k, row in enumerate(part.rows)}
        picked = [where[row] for row in plan.rows]
        used = sorted({p for p, _ in picked})
        keep = {p: sorted(k for q, k in picked if q == p) for p in used}
        slot = {p: {k: n for n, k in enumerate(keep[p])} for p in used}
        offsets = dict(zip(used, itertools.accumulate([0, *(len(keep[p]) for p in used)])))
        order = [(used.index(p), slot[p][k]) for p, k in picked]
        positions = torch.cat([parts[p].positions[keep[p]] for p in used])[[offsets[p] + slot[p][k] for p, k in picked]]
        if not self.row_editing:  # without row editing a batch only ever shrinks
            (p,) = used
            part = parts[p]
            part.cache.batch_select_indices(torch.tensor(keep[p], device=self.device))
            self._batch = _Part(list(plan.rows), part.cache, part.mask[keep[p]], positions)
            return
        cache, mask = rebuild_rows([(parts[p].cache, parts[p].mask, keep[p]) for p in used], order, spare=self.spare)
        self._batch = _Part(list(plan.rows), cache, mask, positions)

    def _layout(self, groups: list[PrefixRows], per_row: bool, rows: list[int]) -> PrefixLayout:
        """The batch's prefix groups with the KV their first row attends to."""
        return PrefixLayout([PrefixGroup(row_selector(list(group.rows), self.device),
                                         self._rows[rows[group.rows[0]]].prefix_kv) for group in groups],
                            batch_size=len(rows), per_row=per_row)

