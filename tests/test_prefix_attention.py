"""Attention to prefixes held once per batch equals attention over each row's whole sequence."""

import copy

import pytest
import torch

from knowpack.probe.backends.kv import layer_tensors, new_cache
from knowpack.probe.backends.prefix_attention import PrefixGroup, PrefixLayout, attending, row_selector, works_with
from test_probe_hf import lively  # noqa: F401  (fixture)


def prefix_kv(model, ids):
    cache = new_cache(model, spare=8)
    with torch.inference_mode():
        model(input_ids=ids, cache=cache, use_cache=True)
    return [(keys[0].clone(), values[0].clone()) for keys, values in layer_tensors(cache)]


@pytest.mark.parametrize("per_row", [False, True], ids=["per-group", "per-row"])
def test_rows_attend_to_their_group_prefix_like_to_their_full_sequence(lively, per_row):
    model = lively.model.eval()
    gen = torch.Generator().manual_seed(3)

    def tokens(n):
        return torch.randint(3, 300, (1, n), generator=gen)

    prefix_a, prefix_b = tokens(10), tokens(14)
    # rows 0 and 2 share prefix a (not neighbours: a gathered index), row 1 has prefix b, row 3 none
    rows = [(prefix_a, tokens(5)), (prefix_b, tokens(7)), (prefix_a, tokens(6)), (None, tokens(4))]
    width = 7
    input_ids = torch.zeros((4, width), dtype=torch.long)
    mask = torch.zeros((4, width), dtype=torch.long)
    positions = torch.zeros((4, width), dtype=torch.long)
    for r, (prefix, own) in enumerate(rows):
        start = 0 if prefix is None else prefix.shape[1]
        input_ids[r, width - own.shape[1]:] = own[0]
        mask[r, width - own.shape[1]:] = 1
        positions[r, width - own.shape[1]:] = torch.arange(start, start + own.shape[1])
    assert row_selector([0, 2], "cpu").tolist() == [0, 2] and row_selector([1], "cpu") == slice(1, 2)
    layout = PrefixLayout([PrefixGroup(row_selector([0, 2], "cpu"), prefix_kv(model, prefix_a)),
                           PrefixGroup(row_selector([1], "cpu"), prefix_kv(model, prefix_b))],
                          batch_size=4, per_row=per_row)
    next_token = torch.tensor([[5], [6], [7], [8]])
    with torch.inference_mode():
        expected, expected_next = [], []
        for r, (prefix, own) in enumerate(rows):
            full = own if prefix is None else torch.cat([prefix, own], dim=1)
            expected.append(model(input_ids=full).logits[0, -1])
            expected_next.append(model(input_ids=torch.cat([full, next_token[r:r + 1]], dim=1)).logits[0, -1])
        cache = new_cache(model, spare=0)  # the decode step below reallocates: growing works either way
        with attending(model, layout):
            got = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                        use_cache=True).logits[:, -1]
            mask = torch.cat([mask, torch.ones((4, 1), dtype=torch.long)], dim=1)
            got_next = model(input_ids=next_token, attention_mask=mask, position_ids=positions[:, -1:] + 1,
                             cache=cache, use_cache=True).logits[:, -1]
        assert layout.calls == 2 * model.config.num_hidden_layers  # every layer, both passes
    assert model.config._attn_implementation == "sdpa"  # switched back after the call
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_next, torch.stack(expected_next), rtol=1e-4, atol=1e-4)


def test_works_with_checks_that_every_layer_uses_the_interface(lively):
    assert works_with(lively.model.eval(), lively.model.config.num_hidden_layers)
    half = copy.deepcopy(lively.model).to(torch.bfloat16).eval()  # scores in fp32, output in bf16
    assert works_with(half, half.config.num_hidden_layers)
    assert not works_with(lively.model, lively.model.config.num_hidden_layers + 1)

    class Bypassing(torch.nn.Module):
        """A model whose attention never goes through the transformers interface."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def forward(self, input_ids, **kwargs):
            return type("Out", (), {"logits": torch.zeros(1, input_ids.shape[1], 3)})()

    assert not works_with(Bypassing(), 2)
