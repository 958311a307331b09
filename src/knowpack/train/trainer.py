"""LoRA training with a plain Accelerator loop: per-epoch curves, checkpoints, resume, DDP.

The same code runs in one process and under ``accelerate launch`` (DDP): the batch is split over
processes, evaluation and file writing happen on the main process only, and the early-stop
decision is broadcast so every process leaves the loop at the same epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from knowpack.errors import KnowpackError
from knowpack.io import atomic_dir, read_json, sha256_file, write_json, write_manifest
from knowpack.train.config import TrainConfig
from knowpack.train.curves import StopRule, format_progress, greedy_accuracy, write_curve
from knowpack.train.data import Collator, encode_example, read_train_file
from knowpack.train.resume import (check_run_identity, claim_run, last_checkpoint, load_checkpoint,
                                   save_checkpoint)

SUMMARY_FILE = "train_summary.json"
CURVE_FILE = "curve.csv"
ADAPTER_DIR = "adapter"


class EpochSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation derived from (seed, epoch) only.

    The order of epoch e therefore never depends on what ran before it, which is what lets a
    resumed run see exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    # Deliberately not called set_epoch: accelerate calls set_epoch with its own iteration
    # counter, which restarts at 0 in a resumed process.
    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def linear_module_names(model) -> list[str]:
    """Distinct leaf names of the linear layers LoRA can target (e.g. q_proj, gate_proj)."""
    from transformers.pytorch_utils import Conv1D

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, (torch.nn.Linear, Conv1D)) and name})


def check_targets(model, targets: list[str]) -> None:
    """Unknown target modules are a user error that lists what the architecture offers."""
    available = linear_module_names(model)
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise KnowpackError(f"target module(s) {', '.join(unknown)} not found in this model",
                            hint=f"available linear modules: {', '.join(available)}")


def _load(model, device: str):
    from knowpack.models import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model, False
    return load_model(model, device=device), True


def _wrap_lora(base, config: TrainConfig):
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model

    check_targets(base, config.targets)
    set_seed(config.seed)  # the LoRA A matrices are drawn from the seeded RNG
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.targets), use_rslora=config.use_rslora,
                      bias="none", task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


def _identity(config: TrainConfig, model_hash: str, train_path: Path, curve_facts, retention_facts,
              probe_config) -> dict:
    return {
        "config": config.model_dump(mode="json"),
        "model_hash": model_hash,
        "train_sha256": sha256_file(train_path),
        "curve_ids": sorted(f.id for f in curve_facts or []),
        "retention_ids": sorted(f.id for f in retention_facts or []),
        # Speed-only probe settings (batch size) do not change the curve, so they stay out.
        "probe_config": probe_config.result_key() if probe_config is not None else None,
    }


def _coerce_shot_sets(shot_sets) -> list | None:
    """Accept Fact lists or their JSON form (a probe's ``shots.json``, optionally wrapped in a dict)."""
    from knowpack.facts.schema import Fact

    if isinstance(shot_sets, dict):
        shot_sets = shot_sets.get("shot_sets", shot_sets.get("sets"))
    if shot_sets is None:
        return None
    try:
        return [[s if isinstance(s, Fact) else Fact(**s) for s in group] for group in shot_sets]
    except (TypeError, ValueError):
        raise KnowpackError("cannot read the probe's shot sets (expected lists of fact records)",
                            hint="re-run the probe, or train without curves") from None


def _resolve_shot_sets(shot_sets, probe_config, curve_facts, retention_facts):
    shot_sets = _coerce_shot_sets(shot_sets)
    if shot_sets is not None or not (curve_facts or retention_facts) or probe_config.shot_pool != "fixed":
        return shot_sets
    # No shot sets given: draw them from the evaluated facts. A fact can then be a shot in its own
    # prompt, which inflates the curve; callers with a probe folder pass its shots instead.
    from knowpack.probe.prompts import build_shot_sets

    return build_shot_sets(list(curve_facts or []) + list(retention_facts or []), probe_config)


def _evaluate(loaded, peft_model, curve_facts, retention_facts, probe_config, shot_sets) -> dict:
    was_training = peft_model.training
    peft_model.eval()
    view = dataclasses.replace(loaded, model=peft_model)
    try:
        with torch.no_grad():
            return {"reliability": greedy_accuracy(curve_facts or [], view, probe_config, shot_sets),
                    "retention": greedy_accuracy(retention_facts or [], view, probe_config, shot_sets)}
    finally:
        peft_model.train(was_training)


def _save_adapter(peft_model, out_dir: Path) -> Path:
    target = out_dir / ADAPTER_DIR
    with atomic_dir(target) as staging:
        peft_model.save_pretrained(staging)
    return target


def train_adapter(config: TrainConfig, model, train_path: Path, out_dir: Path, *,
                  curve_facts: list | None = None, retention_facts: list | None = None,
                  probe_config=None, shot_sets=None, progress: bool = True,
                  on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train a LoRA adapter on ``train_path`` (train.jsonl) and write it to ``out_dir/adapter``.

    ``model``: a model spec for ``load_model`` or a ``LoadedModel`` (its base weights are left
    unchanged afterwards). With ``curve_facts``/``retention_facts`` and a ``probe_config``,
    reliability/retention are measured after every epoch into ``curve.csv``. Every epoch is
    checkpointed under ``out_dir/checkpoints``; rerunning the same call resumes from the last
    one, a finished run is returned as is, and a folder from a different run is refused.
    ``on_epoch_end(row)`` runs after each epoch's checkpoint is written. Returns the summary
    that is also written to ``train_summary.json``.
    """
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list
    from transformers import get_scheduler

    started = time.perf_counter()
    out_dir, train_path = Path(out_dir), Path(train_path)
    if (curve_facts or retention_facts) and probe_config is None:
        from knowpack.probe.config import ProbeConfig

        probe_config = ProbeConfig()
    accelerator = Accelerator()
    loaded, owned = _load(model, str(accelerator.device))
    identity = _identity(config, loaded.model_hash, train_path, curve_facts, retention_facts, probe_config)
    resuming = check_run_identity(out_dir, identity)
    if resuming and (out_dir / SUMMARY_FILE).is_file() and (out_dir / ADAPTER_DIR / "adapter_config.json").is_file():
        return read_json(out_dir / SUMMARY_FILE)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        claim_run(out_dir, identity)

    tokenizer = loaded.tokenizer
    examples = read_train_file(train_path)
    encoded = [encode_example(tokenizer, e.question, e.answer, loss=config.loss, max_length=config.max_length)
               for e in examples]
    shot_sets = _resolve_shot_sets(shot_sets, probe_config, curve_facts, retention_facts)

    peft_model = _wrap_lora(loaded.model, config)
    peft_model.train()
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    world = accelerator.num_processes
    # config.batch_size is the global batch: split it over the processes.
    per_device = max(1, config.batch_size // world)
    sampler = EpochSampler(len(encoded), config.seed)
    loader = torch.utils.data.DataLoader(encoded, batch_size=per_device, sampler=sampler,
                                         collate_fn=Collator(tokenizer.pad_token_id))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ddp_model, optimizer, loader = accelerator.prepare(peft_model, optimizer, loader)
    batches = len(loader)
    steps_per_epoch = math.ceil(batches / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    # Stepped by hand once per optimizer step on every process (not through accelerate, which
    # would step it once per process).
    scheduler = get_scheduler(config.scheduler, optimizer=optimizer,
                              num_warmup_steps=round(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)

    rows: list[dict] = []
    stop_reason = None
    start_epoch = 1
    checkpoint = last_checkpoint(out_dir) if resuming else None
    if checkpoint is not None:
        state = load_checkpoint(accelerator, peft_model, optimizer, scheduler, checkpoint)
        rows, stop_reason = list(state["curve"]), state.get("stop_reason")
        start_epoch = state["epoch"] + 1
        if progress:
            accelerator.print(f"resuming from {checkpoint} (epoch {state['epoch']} done)")
    rule = StopRule(config.plateau_patience, config.retention_threshold)
    if progress:
        accelerator.print(f"training {len(encoded)} examples for {config.epochs} epochs "
                          f"({steps_per_epoch} optimizer steps/epoch, {trainable:,} trainable parameters, "
                          f"{world} process(es)) → {out_dir}")

    try:
        for epoch in range(start_epoch, config.epochs + 1):
            if stop_reason:
                break
            epoch_start = time.perf_counter()
            sampler.use_epoch(epoch)
            ddp_model.train()
            loss_sum, loss_count = torch.zeros(()), 0
            for index, batch in enumerate(loader):
                group_start = index - index % config.grad_accum
                group = min(config.grad_accum, batches - group_start)
                sync = index + 1 == group_start + group
                with (accelerator.no_sync(ddp_model) if not sync else contextlib.nullcontext()):
                    loss = ddp_model(**batch).loss
                    accelerator.backward(loss / group)
                if sync:
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                loss_sum += loss.detach().float().cpu()
                loss_count += 1
            mean_loss = accelerator.reduce(torch.tensor([loss_sum.item() / max(loss_count, 1)],
                                                        device=accelerator.device), reduction="mean").item()
            row = {"epoch": epoch, "loss": mean_loss, "reliability": None, "retention": None}
            decision = [None]
            if accelerator.is_main_process:
                if config.eval_every_epoch or epoch == config.epochs:
                    row.update(_evaluate(loaded, peft_model, curve_facts, retention_facts, probe_config, shot_sets))
                row["seconds"] = time.perf_counter() - epoch_start
                rows.append(row)
                write_curve(out_dir / CURVE_FILE, rows)
                if progress:
                    print(format_progress(row, config.epochs), flush=True)
                if config.early_stop and epoch < config.epochs:
                    decision = [rule.check(rows)]
            broadcast_object_list(decision)
            stop_reason = decision[0]
            if not accelerator.is_main_process:
                row["seconds"] = time.perf_counter() - epoch_start
                rows.append(row)
            save_checkpoint(accelerator, peft_model, optimizer, scheduler, out_dir, epoch,
                            {"curve": rows, "stop_reason": stop_reason})
            if on_epoch_end is not None:
                on_epoch_end(row)

        summary = {
            "epochs_planned": config.epochs,
            "epochs_run": rows[-1]["epoch"] if rows else 0,
            "stopped_early": bool(stop_reason),
            "stop_reason": stop_reason or "completed all epochs",
            "final": rows[-1] if rows else None,
            "curve": rows,
            "train_examples": len(encoded),
            "trainable_parameters": trainable,
            "processes": world,
            "global_batch": per_device * world * config.grad_accum,
            "optimizer_steps_per_epoch": steps_per_epoch,
            "model_hash": loaded.model_hash,
            "adapter": str(out_dir / ADAPTER_DIR),
            "wall_seconds_this_call": round(time.perf_counter() - started, 2),
            "epoch_seconds_total": round(sum(r.get("seconds") or 0.0 for r in rows), 2),
            "resumed_from": str(checkpoint) if checkpoint else None,
        }
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _save_adapter(peft_model, out_dir)
            write_json(out_dir / SUMMARY_FILE, summary)
            write_manifest(out_dir, stage="train", config=config, seed=config.seed,
                           inputs={"train": identity["train_sha256"], "model": loaded.model_hash},
                           extra={"summary": {k: summary[k] for k in ("epochs_run", "stop_reason")}})
        accelerator.wait_for_everyone()
        return summary
    finally:
        accelerator.free_memory()
        if not owned:
            # Give the caller its base model back without LoRA layers.
            loaded.model = peft_model.unload()

