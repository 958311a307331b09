"""Packed batches (shared prefix once, no padding, logits only at labelled positions) train exactly
like right-padded batches: same loss, same gradients, in both loss modes and attention kernels."""

from __future__ import annotations

import logging

import pytest
import torch

from knowpack.train.data import Collator, encode_example
from knowpack.train.packing import CausalLMLoss, PackingCollator, packing_supported, shared_prefix_length
from knowpack.train.trainer import _wrap_lora
from test_train import QUESTIONS, _config, tokenizer, train_file  # noqa: F401  (fixtures)


def test_shared_prefix_leaves_every_row_a_token_of_its_own():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows: the last token stays own
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[5]]) == 0


def _lora(tiny_model_dir, attention: str):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention)
    model = _wrap_lora(base, _config(rank=4, targets=["q_proj", "v_proj", "gate_proj", "down_proj"]))
    with torch.no_grad():  # non-zero B so the adapter changes every hidden state, prefix included
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    return model.eval()


def _loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = CausalLMLoss(model)(**batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("loss_mode", ["answer", "all"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_has_the_padded_batch_loss_and_gradients(tiny_model_dir, tokenizer, loss_mode, attention):
    model = _lora(tiny_model_dir, attention)
    # Mixed lengths, a duplicate (whole rows shared) and a short odd one out.
    questions = [*QUESTIONS[:4], QUESTIONS[1], ("Q?", "A")]
    encoded = [encode_example(tokenizer, q, a, loss=loss_mode, max_length=256) for q, a in questions]
    packed = PackingCollator()(encoded)
    padded = Collator(tokenizer.pad_token_id)(encoded)
    assert packed["input_ids"].shape[1] < padded["attention_mask"].sum()  # the prefix is held once
    assert len(packed["targets"]) == int((padded["labels"][:, 1:] != -100).sum())
    loss_packed, grads_packed = _loss_and_grads(model, packed)
    loss_padded, grads_padded = _loss_and_grads(model, padded)
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_examples_never_see_each_other(tiny_model_dir, tokenizer):
    model = _lora(tiny_model_dir, "sdpa")
    first = [encode_example(tokenizer, q, a, loss="answer", max_length=256) for q, a in QUESTIONS[:3]]
    other = [*first[:2], encode_example(tokenizer, "What is the capital of Oman?", "Muscat", loss="answer",
                                        max_length=256)]
    batches = [PackingCollator()(b) for b in (first, other)]
    prefix = shared_prefix_length([e["input_ids"] for e in first])
    assert prefix == shared_prefix_length([e["input_ids"] for e in other]) > 0
    with torch.no_grad():
        logits = [model(input_ids=b["input_ids"], position_ids=b["position_ids"], attention_mask=b["attention_mask"],
                        use_cache=False).logits[0] for b in batches]
    # The prefix and the first two examples come first in both rows; swapping the third example
    # must leave their logits as they were.
    kept = prefix + sum(len(e["input_ids"]) - prefix for e in first[:2])
    torch.testing.assert_close(logits[0][:kept], logits[1][:kept], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[0][kept:kept + 3], logits[1][kept:kept + 3])


def test_model_that_ignores_the_packed_mask_trains_padded(tiny_model_dir, tokenizer, train_file, tmp_path,
                                                          monkeypatch, caplog):
    from knowpack.train import train_adapter

    model = _lora(tiny_model_dir, "sdpa")
    encoded = [encode_example(tokenizer, q, a, loss="answer", max_length=256) for q, a in QUESTIONS[:4]]
    assert packing_supported(model, encoded, tokenizer.pad_token_id)
    real = PackingCollator.__call__

    def no_mask(self, batch):  # what an attention kernel that drops custom masks computes
        packed = real(self, batch)
        width = packed["input_ids"].shape[1]
        packed["attention_mask"] = torch.ones((width, width), dtype=torch.bool).tril()[None, None]
        return packed

    monkeypatch.setattr(PackingCollator, "__call__", no_mask)
    with caplog.at_level(logging.WARNING, logger="knowpack.train.packing"):
        assert not packing_supported(model, encoded, tokenizer.pad_token_id)
    assert "padded batches" in caplog.text
    summary = train_adapter(_config(epochs=1), str(tiny_model_dir), train_file, tmp_path / "out", progress=False)
    assert summary["epochs_run"] == 1 and summary["final"]["loss"] > 0
