"""The engine's scheduler: which sequences run when, decided on token ids alone (no tensors).

The engine serves a request feed with continuous batching on a CPU, where every forward pass
costs about as much as reading all weights once however few rows it carries. So:

* finished rows leave the batch instead of decoding padding, and new requests join whenever
  half of the row budget is free — one rambling answer must not keep a nearly empty batch
  running for 30 steps;
* fresh prompts are prefilled in groups of similar length (``length_groups``), trading padding
  against the fixed cost of a pass;
* the n samples of a prompt whose greedy answer is known do not prefill the prompt again: they
  are drawn along the greedy path and join the batch where they leave it (``Retrace``/``Fork``);
  while the greedy answer is still young they wait, since most short answers finish first;
* rows sharing a few-shot prefix are neighbours in the batch, so each prefix group is a slice
  the prefix attention reads as a view (``PrefixRows``).

The split follows the scheduler / model-runner design of serving engines: ``Scheduler.schedule``
returns a plan, the runner executes it on the model and reports the token each row chose, and
``Scheduler.update`` finishes rows and requests. An iteration has two plans, because a prompt's
first token decides whether its row joins the batch at all: an ``AdmitPlan`` (prefill fresh
prompts, draw samples along greedy paths) and a ``StepPlan`` (compose the batch, one decode
step). Every request gets the answer it would get alone, however it is scheduled.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from knowpack.probe.backends.base import Request, RequestFeed
from knowpack.probe.backends.engine_config import EngineConfig
from knowpack.probe.backends.tokens import TokenRules


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


def _common_prefix_len(first: list[int], other: list[int], limit: int) -> int:
    n = 0
    while n < limit and n < len(other) and first[n] == other[n]:
        n += 1
    return n


@dataclass(eq=False)
class Sequence:
    """One row: sample ``index`` of ``request`` (0 for a greedy answer) and its tokens so far.

    ``prefix``: the leading prompt tokens it attends to through the shared prefix cache (empty:
    none); ``prompt_len``: the whole prompt's length. ``picks``: every token chosen for it,
    EOS included; ``tokens``: its answer (EOS left out). ``keeps_path``: a greedy row whose
    samples may be drawn along its path (the runner keeps each step's distribution).
    """

    id: int
    request: Request
    index: int
    prefix: tuple[int, ...]
    prompt_len: int
    keeps_path: bool = False
    tokens: list[int] = field(default_factory=list)
    picks: list[int] = field(default_factory=list)
    alive: bool = True

    @property
    def sampled(self) -> bool:
        return self.request.samples > 0


@dataclass
class GreedyState:
    """A greedy path its samples may follow; the runner holds its tensors under ``handle``.

    ``finished``: False for a snapshot of a greedy answer still decoding (a sample still on its
    path at the last step continues from there).
    """

    handle: int
    followup: Request
    prefix: tuple[int, ...]
    prompt_len: int
    picks: list[int]
    finished: bool = True


@dataclass(frozen=True)
class PrefixRows:
    """Rows (indices into a pass's rows) that attend to one shared prefix."""

    prefix: tuple[int, ...]
    rows: tuple[int, ...]


@dataclass
class Prefill:
    """One prefill pass: prompts of similar length, rows of one prefix neighbours.

    ``prompts``/``prefixes``: per request, its tokens after the prefix and the prefix; the
    prompt is run once and ``expand`` (per row, its request's index) copies it to the n rows of
    a sampled request. ``prefix_groups`` index ``prompts``; ``per_row``: lay the prefixes out
    per row (many groups) instead of one matmul per group.
    """

    sequences: list[Sequence]
    prompts: list[list[int]]
    prefixes: list[tuple[int, ...]]
    expand: list[int]
    prefix_groups: list[PrefixRows]
    per_row: bool


@dataclass
class Retrace:
    """Draw the samples of a request along ``state``'s greedy path (one sequence per sample).

    ``snapshot_of``: the id of a greedy row still decoding whose state is taken now; None when
    the state was kept when that row finished.
    """

    state: GreedyState
    sequences: list[Sequence]
    snapshot_of: int | None = None


@dataclass(frozen=True)
class Departure:
    """Where a sample first drew another token than greedy: the step and the token it drew."""

    step: int
    token: int


@dataclass
class Fork:
    """A sample joining the batch where it left its greedy path: greedy's cached columns up to
    ``step`` (exclusive) continue, the token it drew there is pending."""

    sequence: Sequence
    handle: int
    step: int


@dataclass
class AdmitPlan:
    """Start new work: prefix prefills, prompt prefills, samples retraced along greedy paths.

    ``snapshots``: (row id, handle) of greedy rows that just finished, whose path to keep (done
    first); ``dropped``: handles of kept paths no sample needs any more. ``prefix_fills``: the
    shared prefixes to prefill, one pass per list; ``prefixes``: every prefix the prefills
    attend to; ``evicted``: prefixes to forget afterwards (a bounded cache, oldest first).
    """

    snapshots: list[tuple[int, int]]
    dropped: list[int]
    prefix_fills: list[list[tuple[int, ...]]]
    prefixes: list[tuple[int, ...]]
    evicted: list[tuple[int, ...]]
    prefills: list[Prefill]
    retraces: list[Retrace]


@dataclass
class AdmitResult:
    """What the runner reports for an AdmitPlan: per prefill, the first token of each of its
    rows; per retrace, each sample's departure from the path (None: never left it)."""

    first_tokens: list[list[int]]
    departures: list[list[Departure | None]]


@dataclass
class StepPlan:
    """Compose the batch and run one decode step.

    ``forks`` join first (their greedy paths, ``released`` afterwards, are not needed again);
    the batch becomes ``rows`` (row ids in order) — copied into one fresh cache when
    ``rebuild``, else the one existing batch holding exactly these rows; ``leaving``: rows no
    longer held anywhere. ``pending``: the token each row feeds (padding for finished rows kept
    as dead weight); the runner reports the chosen token of each ``live`` row (batch indices).
    """

    snapshots: list[tuple[int, int]]
    forks: list[Fork]
    released: list[int]
    rows: list[int]
    rebuild: bool
    leaving: list[int]
    prefix_groups: list[PrefixRows]
    per_row: bool
    pending: list[int]
    live: list[int]


class PrefixIndex:
    """Which shared prefixes have their KV cached (the runner holds the tensors), oldest first.

    Lives as long as its backend: with ``cache_prefixes`` the prefixes of one probe run are
    prefilled once for all its chunks.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._held: dict[tuple[int, ...], None] = {}

    def admit(self, prefixes: list[tuple[int, ...]], per_pass: int):
        """(prefixes to prefill in passes of ``per_pass``, prefixes to evict) so that ``prefixes``
        are available now; the evicted ones may include some admitted here, still usable now."""
        missing = [prefix for prefix in prefixes if prefix not in self._held]
        evicted = []
        for prefix in missing:
            if len(self._held) >= self.capacity:
                oldest = next(iter(self._held))
                del self._held[oldest]
                evicted.append(oldest)
            self._held[prefix] = None
        return [missing[start:start + per_pass] for start in range(0, len(missing), per_pass)], evicted

    def clear(self) -> None:
        self._held.clear()


@dataclass(frozen=True)
class Capabilities:
    """What the model allows. ``row_editing``: its cache can be cut into rows and padded (else
    one batch per call, no continuous batching); ``prefix_attention``: its attention runs
    through the shared-prefix function."""

    row_editing: bool
    prefix_attention: bool


@dataclass(frozen=True)
class Sampling:
    """The generation settings of one ``stream`` call."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0


class Scheduler:
    """Plans one ``stream`` call over ``feed``; see the module docstring for the policy.

    Invariant: every live row of the batch holds one pending token (chosen, not yet run
    through the model). Finished rows stay in the batch as dead weight until a rebuild (see
    ``_worth_compacting``), or until joining rows need one anyway.
    """

    def __init__(self, feed: RequestFeed, rules: TokenRules, config: EngineConfig, sampling: Sampling, *,
                 batch_size: int, capabilities: Capabilities, prefixes: PrefixIndex):
        self.feed, self.rules, self.config, self.sampling = feed, rules, config, sampling
        self.batch_size = batch_size
        self.max_rows = config.row_budget(batch_size)
        self.row_editing = capabilities.row_editing
        self.share_prefixes = config.prefix_reuse and capabilities.prefix_attention
        # Greedy paths are kept only when a step's sampling distribution is small (top-k) and
        # the cache can be cut into rows.
        top_k = sampling.top_k
        self.keep_paths = self.row_editing and bool(top_k) and top_k <= config.retrace_max_top_k
        self.prefixes = prefixes
        self._answers: dict[int, list[str | None]] = {}
        self._states: dict[int, GreedyState] = {}  # by id of the followup request
        self._deferred: list[Request] = []
        self._batch: list[Sequence] = []
        self._layout: tuple[list[PrefixRows], bool] = ([], False)
        self._joining: list[list[Sequence]] = []  # rows started by the last admission, per part
        self._forks: list[Fork] = []
        self._retraced: list[int] = []  # handles used since the last step
        self._staged: list[Sequence] = []  # rows the runner holds outside the batch
        self._snapshots: list[tuple[int, int]] = []
        self._row_ids, self._handles = itertools.count(), itertools.count()
        self._considered = False  # admission already looked at in this iteration
        self._taken = False
        self._awaiting: AdmitPlan | StepPlan | None = None

    # -- the loop --------------------------------------------------------------------------
    def schedule(self) -> AdmitPlan | StepPlan | None:
        """The next plan for the runner, or None once the feed has no more work."""
        if self._awaiting is not None:
            raise RuntimeError("schedule() called before update() reported the last plan")
        while True:
            if not self._considered:
                self._considered = True
                live = sum(row.alive for row in self._batch)
                if not live or (self.row_editing and live <= self.max_rows // 2):
                    self._awaiting = self._admit(live)
                    return self._awaiting
                self._taken = False
            self._considered = False
            self._awaiting = self._compose()
            if self._awaiting is not None:
                return self._awaiting
            if not self._taken:
                return None
            # every joining request finished on its first token: ask for more

    def update(self, result: AdmitResult | list[int]) -> None:
        """Take the runner's report on the last plan: finish rows and requests, start forks."""
        plan, self._awaiting = self._awaiting, None
        if isinstance(plan, AdmitPlan):
            self._admitted(plan, result)
        elif isinstance(plan, StepPlan):
            self._take_tokens(self._batch, plan.live, result)
        else:
            raise RuntimeError("update() called without a plan")

    # -- admission -------------------------------------------------------------------------
    def _admit(self, live: int) -> AdmitPlan:
        """Take requests while there is room; deferred samples count against the row budget
        too, so a batch never outgrows it."""
        room = self.max_rows - live - sum(r.rows for r in self._deferred)
        requests = self.feed.take(room, True) if room > 0 or not (live or self._deferred) else []
        self._taken = bool(requests) or bool(self._deferred)
        dropped = []
        for followup_id, state in list(self._states.items()):
            if not self.feed.wanted(state.followup):
                del self._states[followup_id]
                dropped.append(state.handle)
        self._snapshots = [pair for pair in self._snapshots if pair[1] not in dropped]
        for request in requests:
            self._answers[id(request)] = [None] * request.rows
        pending = []
        for request in self._deferred:
            if self.feed.wanted(request):
                pending.append(request)
            else:
                self._answers.pop(id(request), None)
        self._deferred = []
        fresh, retraces = self._classify(pending + requests, live)
        plan = AdmitPlan(self._take_snapshots(), dropped, [], [], [], [], retraces)
        if fresh:
            self._plan_prefills(plan, fresh)
        return plan

    def _classify(self, pending: list[Request], live: int) -> tuple[list[Request], list[Retrace]]:
        """Which requests are prefilled, retraced along a greedy path, or deferred.

        Samples whose greedy answer finished continue from its kept state; samples whose greedy
        answer is still decoding retrace it as far as it got, once it has run
        ``retrace_after_steps`` steps (until then they wait); everything else is prefilled.
        """
        greedy_now = {id(r.followup) for r in pending if not r.samples and r.followup is not None}
        running = {id(row.request.followup): row for row in self._batch
                   if live and row.alive and row.keeps_path and row.request.followup is not None}
        fresh, retraces = [], []
        for request in pending:
            if not request.samples:
                fresh.append(request)
            elif id(request) in self._states:
                retraces.append(self._retrace(request, self._states.pop(id(request))))
            elif id(request) in running:
                row = running[id(request)]
                if len(row.picks) >= self.config.retrace_after_steps:
                    state = GreedyState(next(self._handles), request, row.prefix, row.prompt_len, list(row.picks),
                                        finished=False)
                    retraces.append(self._retrace(request, state, row.id))
                else:
                    self._deferred.append(request)
            elif id(request) in greedy_now and self.keep_paths:
                self._deferred.append(request)
            else:
                fresh.append(request)
        return fresh, retraces

    def _retrace(self, request: Request, state: GreedyState, snapshot_of: int | None = None) -> Retrace:
        rows = [Sequence(next(self._row_ids), request, index, state.prefix, state.prompt_len)
                for index in range(request.rows)]
        self._staged += rows
        self._retraced.append(state.handle)
        return Retrace(state, rows, snapshot_of)

    def _plan_prefills(self, plan: AdmitPlan, fresh: list[Request]) -> None:
        """Prefill passes for ``fresh`` requests: grouped by prompt length to limit padding, rows
        of one prefix neighbours (so prefix groups are slices), shared prefixes prefilled first."""
        ids = [self.rules.ids(r.prompt) for r in fresh]
        prefixes = [self._prefix_ids(r, i) for r, i in zip(fresh, ids)]
        groups = [list(range(len(fresh)))]
        if self.row_editing:
            groups = length_groups([len(i) - len(p) for i, p in zip(ids, prefixes)], self.config.pass_overhead_tokens)
        rank = {prefix: n for n, prefix in enumerate(dict.fromkeys(prefixes))}
        plan.prefixes = [prefix for prefix in rank if prefix]
        plan.prefix_fills, plan.evicted = self.prefixes.admit(plan.prefixes, self.batch_size)
        for group in groups:
            group = sorted(group, key=lambda g: rank[prefixes[g]])
            plan.prefills.append(self._prefill([fresh[g] for g in group], [ids[g] for g in group],
                                               [prefixes[g] for g in group]))

    def _prefill(self, requests: list[Request], ids: list[list[int]], prefixes: list[tuple[int, ...]]) -> Prefill:
        rows, expand = [], []
        for r, request in enumerate(requests):
            keeps_path = request.followup is not None and self.keep_paths
            for index in range(request.rows):
                rows.append(Sequence(next(self._row_ids), request, index, prefixes[r], len(ids[r]), keeps_path))
                expand.append(r)
        self._staged += rows
        groups, per_row = self._prefix_groups(prefixes)
        return Prefill(rows, [full[len(prefix):] for full, prefix in zip(ids, prefixes)], prefixes, expand,
                       groups, per_row)

    def _prefix_ids(self, request: Request, ids: list[int]) -> tuple[int, ...]:
        """The leading tokens of ``ids`` that ``request.prefix`` covers (always leaving one)."""
        if not (self.share_prefixes and request.prefix):
            return ()
        prefix = self.rules.ids(request.prefix)
        return tuple(ids[:_common_prefix_len(ids, prefix, len(ids) - 1)])

    def _prefix_groups(self, prefixes: list[tuple[int, ...]]) -> tuple[list[PrefixRows], bool]:
        """The rows of each distinct non-empty prefix, in order of first appearance, and whether
        there are so many groups that prefixes are better laid out per row."""
        members: dict[tuple[int, ...], list[int]] = {}
        for k, prefix in enumerate(prefixes):
            if prefix:
                members.setdefault(prefix, []).append(k)
        groups = [PrefixRows(prefix, tuple(rows)) for prefix, rows in members.items()]
        return groups, len(groups) > self.config.per_row_above

    def _admitted(self, plan: AdmitPlan, result: AdmitResult) -> None:
        for prefill, tokens in zip(plan.prefills, result.first_tokens):
            self._take_tokens(prefill.sequences, list(range(len(prefill.sequences))), tokens)
            self._joining.append(prefill.sequences)
        for retrace, departures in zip(plan.retraces, result.departures):
            self._forks += self._follow(retrace, departures)
        if self._forks:
            self._joining.append([fork.sequence for fork in self._forks])

    def _follow(self, retrace: Retrace, departures: list[Departure | None]) -> list[Fork]:
        """Complete the samples that finish on the greedy path (or where they leave it); the
        others fork at the step where they left it."""
        state, forks = retrace.state, []
        for row, departure in zip(retrace.sequences, departures):
            path = state.picks if departure is None else [*state.picks[:departure.step], departure.token]
            if any(self.rules.advance(row.tokens, token, self.sampling.max_new_tokens) for token in path):
                row.alive = False
                self._answer(row)
            elif departure is None and state.finished:  # greedy finished on this very path, so must the sample
                raise RuntimeError("a sample followed a finished greedy path past its end")
            else:
                forks.append(Fork(row, state.handle, len(path) - 1))
        return forks

    # -- tokens ----------------------------------------------------------------------------
    def _take_tokens(self, rows: list[Sequence], live: list[int], tokens: list[int]) -> None:
        """Give each live row its chosen token; finish rows, hand complete requests to the feed,
        and stop rows whose answer can no longer matter."""
        for k, token in zip(live, tokens):
            row = rows[k]
            row.picks.append(token)
            if not self.rules.advance(row.tokens, token, self.sampling.max_new_tokens):
                continue
            row.alive = False
            followup = row.request.followup
            if row.keeps_path and followup is not None and self.feed.wanted(followup):
                self._keep(row)
            self._answer(row)
        verdict: dict[int, bool] = {}
        for row in rows:
            if row.alive and not verdict.setdefault(id(row.request), self.feed.wanted(row.request)):
                row.alive = False
                self._answers.pop(id(row.request), None)

    def _keep(self, row: Sequence) -> None:
        state = GreedyState(next(self._handles), row.request.followup, row.prefix, row.prompt_len, list(row.picks))
        self._states[id(state.followup)] = state
        self._snapshots.append((row.id, state.handle))

    def _take_snapshots(self) -> list[tuple[int, int]]:
        snapshots, self._snapshots = self._snapshots, []
        return snapshots

    def _answer(self, row: Sequence) -> None:
        slots = self._answers[id(row.request)]
        slots[row.index] = self.rules.decode(row.tokens)
        if all(text is not None for text in slots):
            del self._answers[id(row.request)]
            self.feed.finish(row.request, slots)

    # -- the batch -------------------------------------------------------------------------
    def _compose(self) -> StepPlan | None:
        """The next decode step: the batch's live rows and the rows that joined, or None when
        no row is live."""
        parts = [(rows, [k for k, row in enumerate(rows) if row.alive]) for rows in [self._batch, *self._joining]]
        parts = [(rows, live) for rows, live in parts if live]
        self._joining = []
        if not parts:
            return None
        rebuild = len(parts) > 1 or self._worth_compacting(*parts[0])
        batch = parts[0][0]
        if rebuild:
            batch = [rows[k] for rows, live in parts for k in live]
            if self.row_editing:  # rows sharing a prefix become neighbours (stable)
                group: dict[tuple[int, ...], int] = {}
                for row in batch:
                    group.setdefault(row.prefix, len(group))
                batch = sorted(batch, key=lambda row: group[row.prefix])
        if rebuild or batch is not self._batch:
            self._layout = self._prefix_groups([row.prefix for row in batch])
        kept = {row.id for row in batch}
        leaving = [row.id for row in [*self._batch, *self._staged] if row.id not in kept]
        self._batch, self._staged = batch, []
        forks, self._forks = self._forks, []
        released, self._retraced = self._retraced, []
        return StepPlan(self._take_snapshots(), forks, released, [row.id for row in batch], rebuild, leaving,
                        *self._layout, pending=[row.tokens[-1] if row.alive else self.rules.pad_id for row in batch],
                        live=[k for k, row in enumerate(batch) if row.alive])

    def _worth_compacting(self, rows: list[Sequence], live: list[int]) -> bool:
        """Drop a batch's dead rows now? Only once ``compact_dead_share`` of them are dead (a
        rebuild copies the whole cache); a cache that cannot be rebuilt sheds them at once."""
        dead = len(rows) - len(live)
        return bool(dead) and (dead >= self.config.compact_dead_share * len(rows) or not self.row_editing)
