"""The transformers backend: continuous batching with a hand-rolled decode loop.

Why not ``model.generate``: the probe needs four things it does not offer together —
1. each few-shot prefix (the same for many requests) is prefilled once and its KV held once per
   batch: rows cache only their own tokens and attend to their prefix through
   ``prefix_attention`` (prefill of ≈145-token prompts dominates on CPU, and per-row prefix
   copies would make every step and every batch rebuild move five times more memory);
2. a sequence stops as soon as its answer span (first non-empty line) is complete, and finished
   rows leave the batch instead of decoding padding;
3. new requests join the running batch while others still decode (continuous batching): one
   rambling answer must not keep a nearly empty batch running for 30 steps — on CPU every
   forward pass costs about as much as reading all weights once, however few rows it carries;
4. sampled answers come from a per-sequence random generator, so a request's samples do not
   depend on its batch mates (needed for early exit and byte-identical resumes).
Only the last position goes through the LM head (``logits_to_keep=1``).
"""

from __future__ import annotations

import os
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from knowpack.io import stable_hash
from knowpack.models.loading import render_chat
from knowpack.models.adapters import attach_adapter
from knowpack.probe.backends.base import ListFeed, Request, register_backend
from knowpack.probe.backends.kv import (adopt_cache, empty_rows, layer_tensors, new_cache, rebuild_rows,
                                        supports_row_editing)
from knowpack.probe.backends.prefix_attention import (PrefixGroup, PrefixLayout, attending, row_selector,
                                                      works_with)
from knowpack.probe.matching import answer_span

_NEWLINE_TABLES: "weakref.WeakKeyDictionary[Any, torch.Tensor]" = weakref.WeakKeyDictionary()


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of rendered chat prompts.

    Chat templates usually render the BOS token themselves; it is added only when the rendered
    text does not already start with it (adding it twice changes the answers).
    """
    bos = getattr(tokenizer, "bos_token", None)
    out = []
    for prompt in prompts:
        add = bool(bos) and not prompt.startswith(bos)
        out.append(tokenizer(prompt, add_special_tokens=add)["input_ids"])
    return out


def newline_token_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """Bool mask over the vocabulary: tokens whose decoded text contains a newline."""
    table = None
    try:
        table = _NEWLINE_TABLES.get(tokenizer)
    except TypeError:
        pass
    if table is None or table.numel() != vocab_size:
        n = min(len(tokenizer), vocab_size)
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        table = torch.zeros(vocab_size, dtype=torch.bool)
        table[:n] = torch.tensor(["\n" in t for t in texts], dtype=torch.bool)
        try:
            _NEWLINE_TABLES[tokenizer] = table
        except TypeError:
            pass
    return table


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a generation: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    return ids


def span_complete(text: str) -> bool:
    """The answer span can no longer change: a non-empty answer line is followed by a newline."""
    head, sep, _ = text.rpartition("\n")
    return bool(sep) and bool(answer_span(head))


def _sample_generator(request: Request, index: int) -> torch.Generator:
    """The generator of sample ``index`` of ``request``: seeded by the two alone, never by batch mates."""
    generator = torch.Generator()
    generator.manual_seed(int(stable_hash([str(request.seed), str(index)], length=15), 16))
    return generator


def _common_prefix_len(first: list[int], other: list[int], limit: int) -> int:
    n = 0
    while n < limit and n < len(other) and first[n] == other[n]:
        n += 1
    return n


@dataclass
class _Row:
    """One sequence in the running batch."""

    request: Request
    index: int  # which of the request's samples (0 for greedy)
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    alive: bool = True
    prefix: tuple[int, ...] = ()
    prefix_kv: list | None = None  # the prefix's KV per layer, shared by every row with that prefix
    prompt_len: int = 0
    # greedy rows whose samples may follow: each pick's sampling distribution and chosen token
    steps: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None
    picks: list[int] = field(default_factory=list)


@dataclass
class _GreedyState:
    """What a finished greedy answer leaves for the samples of the same prompt.

    ``columns``: per layer, the KV of the prompt after its prefix and of the greedy tokens that
    went through the model; ``steps``/``picks``: the sampling distribution at each greedy step
    and the token greedy chose. A sample that draws the greedy token at a step is still on the
    greedy path and costs nothing; where it leaves the path it continues from these columns.
    ``finished``: False for a snapshot of a greedy answer still decoding (a sample still on its
    path at the last step continues from there).
    """

    followup: Request
    prefix: tuple[int, ...]
    prefix_kv: list | None
    prompt_len: int
    columns: list[tuple[torch.Tensor, torch.Tensor]]
    steps: list[tuple[torch.Tensor, torch.Tensor | None]]
    picks: list[int]
    finished: bool = True


@dataclass
class _Part:
    """Rows decoded together: their cache, attention mask and the position of each pending token."""

    rows: list[_Row]
    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    layout: PrefixLayout | None = None  # the rows' shared prefixes (built on first forward)

    def live(self) -> list[int]:
        return [k for k, row in enumerate(self.rows) if row.alive]


def length_groups(lengths: list[int], overhead: int) -> list[list[int]]:
    """Split items into groups of similar length, minimising padded tokens + ``overhead`` per group.

    A prefill pass costs about ``overhead`` tokens' worth of time however small it is, so a long
    prompt gets its own pass only when that saves more padding than the pass costs. Exact
    (dynamic programming over the items sorted by length).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    best = [0.0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(end):
            cost = best[start] + overhead + (end - start) * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


@register_backend("hf")
class HFBackend:
    """Continuous batching on a transformers causal LM (optionally wrapped by PEFT).

    ``loaded``: a LoadedModel; its ``model`` may already be a ``PeftModel`` (the trainer probes
    its in-memory adapter). ``max_rows``: sequences decoded together (default 4 × ``batch_size``;
    the n samples of a request are n rows).
    ``stop_at_newline``: stop once the answer line is complete (off = run to EOS /
    ``max_new_tokens``). ``prefix_reuse``: prefill each request's shared few-shot prefix once and
    attend to it from every row that starts with it (when the model's attention goes through
    the transformers interface, checked on first use). ``cache_prefixes``: keep those prefix
    caches across calls — only valid while the weights do not change (the probe runner turns it
    on for one run); off by default so a backend held by a trainer never serves stale caches.
    """

    _MAX_CACHED_PREFIXES = 32
    _PASS_OVERHEAD_TOKENS = 24  # a forward pass costs about as much as this many prompt tokens (CPU)
    _RETRACE_AFTER_STEPS = 8  # samples wait for a greedy answer shorter than this to finish
    _PER_ROW_ABOVE = 8  # more prefix groups than this in a batch: lay prefixes out per row (see PrefixLayout)

    def __init__(self, loaded, adapter: str | None = None, *, batch_size: int = 32,
                 stop_at_newline: bool = True, max_rows: int | None = None, prefix_reuse: bool = True,
                 cache_prefixes: bool = False):
        self.tokenizer = loaded.tokenizer
        self.model = attach_adapter(loaded.model, adapter, model_hash=getattr(loaded, "model_hash", None))
        self.batch_size = max(1, int(batch_size))
        self.max_rows = max(self.batch_size, int(max_rows or 4 * self.batch_size))
        self.stop_at_newline = stop_at_newline
        self.prefix_reuse = prefix_reuse
        self.row_editing = supports_row_editing(self.model)
        self.cache_prefixes = cache_prefixes
        self._prefixes: dict[tuple[int, ...], list] = {}
        self._attention_layers = 0
        self._prefix_attention: bool | None = None  # decided on first use (needs eval mode)
        self._encoded: dict[str, list[int]] = {}
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.eos_ids or {0}))
        self.device = next(self.model.parameters()).device
        vocab = self.model.get_output_embeddings().weight.shape[0] if hasattr(
            self.model, "get_output_embeddings") and self.model.get_output_embeddings() is not None \
            else len(self.tokenizer)
        self._newline = newline_token_mask(self.tokenizer, vocab).tolist()
        self.model_hash = getattr(loaded, "model_hash", None)
        self.tokens_processed = 0  # prompt + generated tokens run through the model (for MFU)
        self.forward_passes = 0
        self._keep_states = False
        self._states: dict[int, _GreedyState] = {}
        self._deferred: list[Request] = []

    def render(self, messages: list[dict[str, str]]) -> str:
        """Render chat messages with the model's chat template, generation prompt appended."""
        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    # -- protocol -------------------------------------------------------------------------
    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """One greedy answer per prompt (argmax decoding)."""
        prefix = self._shared_text(prompts)
        return [texts[0] for texts in self._serve_list([Request(p, prefix=prefix) for p in prompts],
                                                       max_new_tokens=max_new_tokens)]

    def sample(self, prompts: list[str], n: int, *, temperature: float, top_k: int,
               max_new_tokens: int, seeds: list[int]) -> list[list[str]]:
        """``n`` samples per prompt at ``temperature`` with ``top_k``; sample i of request r
        draws from a generator seeded by (seeds[r], i) only."""
        if len(seeds) != len(prompts):
            raise ValueError("sample() needs one seed per prompt")
        if n <= 0:
            return [[] for _ in prompts]
        prefix = self._shared_text(prompts)
        requests = [Request(p, samples=n, seed=seed, prefix=prefix) for p, seed in zip(prompts, seeds)]
        return self._serve_list(requests, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)

    def _serve_list(self, requests: list[Request], **settings) -> list[list[str]]:
        # Similar lengths share a batch (less padding); answers go back in the caller's order.
        order = sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt), i))
        feed = ListFeed([requests[i] for i in order])
        self.stream(feed, **settings)
        out: list[list[str]] = [[] for _ in requests]
        for position, texts in zip(order, feed.answers()):
            out[position] = texts
        return out

    def stream(self, feed, *, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0) -> None:
        """Serve ``feed`` with continuous batching: finished rows leave the batch at once and new
        requests join whenever half of the row budget is free, so no decode step runs for a
        handful of stragglers while work is waiting."""
        was_training = self.model.training
        self.model.eval()  # dropout off even when the trainer hands over a model in train mode
        try:
            with torch.inference_mode():
                if self._prefix_attention is None:
                    self._attention_layers = len(new_cache(self.model).layers) if self.row_editing else 0
                    self._prefix_attention = self.row_editing and works_with(self.model, self._attention_layers)
                self._serve(feed, max_new_tokens, temperature, top_k)
        finally:
            self.model.train(was_training)
            if not self.cache_prefixes:  # the weights may change before the next call
                self._prefixes.clear()

    # -- engine ---------------------------------------------------------------------------
    def _serve(self, feed, max_new_tokens: int, temperature: float, top_k: int) -> None:
        # Invariant: every live row of ``batch`` holds one pending token (chosen, not yet run
        # through the model) at ``batch.positions``. Finished rows stay in the batch as dead
        # weight until a rebuild (see _worth_compacting), or until joining rows need one anyway.
        settings = (max_new_tokens, temperature, top_k)
        batch: _Part | None = None
        answers: dict[int, list[str | None]] = {}
        # Greedy states are kept only when a full sampling distribution is small (top-k) and the
        # cache can be cut into rows.
        self._keep_states = self.row_editing and bool(top_k) and top_k <= 1024
        self._states = {}
        self._deferred = []
        while True:
            live = batch.live() if batch else []
            joining: list[_Part] = []
            taken = False
            if not live or (self.row_editing and len(live) <= self.max_rows // 2):
                # Deferred samples count against the row budget too, so a batch never outgrows it.
                room = self.max_rows - len(live) - sum(r.rows for r in self._deferred)
                requests = feed.take(room, True) if room > 0 or not (live or self._deferred) else []
                taken = bool(requests) or bool(self._deferred)
                joining = [part for part in self._admit(requests, feed, answers, settings, batch if live else None)
                           if part.live()]
            parts = ([(batch, live)] if live else []) + [(p, p.live()) for p in joining]
            if not parts:
                if taken:
                    continue  # every joining request finished on its first token; ask for more
                return
            if len(parts) > 1 or self._worth_compacting(*parts[0]):
                batch = self._combine(parts)
            else:
                batch = parts[0][0]
            pending = torch.tensor([[row.tokens[-1] if row.alive else self.pad_id] for row in batch.rows],
                                   device=self.device)
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
            logits = self._forward(pending, batch.mask, batch.positions.unsqueeze(1), batch.cache, self._layout(batch))
            batch.positions = batch.positions + 1
            self._step_tokens(feed, batch, logits, answers, *settings)

    def _step_tokens(self, feed, part: _Part, logits: torch.Tensor, answers: dict,
                     max_new_tokens: int, temperature: float, top_k: int) -> None:
        """Choose each live row's next token; finish rows and hand complete requests to the feed."""
        rows = part.rows
        live = part.live()
        chosen = self._pick(logits[live], [rows[k] for k in live], temperature, top_k) if live else []
        for k, token in zip(live, chosen):
            row = rows[k]
            row.picks.append(token)
            if not self._advance(row.tokens, token, max_new_tokens):
                continue
            row.alive = False
            if row.steps is not None and row.request.followup is not None and feed.wanted(row.request.followup):
                self._keep_state(part, k)
            self._answer(feed, answers, row)
        verdict: dict[int, bool] = {}
        for row in rows:
            if row.alive and not verdict.setdefault(id(row.request), feed.wanted(row.request)):
                row.alive = False  # its answer can no longer matter
                answers.pop(id(row.request), None)

    def _advance(self, tokens: list[int], token: int, max_new_tokens: int) -> bool:
        """Add ``token`` to an answer; True when the answer is complete."""
        if token in self.eos_ids:
            return True
        tokens.append(token)
        return len(tokens) >= max_new_tokens or (self.stop_at_newline and self._newline[token] and span_complete(
            self.tokenizer.decode(tokens, skip_special_tokens=True)))

    def _answer(self, feed, answers: dict, row: _Row) -> None:
        slots = answers[id(row.request)]
        slots[row.index] = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if all(text is not None for text in slots):
            del answers[id(row.request)]
            feed.finish(row.request, slots)

    def _keep_state(self, part: _Part, k: int) -> None:
        self._states[id(part.rows[k].request.followup)] = self._snapshot(part, k)

    @staticmethod
    def _snapshot(part: _Part, k: int) -> _GreedyState:
        """Row ``k``'s KV after its prefix (the tokens it has run through the model) and its path."""
        row = part.rows[k]
        columns = part.mask[k].nonzero().squeeze(1)
        kept = [(keys[k][:, columns].clone(), values[k][:, columns].clone())
                for keys, values in layer_tensors(part.cache)]
        return _GreedyState(row.request.followup, row.prefix, row.prefix_kv, row.prompt_len, kept, list(row.steps),
                            list(row.picks), finished=not row.alive)

    def _walk(self, request: Request, state: _GreedyState, feed, answers: dict,
              max_new_tokens: int) -> list[tuple[_Row, int]]:
        """Draw the samples of ``request`` along its greedy path; complete the ones that never
        leave it and return the others with the step where they left it."""
        forks = []
        for index in range(request.rows):
            generator = _sample_generator(request, index)
            row = _Row(request, index, generator, prefix=state.prefix, prefix_kv=state.prefix_kv,
                       prompt_len=state.prompt_len)
            for step, (values, top_index) in enumerate(state.steps):
                token = self._draw(values, top_index, [generator])[0]
                if self._advance(row.tokens, token, max_new_tokens):
                    row.alive = False
                    self._answer(feed, answers, row)
                    break
                if token != state.picks[step]:
                    forks.append((row, step))
                    break
            else:
                if state.finished:  # greedy finished on this very path, so the sample must have too
                    raise RuntimeError("a sample followed a finished greedy path past its end")
                forks.append((row, len(state.steps) - 1))  # still on the path where greedy is now
        return forks

    def _forked_part(self, forks: list[tuple[_Row, int]], states: dict[int, _GreedyState]) -> _Part:
        """Rows that left their greedy path at step t: the prompt after its prefix + t greedy
        tokens cached, the drawn token pending."""
        spans = []
        for row, step in forks:
            state = states[id(row.request)]
            spans.append((state, state.prompt_len - len(state.prefix) + step))
        width = max(c for _, c in spans)
        shortest = min(c for _, c in spans)
        mask = torch.zeros((len(forks), width), dtype=torch.long, device=self.device)
        layers = []
        for layer_idx, like in enumerate(spans[0][0].columns):
            pair = []
            for which, like_tensor in enumerate(like):
                buffer = empty_rows(like_tensor, len(forks), width)
                buffer[:, :, :width - shortest].zero_()
                for row_idx, (state, c) in enumerate(spans):
                    buffer[row_idx, :, width - c:width] = state.columns[layer_idx][which][:, :c]
                pair.append(buffer)
            layers.append(tuple(pair))
        for row_idx, (_, c) in enumerate(spans):
            mask[row_idx, width - c:] = 1
        positions = torch.tensor([states[id(row.request)].prompt_len + step for row, step in forks],
                                 device=self.device)
        return _Part([row for row, _ in forks], adopt_cache(self.model, layers, width), mask, positions)

    def _worth_compacting(self, part: _Part, live: list[int]) -> bool:
        """Drop a batch's dead rows now? Only once an eighth of them are dead (a rebuild copies
        the whole cache); a cache that cannot be rebuilt sheds them at once."""
        dead = len(part.rows) - len(live)
        return bool(dead) and (8 * dead >= len(part.rows) or not self.row_editing)

    def _combine(self, parts: list[tuple[_Part, list[int]]]) -> _Part:
        """One batch of the given rows of each part (live rows of the batch, then joining rows).

        Rows sharing a prefix become neighbours, so each prefix group is a slice of the batch
        that the prefix attention reads as a view instead of gathering it.
        """
        entries = [(p, i) for p, (_, keep) in enumerate(parts) for i in range(len(keep))]

        def row_of(entry: tuple[int, int]) -> _Row:
            part, keep = parts[entry[0]]
            return part.rows[keep[entry[1]]]

        positions = torch.cat([part.positions[keep] for part, keep in parts])
        if not self.row_editing:
            (part, keep), = parts  # without row editing a batch only ever shrinks
            part.cache.batch_select_indices(torch.tensor(keep, device=self.device))
            return _Part([row_of(entry) for entry in entries], part.cache, part.mask[keep], positions)
        group: dict[tuple[int, ...], int] = {}
        for entry in entries:
            group.setdefault(row_of(entry).prefix, len(group))
        order = sorted(range(len(entries)), key=lambda n: group[row_of(entries[n]).prefix])  # stable
        cache, mask = rebuild_rows([(part.cache, part.mask, keep) for part, keep in parts],
                                   [entries[n] for n in order])
        return _Part([row_of(entries[n]) for n in order], cache, mask, positions[order])

    def _admit(self, requests: list[Request], feed, answers: dict, settings: tuple,
               batch: _Part | None) -> list[_Part]:
        """Start ``requests`` (and deferred ones); returns the new rows as batches with pending tokens.

        Samples whose greedy answer finished continue from its kept state; samples whose greedy
        answer is still decoding retrace it as far as it got, once it has run a few steps (until
        then they wait, since most short answers finish first); everything else is prefilled,
        grouped by prompt length to limit padding.
        """
        for followup_id, state in list(self._states.items()):
            if not feed.wanted(state.followup):
                del self._states[followup_id]
        for request in requests:
            answers[id(request)] = [None] * request.rows
        pending = []
        for request in self._deferred:
            if feed.wanted(request):
                pending.append(request)
            else:
                answers.pop(id(request), None)
        pending += requests
        self._deferred = []
        greedy_now = {id(r.followup) for r in pending if not r.samples and r.followup is not None}
        running = {}
        if batch is not None:
            running = {id(row.request.followup): k for k, row in enumerate(batch.rows)
                       if row.alive and row.steps is not None and row.request.followup is not None}
        fresh, reuse = [], []
        for request in pending:
            if not request.samples:
                fresh.append(request)
            elif id(request) in self._states:
                reuse.append((request, self._states.pop(id(request))))
            elif id(request) in running:
                k = running[id(request)]
                if len(batch.rows[k].picks) >= self._RETRACE_AFTER_STEPS:
                    reuse.append((request, self._snapshot(batch, k)))
                else:
                    self._deferred.append(request)
            elif id(request) in greedy_now and self._keep_states:
                self._deferred.append(request)
            else:
                fresh.append(request)
        parts = []
        if fresh:
            ids = [self._encode(r.prompt) for r in fresh]
            prefixes = [self._prefix_ids(r, i) for r, i in zip(fresh, ids)]
            groups = [list(range(len(fresh)))]
            if self.row_editing:
                groups = length_groups([len(i) - len(p) for i, p in zip(ids, prefixes)], self._PASS_OVERHEAD_TOKENS)
            rank = {prefix: n for n, prefix in enumerate(dict.fromkeys(prefixes))}
            kv = self._prefix_kv([prefix for prefix in rank if prefix])
            for group in groups:
                group = sorted(group, key=lambda g: rank[prefixes[g]])  # prefix groups as slices
                part, logits = self._prefill([fresh[g] for g in group], [ids[g] for g in group],
                                             [prefixes[g] for g in group], kv)
                self._step_tokens(feed, part, logits, answers, *settings)
                parts.append(part)
        forks, states = [], {}
        for request, state in reuse:
            states[id(request)] = state
            forks += self._walk(request, state, feed, answers, settings[0])
        if forks:
            parts.append(self._forked_part(forks, states))
        return parts

    def _prefill(self, requests: list[Request], ids: list[list[int]], prefixes: list[tuple[int, ...]],
                 kv: dict[tuple[int, ...], list]):
        """Run the prompts of ``requests``, after their shared prefixes (KV in ``kv``), through the model.

        Layout per row: ``[padding | its prompt after the prefix]``; the prefix itself is attended
        through the batch's prefix layout. Returns the rows (n per sampled request) as a batch
        with its cache, mask and next positions, and their next-token logits.
        """
        rows, expand, firsts = [], [], []  # firsts: one row per request goes through the model
        for r, request in enumerate(requests):
            for index in range(request.rows):
                generator = _sample_generator(request, index) if request.samples else None
                steps = [] if (request.followup is not None and self._keep_states) else None
                rows.append(_Row(request, index, generator, prefix=prefixes[r], prefix_kv=kv.get(prefixes[r]),
                                 prompt_len=len(ids[r]), steps=steps))
                expand.append(r)
            firsts.append(rows[len(rows) - request.rows])
        input_ids, mask, positions = self._left_padded([full[len(prefix):] for full, prefix in zip(ids, prefixes)],
                                                       [len(prefix) for prefix in prefixes])
        part = _Part(firsts, new_cache(self.model) if self.row_editing else self._plain_cache(), mask,
                     torch.tensor([len(i) for i in ids], device=self.device))
        logits = self._forward(input_ids, mask, positions, part.cache, self._layout(part))
        cache, mask, positions = part.cache, part.mask, part.positions
        if len(expand) > len(requests):  # the n samples of a request share its prefill
            index = torch.tensor(expand, device=self.device)
            if self.row_editing:
                cache, mask = rebuild_rows([(cache, mask, expand)])
            else:
                cache.batch_select_indices(index)
                mask = mask[index]
            positions, logits = positions[index], logits[index]
            return _Part(rows, cache, mask, positions), logits
        return _Part(rows, cache, mask, positions, layout=part.layout), logits

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

    def _plain_cache(self):
        from transformers import DynamicCache

        try:
            return DynamicCache(config=getattr(self.model, "config", None))
        except TypeError:
            return DynamicCache()

    def _prefix_ids(self, request: Request, ids: list[int]) -> tuple[int, ...]:
        """The leading tokens of ``ids`` that ``request.prefix`` covers (always leaving one)."""
        if not (self.prefix_reuse and self._prefix_attention and request.prefix):
            return ()
        prefix = self._encode(request.prefix, prompt=False)
        return tuple(ids[:_common_prefix_len(ids, prefix, len(ids) - 1)])

    def _encode(self, text: str, prompt: bool = True) -> list[int]:
        key = ("P" if prompt else "X") + text
        if key not in self._encoded:
            if len(self._encoded) > 4096:
                self._encoded.clear()
            self._encoded[key] = encode_prompts(self.tokenizer, [text])[0]
        return self._encoded[key]

    @staticmethod
    def _shared_text(prompts: list[str]) -> str | None:
        shared = os.path.commonprefix(prompts) if len(prompts) > 1 else ""
        return shared or None

    def _forward(self, input_ids, attention_mask, position_ids, cache, layout: PrefixLayout | None = None):
        """Next-token logits of each row; rows attend to their prefixes through ``layout``."""
        prefixed = layout is not None and bool(layout.groups)
        with attending(self.model, layout) if prefixed else nullcontext():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True, logits_to_keep=1)
        if prefixed and layout.calls != self._attention_layers:
            raise RuntimeError(f"prefix attention served {layout.calls} of {self._attention_layers} layers")
        self.tokens_processed += int(input_ids.shape[0] * input_ids.shape[1])
        self.forward_passes += 1
        return out.logits[:, -1, :].float()

    def _layout(self, part: _Part) -> PrefixLayout:
        """The batch's prefix groups (rows sharing a prefix), built once per batch."""
        if part.layout is None:
            members: dict[tuple[int, ...], list[int]] = {}
            for k, row in enumerate(part.rows):
                if row.prefix:
                    members.setdefault(row.prefix, []).append(k)
            part.layout = PrefixLayout([PrefixGroup(row_selector(rows, self.device), part.rows[rows[0]].prefix_kv)
                                        for rows in members.values()], batch_size=len(part.rows),
                                       per_row_above=self._PER_ROW_ABOVE)
        return part.layout

    def _prefix_kv(self, prefixes: list[tuple[int, ...]]) -> dict[tuple[int, ...], list]:
        """The KV of each shared prefix, per layer (kv_heads × length × dim).

        Prefixes not seen yet are prefilled together, ``batch_size`` per pass, and kept for the
        rest of the call (across calls with ``cache_prefixes``), the oldest dropped beyond a bound.
        """
        found = {prefix: self._prefixes[prefix] for prefix in prefixes if prefix in self._prefixes}
        missing = [prefix for prefix in prefixes if prefix not in found]
        for start in range(0, len(missing), self.batch_size):
            found.update(self._prefill_prefixes(missing[start:start + self.batch_size]))
        for prefix in missing:
            if len(self._prefixes) >= self._MAX_CACHED_PREFIXES:
                self._prefixes.pop(next(iter(self._prefixes)))  # oldest first
            self._prefixes[prefix] = found[prefix]
        return found

    def _prefill_prefixes(self, prefixes: list[tuple[int, ...]]) -> dict[tuple[int, ...], list]:
        """Per-layer KV of each prefix, from one left-padded pass."""
        input_ids, mask, positions = self._left_padded([list(prefix) for prefix in prefixes], [0] * len(prefixes))
        width = input_ids.shape[1]
        cache = new_cache(self.model)
        self._forward(input_ids, mask, positions, cache)
        layers = layer_tensors(cache)
        return {prefix: [(keys[row, :, width - len(prefix):].clone(), values[row, :, width - len(prefix):].clone())
                         for keys, values in layers]
                for row, prefix in enumerate(prefixes)}

    @staticmethod
    def _pick(logits: torch.Tensor, rows: list[_Row], temperature: float, top_k: int) -> list[int]:
        chosen = logits.argmax(dim=-1).tolist()
        spread = [k for k, row in enumerate(rows) if row.generator is not None or row.steps is not None]
        if not spread:
            return chosen
        scaled = logits[spread] / temperature
        if top_k and top_k < scaled.shape[-1]:
            values, index = scaled.topk(top_k, dim=-1)  # sorted, deterministic
        else:
            values, index = scaled, None
        sampled = [i for i, k in enumerate(spread) if rows[k].generator is not None]
        if sampled:
            draws = HFBackend._draw(values[sampled], None if index is None else index[sampled],
                                    [rows[spread[i]].generator for i in sampled])
            for i, token in zip(sampled, draws):
                chosen[spread[i]] = token
        for i, k in enumerate(spread):
            if rows[k].steps is not None:  # a greedy row whose samples may retrace its path
                rows[k].steps.append((values[i:i + 1].clone(), None if index is None else index[i:i + 1].clone()))
        return chosen

    @staticmethod
    def _draw(values: torch.Tensor, index: torch.Tensor | None, generators: list[torch.Generator]) -> list[int]:
        """Inverse-CDF sampling: one uniform per row from that row's own generator."""
        cdf = torch.softmax(values, dim=-1).cumsum(dim=-1).cpu()
        u = torch.tensor([[torch.rand(1, generator=g).item()] for g in generators], dtype=cdf.dtype)
        choice = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp(max=values.shape[-1] - 1)
        if index is not None:
            choice = index.cpu().gather(1, choice)
        return choice.squeeze(1).tolist()
