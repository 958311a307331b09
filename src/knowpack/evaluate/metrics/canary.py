"""Adapter canary: prove the adapter changes the model on trained facts before reporting anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.evaluate.registry import MetricOutput, metric


def lora_b_all_zero(adapter_dir: Path) -> bool | None:
    """True when every ``lora_B`` tensor of the saved adapter is zero (a freshly initialised LoRA)."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        return None
    tensors = {k: v for k, v in load_file(str(path)).items() if "lora_B" in k}
    return bool(tensors) and all(int(t.count_nonzero()) == 0 for t in tensors.values())


def _answer_logprob(model, tokenizer, prompt: str, answer: str):
    """Logits of prompt+answer and the summed log-probability of the answer tokens."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([full_ids], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    targets = ids[0, 1:]
    start = max(len(prompt_ids) - 1, 0)
    picked = logprobs[torch.arange(len(targets)), targets][start:]
    return logits, float(picked.sum())


def _greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    import torch

    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def adapter_canary(peft_model, tokenizer, adapter_dir: Path, examples: list[dict], *,
                   tolerance: float, max_new_tokens: int = 16, base_model=None) -> dict[str, Any]:
    """Compare logits, answer log-probs and greedy answers with and without the adapter.

    ``examples`` are train.jsonl rows (question, answer). Raises KnowpackError when the adapter
    leaves every logit unchanged (within ``tolerance``): numbers from such a run would describe
    the base model, not the adapter. ``base_model``: the base beside a fully fine-tuned model
    (a PeftModel is compared with its own adapter disabled).
    """
    from knowpack.models.adapters import base_view
    from knowpack.models.loading import render_chat
    from knowpack.probe.prompts import zero_shot_messages

    if not examples:
        raise KnowpackError("the mixture has no training examples to check the adapter on",
                            hint="evaluate an adapter trained on this mix (train.jsonl must not be empty)")
    zero_b = lora_b_all_zero(adapter_dir)
    max_diff, rows = 0.0, []
    for ex in examples:
        prompt = render_chat(tokenizer, zero_shot_messages(ex["question"]), add_generation_prompt=True)
        answer = f"Answer: {ex['answer']}"
        logits_on, lp_on = _answer_logprob(peft_model, tokenizer, prompt, answer)
        gen_on = _greedy(peft_model, tokenizer, prompt, max_new_tokens)
        with base_view(peft_model, base_model) as base:
            logits_off, lp_off = _answer_logprob(base, tokenizer, prompt, answer)
            gen_off = _greedy(base, tokenizer, prompt, max_new_tokens)
        max_diff = max(max_diff, float((logits_on - logits_off).abs().max()))
        rows.append({"fact_id": ex.get("fact_id"), "logprob_base": lp_off, "logprob_adapted": lp_on,
                     "greedy_base": gen_off, "greedy_adapted": gen_on})
    result = {
        "n_examples": len(rows), "max_abs_logit_diff": max_diff, "tolerance": tolerance,
        "lora_b_all_zero": zero_b,
        "greedy_changed": sum(r["greedy_base"] != r["greedy_adapted"] for r in rows),
        "mean_answer_logprob_base": sum(r["logprob_base"] for r in rows) / len(rows),
        "mean_answer_logprob_adapted": sum(r["logprob_adapted"] for r in rows) / len(rows),
        "examples": rows,
    }
    if max_diff <= tolerance or zero_b:
        raise KnowpackError(
            f"the adapter in {adapter_dir} does not change the model: max |Δlogit| = {max_diff:.2e} "
            f"on {len(rows)} trained questions" + (" and every lora_B matrix is zero" if zero_b else ""),
            hint="this looks like an untrained (freshly initialised) adapter or an unchanged model copy; check "
                 "that training ran and saved its weights, then evaluate the trained checkpoint")
    return result


@metric("canary", needs=("canary",))
def canary(*, config, canary) -> MetricOutput:
    """The adapter-canary check that ran before everything else (logit and answer changes)."""
    return MetricOutput(summary=canary)
