"""Benchmark: knowpack's LoRA trainer against a plain Hugging Face ``Trainer`` + PEFT, same run.

Both sides train the same LoRA (a preset, ``smollm2`` by default: rank 16, alpha 32, MLP targets,
lr 2e-3, batch 8, linear schedule) with the same seed, for the same epochs, on the same examples:
the questions and answers of N default facts, encoded by knowpack's own ``encode_example`` (the
chat prompt, loss on the answer and its end-of-turn token).

(a) HF — ``transformers.Trainer`` with ``DataCollatorForSeq2Seq`` (right padding to the batch's
    longest example, labels padded with -100), random sampling (``train_sampling_strategy="random"``,
    this transformers' spelling of ``group_by_length=False``), no evaluation,
    ``save_strategy="no"``, ``report_to="none"``, HF's default optimizer (fused AdamW) and
    ``max_grad_norm=0`` because knowpack does not clip gradients (same optimisation on both sides).
(b) knowpack — ``train_adapter`` with per-epoch curves OFF (no curve facts), including what a real
    run does besides training: a checkpoint per epoch and the final adapter.

Each side runs in its own fresh process (so one side's warm-up, caches and peak memory never leak
into the other), alternating for --rounds rounds; the median of each side is reported. Timed: the
whole training call with the model already loaded (encoding, LoRA wrap, loop, saving). Tokens/s
counts real (non-pad) tokens: sum of example lengths x epochs, identical for both sides. Peak RSS
is the child process's ``ru_maxrss`` (model load included). The last line is the speedup.

    python bench/train.py [--n 200] [--epochs 2] [--preset smollm2] [--rounds 1] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _examples(n: int) -> list[dict]:
    from knowpack.facts.default_set import load_default_facts, sample_facts
    from knowpack.facts.io import read_facts

    facts = sample_facts(read_facts(load_default_facts()), n, seed=0)
    return [{"id": f.id, "fact_id": f.id, "question": f.question, "answer": f.answer, "role": "unknown"}
            for f in facts]


def _config(args):
    from knowpack.train import load_preset

    return load_preset(args.preset, epochs=args.epochs)


def _encoded(tokenizer, config, train_path: Path) -> list[dict]:
    from knowpack.train.data import encode_example, read_train_file

    return [encode_example(tokenizer, e.question, e.answer, loss=config.loss, max_length=config.max_length)
            for e in read_train_file(train_path)]


def run_hf(loaded, config, train_path: Path, work: Path) -> dict:
    """The plain Trainer baseline; returns its mean training loss."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from knowpack.train.trainer import _wrap_lora

    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"  # as knowpack's batches: positions start at 0 in every row
    rows = [{**e, "attention_mask": [1] * len(e["input_ids"])} for e in _encoded(tokenizer, config, train_path)]
    model = _wrap_lora(loaded.model, config)
    # knowpack's warm-up length: a share of all optimizer steps, rounded.
    steps = math.ceil(math.ceil(len(rows) / config.batch_size) / config.grad_accum) * config.epochs
    args = TrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs,
        learning_rate=config.lr, lr_scheduler_type=config.scheduler, warmup_steps=round(config.warmup_ratio * steps),
        weight_decay=config.weight_decay, max_grad_norm=0.0, seed=config.seed, train_sampling_strategy="random",
        eval_strategy="no", save_strategy="no", report_to="none", logging_strategy="no",
        disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100))
    result = trainer.train()
    return {"loss": result.training_loss}


def run_knowpack(loaded, config, train_path: Path, work: Path) -> dict:
    """knowpack's trainer, curves off; returns its mean loss over all epochs."""
    from knowpack.train import train_adapter

    summary = train_adapter(config, loaded, train_path, work / "knowpack", progress=False)
    return {"loss": statistics.fmean(row["loss"] for row in summary["curve"])}


def side(args) -> None:
    """One side in this process: load the model, time the training call, write a JSON report."""
    import torch

    from knowpack.models import load_model
    from knowpack.runtime import configure_threads

    threads = configure_threads(args.threads or None)
    loaded = load_model(args.model)
    config = _config(args)
    train_path = Path(args.train)
    tokens = sum(len(e["input_ids"]) for e in _encoded(loaded.tokenizer, config, train_path)) * config.epochs
    torch.manual_seed(config.seed)
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = (run_hf if args.side == "hf" else run_knowpack)(loaded, config, train_path, Path(work))
        seconds = time.perf_counter() - start
    result.update(seconds=seconds, tokens=tokens, tokens_per_s=tokens / seconds, threads=threads,
                  peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    Path(args.report).write_text(json.dumps(result))


def _run_side(name: str, args, train_path: Path, work: Path) -> dict:
    report = work / f"{name}.json"
    cmd = [sys.executable, __file__, "--side", name, "--train", str(train_path), "--report", str(report),
           "--preset", args.preset, "--epochs", str(args.epochs), "--model", args.model,
           "--threads", str(args.threads)]
    subprocess.run(cmd, check=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    return json.loads(report.read_text())


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="default facts used as training examples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--preset", default="smollm2")
    parser.add_argument("--model", default="default")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per side (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per side (0: knowpack's default)")
    parser.add_argument("--side", choices=["hf", "knowpack"], help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_path = work / "train.jsonl"
        train_path.write_text("".join(json.dumps(e) + "\n" for e in _examples(args.n)), encoding="utf-8")
        runs: dict[str, list[dict]] = {"hf": [], "knowpack": []}
        for round_ in range(args.rounds):
            for name in ("hf", "knowpack"):
                runs[name].append(_run_side(name, args, train_path, work))
                r = runs[name][-1]
                print(f"round {round_ + 1} {name:9s} {r['seconds']:7.1f} s  {r['tokens_per_s']:7.1f} tokens/s  "
                      f"peak RSS {r['peak_rss_mib']:6.0f} MiB  mean loss {r['loss']:.4f}", flush=True)
    hf, kp = _median(runs["hf"], "tokens_per_s"), _median(runs["knowpack"], "tokens_per_s")
    first = runs["hf"][0]
    print(f"{args.n} examples x {args.epochs} epochs = {first['tokens']} real tokens per run, "
          f"preset {args.preset}, {first['threads']} torch thread(s), knowpack curves off")
    for name, value in (("HF Trainer", hf), ("knowpack", kp)):
        print(f"{name:10s}: {value:7.1f} tokens/s (median of {args.rounds}), "
              f"peak RSS {max(r['peak_rss_mib'] for r in runs['hf' if name == 'HF Trainer' else 'knowpack']):.0f} MiB")
    print(f"train speedup vs HF Trainer: {kp / hf:.2f}x")


if __name__ == "__main__":
    main()
