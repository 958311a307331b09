"""The continuous-batching engine of the HF backend: same answers however the work is scheduled.

The first tests drive the scheduler alone on scripted token streams (no model): admission,
deferral, leaving rows and forks are checked plan by plan. The others run the whole engine on
a tiny random model against the naive reference and against the round-driven probe.
"""

import itertools

import pytest
import torch

from knowpack.probe.backends import get_backend
from knowpack.probe.backends.base import ListFeed, Request
from knowpack.probe.backends.engine_config import EngineConfig
from knowpack.probe.backends.hf import length_groups
from knowpack.probe.backends.kv import new_cache, rebuild_rows
from knowpack.probe.backends.reference import naive_generate
from knowpack.probe.backends.scheduler import (AdmitPlan, AdmitResult, Capabilities, Departure, PrefixIndex, Sampling,
                                               Scheduler, StepPlan)
from knowpack.probe.backends.tokens import TokenRules
from knowpack.probe.config import ProbeConfig
from knowpack.probe.matching import answer_span
from knowpack.probe.runner import fewshot_prompt, run_probe
from test_probe_fakes import one_thread  # noqa: F401  (fixture)
from test_probe_hf import facts, lively  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

EOS = 0


# -- the scheduler on scripted tokens -----------------------------------------------------------

def char_rules() -> TokenRules:
    """One token per character (id = code point), EOS 0: answers are readable in the tests."""
    return TokenRules(encode=lambda text: [ord(c) for c in text], decode=lambda ids: "".join(map(chr, ids)),
                      eos_ids={EOS}, newline=[chr(i) == "\n" for i in range(128)], pad_id=EOS)


class ScriptRunner:
    """Stands in for the model runner: each row's tokens are a scripted text, per (prompt, sample
    index), followed by EOS. Departures from a greedy path are computed from the scripts."""

    def __init__(self, scripts: dict):
        self.scripts = scripts
        self.rows = {}
        self.batch = []  # row ids of the last step's batch
        self.live_at_admission = []  # (live rows then, rows prefilled)

    def script(self, row) -> list[int]:
        text = self.scripts[(row.request.prompt, row.index if row.sampled else None)]
        return [ord(c) for c in text] + [EOS]

    def next_token(self, row) -> int:
        return self.script(row)[len(row.tokens)]

    def admit(self, plan: AdmitPlan) -> AdmitResult:
        self.live_at_admission.append((sum(self.rows[r].alive for r in self.batch),
                                       sum(len(p.sequences) for p in plan.prefills)))
        departures = []
        for retrace in plan.retraces:
            picks, found = retrace.state.picks, []
            for row in retrace.sequences:
                own = self.script(row)
                step = next((t for t in range(len(picks)) if own[t] != picks[t]), None)
                found.append(None if step is None else Departure(step, own[step]))
            departures.append(found)
        for row in [r for p in plan.prefills for r in p.sequences] + [r for t in plan.retraces for r in t.sequences]:
            self.rows[row.id] = row
        return AdmitResult([[self.next_token(row) for row in prefill.sequences] for prefill in plan.prefills],
                           departures)

    def step(self, plan: StepPlan) -> list[int]:
        self.batch = plan.rows
        return [self.next_token(self.rows[plan.rows[k]]) for k in plan.live]


def schedule_all(feed, scripts, max_new_tokens=20, top_k=5, row_editing=True, **engine):
    """Serve ``feed`` with the scheduler and a ScriptRunner; returns every plan in order and the runner."""
    scheduler = Scheduler(feed, char_rules(), EngineConfig(**engine), Sampling(max_new_tokens, 0.5, top_k),
                          batch_size=1, capabilities=Capabilities(row_editing=row_editing, prefix_attention=row_editing),
                          prefixes=PrefixIndex(4))
    runner, plans = ScriptRunner(scripts), []
    while (plan := scheduler.schedule()) is not None:
        scheduler.update(runner.admit(plan) if isinstance(plan, AdmitPlan) else runner.step(plan))
        plans.append(plan)
    return plans, runner


def test_without_row_editing_batches_run_one_after_another():
    prompts = [f"q{i}:" for i in range(5)]
    scripts = {(p, None): "ab" * (1 + i % 3) + "\n" for i, p in enumerate(prompts)}
    feed = ListFeed([Request(p, prefix="q") for p in prompts])
    plans, runner = schedule_all(feed, scripts, row_editing=False, max_rows=2)
    assert [texts[0] for texts in feed.answers()] == [scripts[(p, None)] for p in prompts]
    assert [joined for live, joined in runner.live_at_admission if joined] == [2, 2, 1]
    assert all(live == 0 for live, _ in runner.live_at_admission)  # nobody joins a running batch
    admits = [p for p in plans if isinstance(p, AdmitPlan)]
    assert all(len(p.prefills) <= 1 and not p.prefixes for p in admits)  # one pass, no shared prefix
    steps = [p for p in plans if isinstance(p, StepPlan)]
    # a cache that cannot be rebuilt sheds finished rows at once
    assert all(len(p.rows) == len(p.live) for p in steps)


class Together(ListFeed):
    """Each greedy request and its samples are ready at once (the probe's speculation)."""

    def __init__(self, pairs):
        super().__init__([r for pair in pairs for r in pair])


def test_admission_respects_the_row_budget_and_answers_follow_the_scripts():
    prompts = [f"q{i}:" for i in range(9)]
    scripts = {(p, None): "ab" * (1 + i % 4) + "\n" for i, p in enumerate(prompts)}
    feed = ListFeed([Request(p, prefix="q") for p in prompts])
    plans, runner = schedule_all(feed, scripts, max_rows=4)
    steps = [p for p in plans if isinstance(p, StepPlan)]
    assert max(len(p.live) for p in steps) == 4  # full, never over
    assert [texts[0] for texts in feed.answers()] == [scripts[(p, None)] for p in prompts]
    # rows joined a batch still decoding, and only once half of the budget was free
    assert any(live and joined for live, joined in runner.live_at_admission)
    assert max(live for live, _ in runner.live_at_admission) <= 2
    # the shared prefix "q" is cut from every prompt (one token always stays) and prefilled once
    admits = [p for p in plans if isinstance(p, AdmitPlan)]
    assert [p.prefix_fills for p in admits if p.prefix_fills] == [[[(ord("q"),)]]]


def test_samples_wait_for_retrace_after_steps_then_fork_where_they_leave_the_path():
    long_q, short_q = "long?", "short?"
    scripts = {(long_q, None): "abcdefgh\n", (long_q, 0): "aXY\n", (long_q, 1): "abcdefgh\n",
               (short_q, None): "z\n", (short_q, 0): "zq\n", (short_q, 1): "\n"}
    pairs = []
    for prompt in (long_q, short_q):
        sample = Request(prompt, samples=2, seed=1)
        pairs.append((Request(prompt, followup=sample), sample))
    feed = Together(pairs)
    plans, _ = schedule_all(feed, scripts, retrace_after_steps=3)
    admits = [p for p in plans if isinstance(p, AdmitPlan)]
    # no sample is ever prefilled: each is drawn along its greedy answer's path
    assert not any(row.sampled for p in admits for prefill in p.prefills for row in prefill.sequences)
    retraces = {r.state.followup.prompt: r for p in admits for r in p.retraces}
    # the long answer was still decoding: retraced from a snapshot once it had run 3 steps
    assert not retraces[long_q].state.finished and retraces[long_q].snapshot_of is not None
    assert len(retraces[long_q].state.picks) == 3
    # the short one finished within 3 steps: its samples waited and continued from its kept state
    assert retraces[short_q].state.finished and retraces[short_q].snapshot_of is None
    forks = {(f.sequence.request.prompt, f.sequence.index): f.step for p in plans if isinstance(p, StepPlan)
             for f in p.forks}
    # long/0 leaves at "X" (step 1); long/1 is still on the path where greedy is now (step 2);
    # short/0 leaves at "q"; short/1 draws "\n" at step 0 (an empty line goes on)
    assert forks == {(long_q, 0): 1, (long_q, 1): 2, (short_q, 0): 1, (short_q, 1): 0}
    assert feed.answers() == [[scripts[(long_q, None)]], [scripts[(long_q, 0)], scripts[(long_q, 1)]],
                              [scripts[(short_q, None)]], [scripts[(short_q, 0)], scripts[(short_q, 1)]]]


class DropsAfter(ListFeed):
    """Once ``trigger`` has its answer, ``victim`` is no longer wanted (early exit)."""

    def __init__(self, requests, trigger, victim):
        super().__init__(requests)
        self.trigger, self.victim = trigger, victim
        self.done = False

    def finish(self, request, texts):
        super().finish(request, texts)
        self.done = self.done or request is self.trigger

    def wanted(self, request):
        return not (self.done and request is self.victim)


def test_rows_leave_when_finished_or_unwanted():
    scripts = {("a?", None): "x\n", ("b?", None): "y" * 12 + "\n", ("c?", None): "zz\n", ("d?", None): "w" * 6 + "\n"}
    requests = [Request(prompt) for prompt, _ in scripts]
    feed = DropsAfter(requests, trigger=requests[2], victim=requests[1])
    plans, _ = schedule_all(feed, scripts, max_rows=8)
    assert feed.results.keys() == {0, 2, 3}  # b was cut short and never answered
    row = {r.request.prompt: r.id for p in plans if isinstance(p, AdmitPlan) for f in p.prefills for r in f.sequences}
    steps = [p for p in plans if isinstance(p, StepPlan)]
    # a finishes at step 0; c at step 1, which makes b unwanted; d runs on alone
    assert [len(p.live) for p in steps] == [4, 3, 1, 1, 1, 1]
    assert steps[1].rebuild and steps[1].leaving == [row["a?"]]  # a quarter of the rows dead: rebuilt
    assert steps[2].rebuild and sorted(steps[2].leaving) == sorted([row["b?"], row["c?"]])
    assert steps[2].rows == [row["d?"]] and not any(p.rebuild for p in steps[3:])


def test_prefix_index_evicts_the_oldest_and_prefills_in_passes():
    index = PrefixIndex(capacity=2)
    fills, evicted = index.admit([(1,), (2,), (3,)], per_pass=2)
    assert fills == [[(1,), (2,)], [(3,)]] and evicted == [(1,)]
    assert index.admit([(2,), (3,)], per_pass=2) == ([], [])
    assert index.admit([(1,)], per_pass=2) == ([[(1,)]], [(2,)])


def test_length_groups_is_optimal_and_covers_every_item():
    lengths = [3, 17, 4, 18, 5, 30]

    def cost(groups, overhead):
        return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)

    for overhead in (0, 5, 24, 1000):
        groups = length_groups(lengths, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        best = min(cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))], overhead)
                   for r in range(len(order)) for cuts in itertools.combinations(range(1, len(order)), r))
        assert cost(groups, overhead) == best
    assert length_groups(lengths, 1000) == [sorted(range(6), key=lambda i: lengths[i])]


# -- the whole engine on a tiny model -----------------------------------------------------------


def test_rebuild_rows_keeps_selected_rows_aligned_right(lively):
    model = lively.model
    heads, dim = model.config.num_key_value_heads, model.config.hidden_size // model.config.num_attention_heads
    n_layers = model.config.num_hidden_layers

    def part(rows, width, used):
        layers = [(torch.randn(rows, heads, width, dim), torch.randn(rows, heads, width, dim)) for _ in range(n_layers)]
        mask = torch.zeros(rows, width, dtype=torch.long)
        for r, u in enumerate(used):
            mask[r, width - u:] = 1
        return new_cache(model, layers, spare=4), mask, layers

    cache_a, mask_a, layers_a = part(4, 6, [2, 5, 3, 1])
    cache_b, mask_b, layers_b = part(2, 9, [9, 4])
    merged, mask = rebuild_rows([(cache_a, mask_a, [1, 2]), (cache_b, mask_b, [1, 0])], spare=4)
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1, 1],
                             [0, 0, 0, 0, 0, 1, 1, 1, 1], [1] * 9]
    keys = merged.layers[0].keys
    assert keys.shape[:3] == (4, heads, 9)
    assert torch.equal(keys[0, :, 4:], layers_a[0][0][1, :, 1:])  # row 1 of a: its 5 used columns
    assert torch.equal(keys[1, :, 6:], layers_a[0][0][2, :, 3:])
    assert torch.equal(keys[2, :, 5:], layers_b[0][0][1, :, 5:])
    assert torch.equal(keys[3], layers_b[0][0][0])
    assert not keys[1, :, :4].any()  # new padding is zeros, never garbage
    # rows of several parts interleaved in a given order
    cache_a, mask_a, layers_a = part(4, 6, [2, 5, 3, 1])
    cache_b, mask_b, layers_b = part(2, 9, [9, 4])
    mixed, mixed_mask = rebuild_rows([(cache_a, mask_a, [1, 2]), (cache_b, mask_b, [1, 0])],
                                     order=[(1, 0), (0, 0), (0, 1), (1, 1)], spare=4)
    assert mixed_mask.tolist() == [mask[2].tolist(), mask[0].tolist(), mask[1].tolist(), mask[3].tolist()]
    assert torch.equal(mixed.layers[0].keys[0, :, 5:], layers_b[0][0][1, :, 5:])
    assert torch.equal(mixed.layers[0].keys[1, :, 4:], layers_a[0][0][1, :, 1:])
    assert torch.equal(mixed.layers[0].keys[2, :, 6:], layers_a[0][0][2, :, 3:])
    assert torch.equal(mixed.layers[0].keys[3], layers_b[0][0][0])
    # appending after a rebuild writes in place into the spare columns, until they run out
    layer = merged.layers[0]
    buffer = layer.buffer_keys.data_ptr()
    for step in range(5):
        layer.update(torch.ones(4, heads, 1, dim), torch.ones(4, heads, 1, dim))
        assert (layer.buffer_keys.data_ptr() == buffer) == (step < 4)
    assert layer.keys.shape[2] == 14 and torch.equal(layer.keys[0, :, :9], keys[0])


def test_tiny_row_budget_gives_the_naive_answers(lively):
    """Rows join a running batch mid-decode (budget of 3 rows) with different few-shot prefixes."""
    fs = facts(12)
    backend = get_backend("hf", lively, batch_size=1, engine_config=EngineConfig(max_rows=3))
    requests = []
    for fact in fs[4:]:
        for j in (0, 2):
            prompt, prefix = fewshot_prompt(backend, fact, fs[j:j + 2])
            requests.append(Request(prompt, prefix=prefix))
    feed = ListFeed(requests)
    plans = [plan for plan, _ in backend.steps(feed, max_new_tokens=20)]
    naive = naive_generate(lively, [r.prompt for r in requests], max_new_tokens=20)
    fast = [texts[0] for texts in feed.answers()]
    assert [answer_span(t) for t in fast] == [answer_span(r["greedy"]) for r in naive]
    assert backend.forward_passes < sum(len(t) for t in fast)  # rows did share passes
    steps = [plan for plan in plans if isinstance(plan, StepPlan)]
    assert max(len(plan.live) for plan in steps) == 3
    assert any(len(plan.prefix_groups) == 2 for plan in steps)  # both prefixes in one batch


class _AfterGreedy(ListFeed):
    """Releases each sampled request only once its greedy request has finished (as the probe does)."""

    def __init__(self, pairs):
        super().__init__([g for g, _ in pairs])
        self.later = {id(g): s for g, s in pairs}
        self.sampled = {}

    def finish(self, request, texts):
        if request.samples:
            self.sampled[id(request)] = texts
        else:
            super().finish(request, texts)
            self.pending.append(self.later[id(request)])


def test_samples_retracing_the_greedy_path_equal_fresh_samples(lively):
    fs = facts(10)
    engine = EngineConfig(max_rows=8)
    backend = get_backend("hf", lively, batch_size=2, engine_config=engine)
    pairs = []
    for i, fact in enumerate(fs[2:]):
        prompt, prefix = fewshot_prompt(backend, fact, fs[:2])
        sample = Request(prompt, samples=5, seed=100 + i, prefix=prefix)
        pairs.append((Request(prompt, prefix=prefix, followup=sample), sample))
    settings = dict(max_new_tokens=12, temperature=0.7, top_k=20)
    feed = _AfterGreedy(pairs)
    plans = [plan for plan, _ in backend.steps(feed, **settings)]
    prefilled = [row for plan in plans if isinstance(plan, AdmitPlan) for p in plan.prefills for row in p.sequences]
    retraced = {r.state.followup.seed for plan in plans if isinstance(plan, AdmitPlan) for r in plan.retraces}
    assert prefilled and not any(row.sampled for row in prefilled)  # every sample continued a greedy state
    assert retraced == {s.seed for _, s in pairs}
    fresh = get_backend("hf", lively, batch_size=2, engine_config=engine).sample(
        [s.prompt for _, s in pairs], 5, seeds=[s.seed for _, s in pairs], **settings)
    assert [feed.sampled[id(s)] for _, s in pairs] == fresh
    assert len({t for texts in fresh for t in texts}) > len(pairs)  # the samples do vary


class _Watching:
    """A streaming backend whose plans are recorded (through the public ``steps``)."""

    def __init__(self, inner):
        self.inner, self.plans = inner, []

    def render(self, messages):
        return self.inner.render(messages)

    def greedy(self, prompts, max_new_tokens):
        return self.inner.greedy(prompts, max_new_tokens)

    def sample(self, prompts, n, **kw):
        return self.inner.sample(prompts, n, **kw)

    def stream(self, feed, **settings):
        self.plans += [plan for plan, _ in self.inner.steps(feed, **settings)]


class _RoundsOnly(_Watching):
    """The same backend without ``stream``: the runner falls back to rounds, no speculation."""

    stream = None


@pytest.mark.parametrize("per_row_above", [8, 0], ids=["prefix-per-group", "prefix-per-row"])
def test_streaming_and_round_driven_probes_write_the_same_files(lively, tmp_path, per_row_above):
    fs = facts(20)
    cfg = ProbeConfig(prompts=3, shots=1, samples=3, batch_size=8, max_new_tokens=10)
    # tiny prompts: split them into length groups anyway
    engine = EngineConfig(max_rows=6, pass_overhead_tokens=1, per_row_above=per_row_above)
    streaming = _Watching(get_backend("hf", lively, batch_size=2, cache_prefixes=True, engine_config=engine))
    run_probe(cfg, fs, streaming, tmp_path / "stream", progress=False)
    layouts = [(p.prefix_groups, p.per_row) for p in streaming.plans if isinstance(p, StepPlan)]
    layouts += [(f.prefix_groups, f.per_row) for p in streaming.plans if isinstance(p, AdmitPlan) for f in p.prefills]
    # rows of several few-shot prefixes decoded together, attending to prefixes held once
    assert max(len(groups) for groups, _ in layouts) == cfg.prompts
    assert {per_row for groups, per_row in layouts if groups} == {per_row_above == 0}
    # rows sharing a prefix are kept neighbours, so every group is read as a view of the batch
    assert all(list(g.rows) == list(range(g.rows[0], g.rows[0] + len(g.rows))) for groups, _ in layouts for g in groups)
    # both ways of reusing a greedy answer were exercised: after it finished, and while it ran
    assert {r.state.finished for p in streaming.plans if isinstance(p, AdmitPlan) for r in p.retraces} == {True, False}
    rounds = _RoundsOnly(get_backend("hf", lively, batch_size=cfg.batch_size, cache_prefixes=True))
    run_probe(cfg, fs, rounds, tmp_path / "rounds", progress=False)
    for name in ("categories.jsonl", "generations.jsonl"):
        assert (tmp_path / "stream" / name).read_text() == (tmp_path / "rounds" / name).read_text()

