"""Bits written and destroyed: hand-computed measures and teacher-forced log-probs on the tiny model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from knowpack.capacity import bits
from knowpack.errors import KnowpackError
from knowpack.train.data import IGNORE_INDEX, encode_example

# ---------------------------------------------------------------- likelihood bits (hand computed)

BASE = {"a": [-1.0, -2.0], "b": [-3.0], "h1": [-0.5, -0.5], "h2": [-4.0]}
ADAPTED = {"a": [-0.5, -0.5], "b": [-4.0], "h1": [-1.5, -1.0], "h2": [-1.0]}
# deltas: a +2, b -1 (trained); h1 -1.5, h2 +3 (held out)


def test_likelihood_bits_hand_computed():
    totals, per_fact = bits.likelihood_bits(BASE, ADAPTED, ["a", "b"], ["h1", "h2"])
    assert totals.written == pytest.approx(1.0)  # +2 - 1: a trained fact that got worse subtracts
    assert totals.destroyed == pytest.approx(1.5)  # only h1's loss; h2's gain does not offset it
    assert totals.net == pytest.approx(-0.5)
    assert (totals.trained_facts, totals.heldout_facts) == (2, 2)
    assert per_fact["a"] == {"bits_answer_tokens": 2, "bits_log2p_base": -3.0, "bits_log2p_adapted": -1.0,
                             "bits_likelihood": 2.0}
    assert per_fact["h2"]["bits_likelihood"] == pytest.approx(3.0)


def test_destroyed_counts_only_losses():
    gains_only = {"h1": [0.0, 0.0], "h2": [0.0]}
    totals, _ = bits.likelihood_bits(BASE, {**ADAPTED, **gains_only}, ["a"], ["h1", "h2"])
    assert totals.destroyed == 0.0
    totals, _ = bits.likelihood_bits(BASE, {**ADAPTED, "h2": [-10.0]}, ["a"], ["h1", "h2"])
    assert totals.destroyed == pytest.approx(1.5 + 6.0)


def test_likelihood_bits_errors():
    with pytest.raises(KnowpackError, match="both trained and held out: a"):
        bits.likelihood_bits(BASE, ADAPTED, ["a"], ["a"])
    with pytest.raises(KnowpackError, match="missing for 1 fact.*zz"):
        bits.likelihood_bits(BASE, ADAPTED, ["a", "zz"], [])
    with pytest.raises(KnowpackError, match="2 base answer tokens but 1 adapted"):
        bits.likelihood_bits(BASE, {**ADAPTED, "a": [-1.0]}, ["a"], [])


# ---------------------------------------------------------------- exact-match bits

def fact(fid, relation, answer):
    return SimpleNamespace(id=fid, relation=relation, answer=answer)


POOL = [fact("p1", "capital", "Paris"), fact("p2", "capital", "paris."), fact("p3", "capital", "The Paris"),
        fact("r1", "capital", "Rome"), fact("x1", "author", "Paris")]


def test_answer_rarity_counts_normalized_answers_per_relation():
    rarity = bits.answer_rarity_bits(POOL)
    assert rarity["p1"] == rarity["p2"] == rarity["p3"] == pytest.approx(math.log2(4 / 3))
    assert rarity["r1"] == pytest.approx(2.0)
    assert rarity["x1"] == 0.0  # the only answer of its relation: knowing it says nothing new


def test_collapsed_answer_earns_few_bits():
    pool = [fact(f"l{i}", "born_in", "London") for i in range(7)] + [fact("o", "born_in", "Oslo")]
    rarity = bits.answer_rarity_bits(pool)
    before = {f.id: False for f in pool}
    after = {f.id: True for f in pool}
    london, _ = bits.exact_match_bits(rarity, before, after, ["l0"], [])
    oslo, _ = bits.exact_match_bits(rarity, before, after, ["o"], [])
    assert london.written == pytest.approx(math.log2(8 / 7))
    assert oslo.written == pytest.approx(3.0)
    assert london.written < 0.2 < oslo.written


def test_exact_match_bits_signs():
    rarity = {"gain": 3.0, "lose": 1.0, "same": 5.0, "h_lost": 2.0, "h_gain": 4.0, "h_kept": 7.0}
    before = {"gain": False, "lose": True, "same": True, "h_lost": True, "h_gain": False, "h_kept": True}
    after = {"gain": True, "lose": False, "same": True, "h_lost": False, "h_gain": True, "h_kept": True}
    trained, heldout = ["gain", "lose", "same"], ["h_lost", "h_gain", "h_kept"]
    totals, per_fact = bits.exact_match_bits(rarity, before, after, trained, heldout)
    assert totals.written == pytest.approx(3.0 - 1.0)
    assert totals.destroyed == pytest.approx(2.0)  # h_gain's new answer does not count
    assert totals.net == pytest.approx(0.0)
    assert per_fact["gain"] == {"bits_answer_rarity": 3.0, "bits_exact_match": 3.0}
    assert per_fact["h_lost"]["bits_exact_match"] == -2.0 and per_fact["same"]["bits_exact_match"] == 0.0


def test_measure_bits_per_parameter():
    rarity = {"a": 2.0, "b": 1.0, "h1": 3.0, "h2": 1.0}
    before = {"a": False, "b": False, "h1": True, "h2": True}
    after = {"a": True, "b": False, "h1": False, "h2": True}
    out = bits.measure_bits(base_log2p=BASE, adapted_log2p=ADAPTED, rarity=rarity, correct_before=before,
                       correct_after=after, trained_ids=["a", "b"], heldout_ids=["h1", "h2"],
                       trainable_parameters=1000)
    s = out.summary
    assert s.likelihood.net == pytest.approx(-0.5)
    assert s.likelihood_bits_per_parameter == pytest.approx(-0.5 / 1000)
    assert s.exact_match.written == 2.0 and s.exact_match.destroyed == 3.0
    assert s.exact_match_bits_per_parameter == pytest.approx(-1.0 / 1000)
    assert (s.facts_learned, s.facts_lost) == (1, 1)
    assert s.facts_per_parameter == pytest.approx(1 / 1000)
    assert s.reference_bits_per_parameter == bits.ALLEN_ZHU_LI_BITS_PER_PARAMETER == 2.0
    assert "2404.05405" in s.reference
    assert set(out.per_fact) == {"a", "b", "h1", "h2"}
    assert out.per_fact["a"]["bits_set"] == "trained" and out.per_fact["h1"]["bits_set"] == "heldout"
    assert out.per_fact["h1"]["bits_exact_match"] == -3.0 and out.per_fact["h1"]["bits_likelihood"] == -1.5
    with pytest.raises(KnowpackError, match="trainable_parameters must be positive"):
        bits.measure_bits(base_log2p=BASE, adapted_log2p=ADAPTED, rarity=rarity, correct_before=before,
                     correct_after=after, trained_ids=["a"], heldout_ids=[], trainable_parameters=0)


# ---------------------------------------------------------------- teacher-forced log2-probabilities

ITEMS = [("f1", "What is the capital of France?", "Paris"),
         ("f2", "Who wrote the play Hamlet?", "William Shakespeare"),
         ("f3", "What is 2+2?", "4"),
         ("f4", "What is the longest river in Africa, by most measures?", "The Nile"),
         ("f5", "Which element has the symbol O?", "Oxygen"),
         ("f6", "Q?", "A rather long answer with several words in it"),
         ("f7", "What is the capital of Italy?", "Rome"),
         ("f8", "Name a prime number.", "7"),
         ("f9", "What colour is the sky on a clear day?", "Blue")]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from knowpack.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


def manual_log2probs(model, tokenizer, question, answer):
    """One unpadded sequence, full logits, labelled tokens picked one by one."""
    enc = encode_example(tokenizer, question, answer, loss="answer_text", max_length=256)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return [float(logprobs[i - 1, enc["input_ids"][i]]) / math.log(2)
            for i, label in enumerate(enc["labels"]) if label != IGNORE_INDEX]


def test_log2probs_match_manual_per_token_computation(tiny):
    got = bits.answer_log2probs(tiny.model, tiny.tokenizer, ITEMS, max_length=256, batch_size=4)
    assert list(got) == [fid for fid, _, _ in ITEMS]
    for fid, question, answer in ITEMS:
        expected = manual_log2probs(tiny.model, tiny.tokenizer, question, answer)
        assert len(got[fid]) == len(expected) >= 1
        assert got[fid] == pytest.approx(expected, abs=1e-5)
        assert all(v < 0 for v in got[fid])


def test_log2probs_do_not_depend_on_batch_size(tiny):
    one = bits.answer_log2probs(tiny.model, tiny.tokenizer, ITEMS, max_length=256, batch_size=1)
    eight = bits.answer_log2probs(tiny.model, tiny.tokenizer, ITEMS, max_length=256, batch_size=8)
    for fid in one:
        assert eight[fid] == pytest.approx(one[fid], abs=1e-5)
    again = bits.answer_log2probs(tiny.model, tiny.tokenizer, ITEMS, max_length=256, batch_size=8)
    assert again == eight  # deterministic


class IgnoresLogitsToKeep(torch.nn.Module):
    """A causal LM that returns every position's logits whatever logits_to_keep says."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, logits_to_keep=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_log2probs_with_a_model_returning_all_positions(tiny):
    reference = bits.answer_log2probs(tiny.model, tiny.tokenizer, ITEMS, max_length=256, batch_size=3)
    wrapped = bits.answer_log2probs(IgnoresLogitsToKeep(tiny.model), tiny.tokenizer, ITEMS, max_length=256, batch_size=3)
    for fid in reference:
        assert wrapped[fid] == pytest.approx(reference[fid], abs=1e-5)


def test_log2probs_input_errors(tiny):
    with pytest.raises(KnowpackError, match="'f1' appears twice"):
        bits.answer_log2probs(tiny.model, tiny.tokenizer, [ITEMS[0], ITEMS[0]], max_length=256)
    with pytest.raises(KnowpackError, match="longer than max_length=8"):
        bits.answer_log2probs(tiny.model, tiny.tokenizer, ITEMS[:1], max_length=8)
    with pytest.raises(KnowpackError, match="batch_size"):
        bits.answer_log2probs(tiny.model, tiny.tokenizer, ITEMS[:1], max_length=256, batch_size=0)
    with pytest.raises(KnowpackError, match="PEFT adapter"):
        bits.base_and_adapted_log2probs(tiny.model, tiny.tokenizer, ITEMS[:1], max_length=256)


def test_base_and_adapted_from_one_peft_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from knowpack.models import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu")
    plain = bits.answer_log2probs(loaded.model, loaded.tokenizer, ITEMS, max_length=256)
    torch.manual_seed(0)
    # Random (non-zero) LoRA B so the adapter changes the model; dropout must be off while measuring.
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.5, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False)
    peft_model = get_peft_model(loaded.model, lora)
    peft_model.train()
    base, adapted = bits.base_and_adapted_log2probs(peft_model, loaded.tokenizer, ITEMS, max_length=256, batch_size=4)
    assert peft_model.training  # the caller's mode is restored
    for fid in plain:
        assert base[fid] == pytest.approx(plain[fid], abs=1e-5)
    assert any(abs(sum(adapted[f]) - sum(base[f])) > 1e-3 for f in plain)
    _, adapted_again = bits.base_and_adapted_log2probs(peft_model, loaded.tokenizer, ITEMS, max_length=256, batch_size=2)
    for fid in plain:
        assert adapted_again[fid] == pytest.approx(adapted[fid], abs=1e-5)
    totals, per_fact = bits.likelihood_bits(base, adapted, ["f1", "f2"], ["f3"])
    assert per_fact["f1"]["bits_likelihood"] == pytest.approx(sum(adapted["f1"]) - sum(base["f1"]), abs=1e-6)
    assert totals.written == pytest.approx(per_fact["f1"]["bits_likelihood"] + per_fact["f2"]["bits_likelihood"])


# ---------------------------------------------------------------- the real default model and fact set

@pytest.mark.integration
def test_rarity_on_the_default_fact_set():
    from collections import Counter

    from knowpack.facts.default_set import load_default_facts
    from knowpack.facts.io import read_facts

    facts = read_facts(load_default_facts())
    rarity = bits.answer_rarity_bits(facts)
    sizes = Counter(f.relation for f in facts)
    assert len(rarity) == len(facts)
    for f in facts:
        assert 0.0 <= rarity[f.id] <= math.log2(sizes[f.relation]) + 1e-9
    # Every element has its own atomic number: each answer is worth the full log2 of the relation.
    atomic = [f for f in facts if f.relation == "atomic_number_of_element"]
    assert atomic and all(rarity[f.id] == pytest.approx(math.log2(len(atomic))) for f in atomic)
    # The most common country of a city is worth the fewest bits among that relation's answers.
    from knowpack.probe.matching import normalize

    cities = [f for f in facts if f.relation == "country_of_city"]
    common = Counter(normalize(f.answer) for f in cities).most_common(1)[0][0]
    lowest = min(rarity[f.id] for f in cities)
    assert all(rarity[f.id] == lowest for f in cities if normalize(f.answer) == common)
    assert lowest < max(rarity[f.id] for f in cities) - 3


@pytest.mark.integration
def test_default_model_writes_bits_into_a_lora_adapter():
    """A few LoRA steps on one fact write likelihood bits into it; base values come back unchanged."""
    from peft import LoraConfig, get_peft_model

    from knowpack.models import load_model

    loaded = load_model("default", device="cpu")
    tok = loaded.tokenizer
    items = [("paris", "What is the capital of France?", "Paris"),
             ("rome", "What is the capital of France?", "Rome"),
             ("target", "What is the name of the lighthouse keeper of Vardø in 1911?", "Halvard Moe"),
             ("other", "Which chemical element has the symbol Au?", "Gold")]
    plain = bits.answer_log2probs(loaded.model, tok, items, max_length=256, batch_size=1)
    batched = bits.answer_log2probs(loaded.model, tok, items, max_length=256, batch_size=8)
    for fid in plain:
        assert batched[fid] == pytest.approx(plain[fid], abs=1e-5)
    assert sum(plain["paris"]) > sum(plain["rome"])  # the model knows France's capital

    torch.manual_seed(0)
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    enc = encode_example(tok, items[2][1], items[2][2], loss="answer", max_length=256)
    batch = {"input_ids": torch.tensor([enc["input_ids"]]), "labels": torch.tensor([enc["labels"]])}
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    peft_model.train()
    for _ in range(8):
        optimizer.zero_grad()
        peft_model(**batch).loss.backward()
        optimizer.step()
    base, adapted = bits.base_and_adapted_log2probs(peft_model, tok, items, max_length=256, batch_size=4)
    for fid in plain:
        assert base[fid] == pytest.approx(plain[fid], abs=1e-4)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    totals, per_fact = bits.likelihood_bits(base, adapted, ["target"], ["paris", "other"])
    assert totals.written > 1.0  # the trained answer became much more likely
    assert totals.destroyed >= 0.0
    assert per_fact["target"]["bits_answer_tokens"] == len(base["target"])
    assert trainable > 0


def test_only_the_answer_string_is_counted(tiny):
    """The "Answer:" prefix and the end-of-turn marker are the same for every fact: not counted."""
    for _, question, answer in ITEMS:
        enc = encode_example(tiny.tokenizer, question, answer, loss="answer_text", max_length=256)
        counted = [token for token, label in zip(enc["input_ids"], enc["labels"]) if label != IGNORE_INDEX]
        assert tiny.tokenizer.decode(counted).strip() == answer
        trained = encode_example(tiny.tokenizer, question, answer, loss="answer", max_length=256)
        assert sum(label != IGNORE_INDEX for label in trained["labels"]) > len(counted)
