"""The continuous-batching engine of the HF backend: same answers however the work is scheduled."""

import itertools

import pytest
import torch

from knowpack.probe.backends import get_backend
from knowpack.probe.backends.base import ListFeed, Request, run_feed
from knowpack.probe.backends.hf import length_groups
from knowpack.probe.backends.reference import naive_generate
from knowpack.probe.backends.kv import new_cache, rebuild_rows
from knowpack.probe.config import ProbeConfig
from knowpack.probe.matching import answer_span
from knowpack.probe.runner import fewshot_prompt, run_probe
from test_probe_fakes import one_thread  # noqa: F401  (fixture)
from test_probe_hf import facts, lively  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_rebuild_rows_keeps_selected_rows_aligned_right(lively):
    model = lively.model
    heads, dim = model.config.num_key_value_heads, model.config.hidden_size // model.config.num_attention_heads
    n_layers = model.config.num_hidden_layers

    def part(rows, width, used):
        layers = [(torch.randn(rows, heads, width, dim), torch.randn(rows, heads, width, dim)) for _ in range(n_layers)]
        mask = torch.zeros(rows, width, dtype=torch.long)
        for r, u in enumerate(used):
            mask[r, width - u:] = 1
        return new_cache(model, layers), mask, layers

    cache_a, mask_a, layers_a = part(4, 6, [2, 5, 3, 1])
    cache_b, mask_b, layers_b = part(2, 9, [9, 4])
    merged, mask = rebuild_rows([(cache_a, mask_a, [1, 2]), (cache_b, mask_b, [1, 0])])
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
                                     order=[(1, 0), (0, 0), (0, 1), (1, 1)])
    assert mixed_mask.tolist() == [mask[2].tolist(), mask[0].tolist(), mask[1].tolist(), mask[3].tolist()]
    assert torch.equal(mixed.layers[0].keys[0, :, 5:], layers_b[0][0][1, :, 5:])
    assert torch.equal(mixed.layers[0].keys[1, :, 4:], layers_a[0][0][1, :, 1:])
    assert torch.equal(mixed.layers[0].keys[2, :, 6:], layers_a[0][0][2, :, 3:])
    assert torch.equal(mixed.layers[0].keys[3], layers_b[0][0][0])
    # appending after a rebuild writes in place into the spare columns
    merged.layers[0].update(torch.ones(4, heads, 1, dim), torch.ones(4, heads, 1, dim))
    assert merged.layers[0].keys.shape[2] == 10 and torch.equal(merged.layers[0].keys[0, :, :9], keys[0])


def test_tiny_row_budget_gives_the_naive_answers(lively):
    """Rows join a running batch mid-decode (budget of 3 rows) with different few-shot prefixes."""
    fs = facts(12)
    backend = get_backend("hf", lively, batch_size=1, max_rows=3)
    requests = []
    for fact in fs[4:]:
        for j in (0, 2):
            prompt, prefix = fewshot_prompt(backend, fact, fs[j:j + 2])
            requests.append(Request(prompt, prefix=prefix))
    feed = ListFeed(requests)
    run_feed(backend, feed, max_new_tokens=20)
    naive = naive_generate(lively, [r.prompt for r in requests], max_new_tokens=20)
    fast = [texts[0] for texts in feed.answers()]
    assert [answer_span(t) for t in fast] == [answer_span(r["greedy"]) for r in naive]
    assert backend.forward_passes < sum(len(t) for t in fast)  # rows did share passes


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
    backend = get_backend("hf", lively, batch_size=2, max_rows=8)
    pairs = []
    for i, fact in enumerate(fs[2:]):
        prompt, prefix = fewshot_prompt(backend, fact, fs[:2])
        sample = Request(prompt, samples=5, seed=100 + i, prefix=prefix)
        pairs.append((Request(prompt, prefix=prefix, followup=sample), sample))
    settings = dict(max_new_tokens=12, temperature=0.7, top_k=20)
    feed = _AfterGreedy(pairs)
    prefilled = []
    original = backend._prefill
    backend._prefill = lambda requests, *rest, **kw: prefilled.extend(requests) or original(requests, *rest, **kw)
    run_feed(backend, feed, **settings)
    assert prefilled and not any(r.samples for r in prefilled)  # every sample continued a greedy state
    fresh = get_backend("hf", lively, batch_size=2, max_rows=8).sample(
        [s.prompt for _, s in pairs], 5, seeds=[s.seed for _, s in pairs], **settings)
    assert [feed.sampled[id(s)] for _, s in pairs] == fresh
    assert len({t for texts in fresh for t in texts}) > len(pairs)  # the samples do vary


@pytest.mark.parametrize("per_row_above", [8, 0], ids=["prefix-per-group", "prefix-per-row"])
def test_streaming_and_round_driven_probes_write_the_same_files(lively, tmp_path, per_row_above):
    class RoundsOnly:
        """The same backend without ``stream``: the runner falls back to rounds, no speculation."""

        def __init__(self, inner):
            self.inner = inner

        def render(self, messages):
            return self.inner.render(messages)

        def greedy(self, prompts, max_new_tokens):
            return self.inner.greedy(prompts, max_new_tokens)

        def sample(self, prompts, n, **kw):
            return self.inner.sample(prompts, n, **kw)

    fs = facts(20)
    cfg = ProbeConfig(prompts=3, shots=1, samples=3, batch_size=8, max_new_tokens=10)
    streaming = get_backend("hf", lively, batch_size=2, max_rows=6, cache_prefixes=True)
    snapshots, layouts = [], []
    original = streaming._snapshot
    streaming._snapshot = lambda part, k: snapshots.append(original(part, k)) or snapshots[-1]
    streaming._PASS_OVERHEAD_TOKENS = 1  # tiny prompts: split them into length groups anyway
    streaming._PER_ROW_ABOVE = per_row_above
    original_layout = streaming._layout
    streaming._layout = lambda part: layouts.append(original_layout(part)) or layouts[-1]
    run_probe(cfg, fs, streaming, tmp_path / "stream", progress=False)
    # rows of several few-shot prefixes decoded together, attending to prefixes held once
    assert max(len(layout.groups) for layout in layouts) == cfg.prompts
    # rows sharing a prefix are kept neighbours, so every group is read as a view of the batch
    assert all(isinstance(group.rows, slice) for layout in layouts for group in layout.groups)
    # both ways of reusing a greedy answer were exercised: after it finished, and while it ran
    assert {state.finished for state in snapshots} == {True, False}
    rounds = RoundsOnly(get_backend("hf", lively, batch_size=cfg.batch_size, cache_prefixes=True))
    run_probe(cfg, fs, rounds, tmp_path / "rounds", progress=False)
    for name in ("categories.jsonl", "generations.jsonl"):
        assert (tmp_path / "stream" / name).read_text() == (tmp_path / "rounds" / name).read_text()
