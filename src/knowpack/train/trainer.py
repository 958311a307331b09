"""LoRA (PEFT) and full fine-tuning with a plain Accelerator loop: per-epoch curves, checkpoints, resume, DDP.

The same code runs in one process and under ``accelerate launch`` (DDP): the batch is split over
processes, evaluation and file writing happen on the main process only, and the early-stop
decision is broadcast so every process leaves the loop at the same epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from knowpack.errors import KnowpackError
from knowpack.io import atomic_dir, sha256_file, stable_hash
from knowpack.manifest import stamp
from knowpack.models.adapters import detach_adapter, has_adapter_files
from knowpack.train.artifacts import RunIdentity, TrainSummary
from knowpack.train.config import TrainConfig
from knowpack.train.curves import StopRule, format_progress, greedy_accuracy, write_curve
from knowpack.train.data import Collator, encode_example, read_train_file
from knowpack.train.guards import DIVERGED_HINT, TrainingDiverged, adapter_is_finite, check_world_size, first_bad_step
from knowpack.train.packing import CausalLMLoss, PackingCollator, packing_supported
from knowpack.train.resume import (apply_checkpoint, check_run_identity, claim_run, drop_checkpoints,
                                   last_intact_checkpoint, save_checkpoint)

logger = logging.getLogger(__name__)

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


def peft_config(config: TrainConfig):
    """The PEFT config of ``config.method``.

    rslora scales the update by alpha/sqrt(r) so higher ranks learn at the same rate; dora adds a
    trained magnitude per output row; pissa starts A and B from the top singular vectors of the
    weight (the base weight keeps the residual); vera trains only two scaling vectors per layer
    on top of random projections shared by all layers (PEFT sizes them to the largest target shape
    and slices them for smaller layers, so targets of different shapes work).
    """
    from peft import LoraConfig, VeraConfig

    targets = list(config.targets)
    if config.method == "vera":
        return VeraConfig(r=config.rank, target_modules=targets, vera_dropout=config.dropout,
                          projection_prng_key=config.seed, save_projection=True, bias="none", task_type="CAUSAL_LM")
    extra = {"dora": {"use_dora": True}, "pissa": {"init_lora_weights": "pissa"}}.get(config.method, {})
    return LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
                      use_rslora=config.use_rslora or config.method == "rslora", bias="none", task_type="CAUSAL_LM",
                      **extra)


def _wrap_lora(base, config: TrainConfig):
    from accelerate.utils import set_seed
    from peft import get_peft_model

    check_targets(base, config.targets)
    set_seed(config.seed)  # the LoRA A matrices are drawn from the seeded RNG
    return get_peft_model(base, peft_config(config))


def _full_copy(base):
    """A trainable copy of the whole base model (method ``full``).

    The caller's model stays the base model: a study hands the same loaded model to every cell,
    and evaluation compares the fine-tuned copy with it.
    """
    import copy

    model = copy.deepcopy(base)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def _identity(config: TrainConfig, model_hash: str, train_path: Path, curve_facts, retention_facts,
              probe_config) -> RunIdentity:
    return RunIdentity(
        config=config.model_dump(mode="json"),
        model_hash=model_hash,
        train_sha256=sha256_file(train_path),
        curve_ids=sorted(f.id for f in curve_facts or []),
        retention_ids=sorted(f.id for f in retention_facts or []),
        # Speed-only probe settings (batch size) do not change the curve, so they stay out.
        probe_config=probe_config.result_key() if probe_config is not None else None,
    )


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


def _save_adapter(peft_model, out_dir: Path, provenance: dict, initial: Path | None = None,
                  tokenizer=None) -> Path:
    """Write ``adapter/`` whole, with a manifest naming the base model it was trained on.

    The manifest travels with the adapter (users copy ``adapter/`` alone), so the probe's guard
    against "same shapes, other model" works wherever the adapter goes. ``adapter/`` belongs to
    this run's claimed folder, so an earlier attempt's copy may be replaced. ``initial`` is a
    PiSSA adapter as initialised: PEFT then saves the trained one as a plain LoRA of rank 2r on
    the *original* base weights, so it loads onto the base model like any other adapter.
    ``tokenizer`` (full fine-tuning): saved beside the model, so the folder is a complete model
    that ``from_pretrained`` (or vLLM, as its own model) loads as it is.
    """
    target = out_dir / ADAPTER_DIR
    with atomic_dir(target, replace=True) as staging:
        if initial is None:
            peft_model.save_pretrained(staging)
        else:
            peft_model.save_pretrained(staging, path_initial_model_for_weight_conversion=str(initial))
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        stamp(staging, **provenance)
    return target


def _target_weights(model, targets: list[str]) -> dict[str, torch.Tensor]:
    """Copies of the weights of the target linear layers (PiSSA replaces them by a residual)."""
    return {name: module.weight.detach().clone() for name, module in model.named_modules()
            if name.rsplit(".", 1)[-1] in targets and isinstance(module, torch.nn.Linear)}


def _restore_weights(model, weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, weight in weights.items():
            model.get_submodule(name).weight.copy_(weight)


@dataclasses.dataclass
class _Request:
    """What the caller asked for, normalised (paths as Paths, a probe config when curves are on)."""

    config: TrainConfig
    model: object
    train_path: Path
    out_dir: Path
    curve_facts: list | None
    retention_facts: list | None
    probe_config: object
    shot_sets: object
    progress: bool
    on_epoch_end: Callable[[dict], None] | None
    expected_processes: int | None = None
    threads: int | None = None


class _Recipe:
    """One training call as named steps: setup → train (epoch, evaluate, checkpoint) → finish → cleanup.

    Each step reads and writes the state held here, so the order that decides every number
    (model load, LoRA init from the seeded RNG, optimizer, resume, then the epochs) is visible in
    :meth:`setup` and :meth:`train` instead of being buried in one long function.
    """

    def __init__(self, request: _Request):
        from accelerate import Accelerator

        from knowpack.runtime import configure_threads

        self.request, self.config = request, request.config
        self.out_dir = request.out_dir
        self.started = time.perf_counter()
        self.accelerator = Accelerator()
        check_world_size(self.accelerator.num_processes, request.expected_processes)
        # Every rank takes its share of the cores: DDP ranks with torch's default would each
        # use all cores and slow each other down.
        configure_threads(request.threads)
        self.loaded = None
        self.owned = False
        self.peft_model = None
        self.rows: list[dict] = []
        self.stop_reason: str | None = None
        self.start_epoch = 1
        self.checkpoint: Path | None = None
        self.original_weights: dict[str, torch.Tensor] | None = None
        self.initial_adapter = None  # PiSSA: the adapter as initialised, for saving it as a plain LoRA

    # -- setup ---------------------------------------------------------------------------------

    def claim(self) -> dict | None:
        """Load the model and claim the output folder; returns the saved summary of a finished run.

        The identity check comes before any training so a folder from another run is refused
        and a finished one is returned without redoing work.
        """
        req, accelerator = self.request, self.accelerator
        self.loaded, self.owned = _load(req.model, str(accelerator.device))
        self.identity = _identity(self.config, self.loaded.model_hash, req.train_path, req.curve_facts,
                                  req.retention_facts, req.probe_config)
        self.resuming = check_run_identity(self.out_dir, self.identity)
        if self.resuming and TrainSummary.exists(self.out_dir) and has_adapter_files(self.out_dir / ADAPTER_DIR):
            return TrainSummary.read(self.out_dir).model_dump(mode="json")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            claim_run(self.out_dir, self.identity)
        return None

    def setup_data(self) -> None:
        """Encode every training example up front: a bad example fails before any step is taken."""
        req = self.request
        examples = read_train_file(req.train_path)
        self.encoded = [encode_example(self.loaded.tokenizer, e.question, e.answer, loss=self.config.loss,
                                       max_length=self.config.max_length) for e in examples]
        self.shot_sets = _resolve_shot_sets(req.shot_sets, req.probe_config, req.curve_facts,
                                            req.retention_facts)

    def setup_model(self) -> None:
        """Wrap the base model with LoRA and build loader, optimizer and scheduler.

        ``config.batch_size`` is the global batch, split over the processes, so one and two
        processes take the same optimizer steps.
        """
        from transformers import get_scheduler

        config, accelerator = self.config, self.accelerator
        self.wrap()
        self.peft_model.train()
        self.world = accelerator.num_processes
        self.per_device = max(1, config.batch_size // self.world)
        self.sampler = EpochSampler(len(self.encoded), config.seed)
        pad_id = self.loaded.tokenizer.pad_token_id
        self.packed = config.packing and packing_supported(self.peft_model, self.encoded[:self.per_device], pad_id)
        loader = torch.utils.data.DataLoader(self.encoded, batch_size=self.per_device, sampler=self.sampler,
                                             collate_fn=PackingCollator() if self.packed else Collator(pad_id))
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.ddp_model, self.optimizer, self.loader = accelerator.prepare(CausalLMLoss(self.peft_model),
                                                                          optimizer, loader)
        self.batches = len(self.loader)
        self.steps_per_epoch = math.ceil(self.batches / config.grad_accum)
        total_steps = self.steps_per_epoch * config.epochs
        # Stepped by hand once per optimizer step on every process (not through accelerate, which
        # would step it once per process).
        self.scheduler = get_scheduler(config.scheduler, optimizer=self.optimizer,
                                       num_warmup_steps=round(config.warmup_ratio * total_steps),
                                       num_training_steps=total_steps)

    def wrap(self) -> None:
        """Wrap the base model with the method's adapter; count what PEFT trains.

        PiSSA rewrites the base weights it targets, so they are copied first (given back on
        cleanup) and the freshly initialised adapter is saved for the conversion at the end.
        Full fine-tuning trains a copy of the whole model (``peft_model`` is then that copy).
        """
        import tempfile

        config = self.config
        if config.method == "full":
            self.peft_model = _full_copy(self.loaded.model)
            # transformers' count: a tied input/output embedding is one tensor, counted once.
            self.trainable = self.peft_model.num_parameters(only_trainable=True)
            return
        if config.method == "pissa":
            self.original_weights = _target_weights(self.loaded.model, config.targets)
        self.peft_model = _wrap_lora(self.loaded.model, config)
        if config.method == "pissa":
            self.initial_adapter = tempfile.TemporaryDirectory(prefix="knowpack-pissa-init-")
            self.peft_model.save_pretrained(self.initial_adapter.name)
        # PEFT's own count: DoRA's magnitude vectors train, VeRA's shared projections do not.
        self.trainable = self.peft_model.get_nb_trainable_parameters()[0]

    def resume(self) -> None:
        """Continue after the last intact checkpoint: weights, optimizer, scheduler, RNG and curve."""
        found = last_intact_checkpoint(self.out_dir) if self.resuming else None
        if found is None:
            return
        state = apply_checkpoint(self.accelerator, self.peft_model, self.optimizer, self.scheduler, found)
        self.checkpoint = found.folder
        self.rows = [row.model_dump(mode="json") for row in state.curve]
        self.stop_reason = state.stop_reason
        self.start_epoch = state.epoch + 1
        if self.request.progress:
            self.accelerator.print(f"resuming from {self.checkpoint} (epoch {state.epoch} done)")

    def setup(self) -> dict | None:
        """All steps before the first epoch; returns the summary when the run had already finished."""
        finished = self.claim()
        if finished is not None:
            return finished
        self.setup_data()
        self.setup_model()
        self.resume()
        if self.request.progress:
            self.accelerator.print(
                f"training {len(self.encoded)} examples for {self.config.epochs} epochs "
                f"({self.steps_per_epoch} optimizer steps/epoch, {self.trainable:,} trainable parameters, "
                f"{self.world} process(es), {'packed' if self.packed else 'padded'} batches) → {self.out_dir}")
        return None

    # -- the loop ------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> float:
        """One pass over the data; returns the mean batch loss averaged over processes.

        Gradients are synchronised across processes only on the last batch of an accumulation
        group, and a short last group is scaled by its own size so every step averages its batches.
        """
        config, accelerator, model = self.config, self.accelerator, self.ddp_model
        self.sampler.use_epoch(epoch)
        model.train()
        losses: list[torch.Tensor] = []
        for index, batch in enumerate(self.loader):
            group_start = index - index % config.grad_accum
            group = min(config.grad_accum, self.batches - group_start)
            sync = index + 1 == group_start + group
            with (accelerator.no_sync(model) if not sync else contextlib.nullcontext()):
                loss = model(**batch)
                accelerator.backward(loss / group)
            if sync:
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
            losses.append(loss.detach().float())
        loss_sum = torch.zeros((), device=accelerator.device)
        for value in losses:  # in order, as a running sum: the curve's loss does not depend on batching
            loss_sum += value
        mean = accelerator.reduce(torch.tensor([loss_sum.item() / max(len(losses), 1)], device=accelerator.device),
                                  reduction="mean").item()
        self.check_finite(epoch, mean, losses)
        return mean

    def check_finite(self, epoch: int, mean_loss: float, losses: list[torch.Tensor]) -> None:
        """Stop with one clear error when training diverged, before the epoch is checkpointed.

        The decision uses the loss averaged over processes and the (synchronised) weights, so
        every process stops at the same epoch; the last good checkpoint stays the newest one.
        """
        if math.isfinite(mean_loss) and adapter_is_finite(self.peft_model):
            return
        step = first_bad_step(losses)
        where = (f"at batch {step} of {len(losses)}" if step is not None
                 else "in the weights (the last update overflowed)" if math.isfinite(mean_loss)
                 else "on another process")
        kept = f"the last good checkpoint is epoch {epoch - 1}" if epoch > 1 else "no epoch finished cleanly"
        raise TrainingDiverged(
            f"training diverged in epoch {epoch}: the loss became non-finite {where} (lr {self.config.lr:g}); "
            f"nothing of this epoch was saved and {kept}",
            hint=DIVERGED_HINT)

    def evaluate_epoch(self, epoch: int, mean_loss: float, epoch_start: float) -> dict:
        """Record the epoch's curve row and decide on early stopping (the same decision on every process).

        Evaluation and the curve file are the main process's job; the other processes only learn
        the stop decision through a broadcast, so all of them leave the loop at the same epoch.
        """
        from accelerate.utils import broadcast_object_list

        config, accelerator, req = self.config, self.accelerator, self.request
        row = {"epoch": epoch, "loss": mean_loss, "reliability": None, "retention": None}
        decision = [None]
        if accelerator.is_main_process:
            if config.eval_every_epoch or epoch == config.epochs:
                row.update(_evaluate(self.loaded, self.peft_model, req.curve_facts, req.retention_facts,
                                     req.probe_config, self.shot_sets))
            row["seconds"] = time.perf_counter() - epoch_start
            self.rows.append(row)
            write_curve(self.out_dir / CURVE_FILE, self.rows)
            if req.progress:
                print(format_progress(row, config.epochs), flush=True)
            if config.early_stop and epoch < config.epochs:
                decision = [StopRule(config.plateau_patience, config.retention_threshold).check(self.rows)]
        broadcast_object_list(decision)
        self.stop_reason = decision[0]
        if not accelerator.is_main_process:
            row["seconds"] = time.perf_counter() - epoch_start
            self.rows.append(row)
        return row

    def save_epoch(self, epoch: int) -> None:
        """Checkpoint the finished epoch, so a kill from here on resumes after it."""
        save_checkpoint(self.accelerator, self.peft_model, self.optimizer, self.scheduler, self.out_dir, epoch,
                        curve=self.rows, stop_reason=self.stop_reason)

    def train(self) -> None:
        """Run the remaining epochs: train, evaluate, checkpoint, then the caller's hook."""
        for epoch in range(self.start_epoch, self.config.epochs + 1):
            if self.stop_reason:
                break
            epoch_start = time.perf_counter()
            mean_loss = self.train_epoch(epoch)
            row = self.evaluate_epoch(epoch, mean_loss, epoch_start)
            self.save_epoch(epoch)
            if self.request.on_epoch_end is not None:
                self.request.on_epoch_end(row)

    # -- the end -------------------------------------------------------------------------------

    def summary(self) -> TrainSummary:
        """What ``train_summary.json`` records: how the run ended, its curve and its shape."""
        rows, config = self.rows, self.config
        return TrainSummary(
            epochs_planned=config.epochs,
            epochs_run=rows[-1]["epoch"] if rows else 0,
            stopped_early=bool(self.stop_reason),
            stop_reason=self.stop_reason or "completed all epochs",
            final=rows[-1] if rows else None,
            curve=rows,
            train_examples=len(self.encoded),
            trainable_parameters=self.trainable,
            processes=self.world,
            global_batch=self.per_device * self.world * config.grad_accum,
            optimizer_steps_per_epoch=self.steps_per_epoch,
            model_hash=self.loaded.model_hash,
            adapter=str(self.out_dir / ADAPTER_DIR),
            wall_seconds_this_call=round(time.perf_counter() - self.started, 2),
            epoch_seconds_total=round(sum(r.get("seconds") or 0.0 for r in rows), 2),
            resumed_from=str(self.checkpoint) if self.checkpoint else None,
        )

    def finish(self) -> dict:
        """Write the final adapter, the summary and the manifest (main process), in that order.

        The summary is the stage's completion marker, so it is written only after the adapter. A
        full fine-tuning run then drops its checkpoint (a whole model plus its AdamW state).
        """
        if not adapter_is_finite(self.peft_model):  # never reached after check_finite; kept as the last guard
            raise TrainingDiverged("the trained adapter has non-finite weights and was not saved", hint=DIVERGED_HINT)
        summary = self.summary()
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            provenance = {"stage": "train", "config": self.config, "seed": self.config.seed,
                          "key": stable_hash(self.identity.model_dump(mode="json"), length=16),
                          "inputs": {"train": self.identity.train_sha256, "model": self.loaded.model_hash},
                          "details": {"epochs_run": summary.epochs_run, "stop_reason": summary.stop_reason,
                                      "method": self.config.method, "trainable_parameters": self.trainable}}
            initial = Path(self.initial_adapter.name) if self.initial_adapter is not None else None
            tokenizer = self.loaded.tokenizer if self.config.method == "full" else None
            _save_adapter(self.peft_model, self.out_dir, provenance, initial=initial, tokenizer=tokenizer)
            summary.write(self.out_dir)
            stamp(self.out_dir, **provenance)
            if self.config.method == "full":
                drop_checkpoints(self.out_dir)  # the summary marks the run finished: nothing left to resume
        accelerator.wait_for_everyone()
        return summary.model_dump(mode="json")

    def cleanup(self) -> None:
        """Release accelerate's references and give a caller's model back without LoRA layers."""
        self.accelerator.free_memory()
        if self.peft_model is not None and not self.owned:
            self.loaded.model = detach_adapter(self.peft_model, self.loaded.model)
            self.peft_model = None  # a fully fine-tuned copy is dropped here
            if self.original_weights is not None:
                _restore_weights(self.loaded.model, self.original_weights)
        if self.initial_adapter is not None:
            self.initial_adapter.cleanup()


def train_adapter(config: TrainConfig, model, train_path: Path, out_dir: Path, *,
                  curve_facts: list | None = None, retention_facts: list | None = None,
                  probe_config=None, shot_sets=None, progress: bool = True,
                  on_epoch_end: Callable[[dict], None] | None = None, expected_processes: int | None = None,
                  threads: int | None = None) -> dict:
    """Train a PEFT adapter on ``train_path`` (train.jsonl) and write it to ``out_dir/adapter``.

    With ``config.method == "full"`` every weight trains and ``out_dir/adapter`` is a whole model
    folder (weights, config, tokenizer) instead of an adapter.

    ``model``: a model spec for ``load_model`` or a ``LoadedModel`` (its base weights are left
    unchanged afterwards). With ``curve_facts``/``retention_facts`` and a ``probe_config``,
    reliability/retention are measured after every epoch into ``curve.csv``. Every epoch is
    checkpointed under ``out_dir/checkpoints``; rerunning the same call resumes from the last
    one, a finished run is returned as is, and a folder from a different run is refused.
    ``on_epoch_end(row)`` runs after each epoch's checkpoint is written. ``expected_processes``:
    the number of processes the launch was meant to start (a different one is an error).
    ``threads``: torch intra-op threads per process (default: the usable cores divided by the
    local processes); neither changes the run's identity. A loss or adapter that becomes NaN/inf
    stops the run with :class:`TrainingDiverged` before anything of that epoch is saved.
    Returns the summary that is also written to ``train_summary.json``.
    """
    if (curve_facts or retention_facts) and probe_config is None:
        from knowpack.probe.config import ProbeConfig

        probe_config = ProbeConfig()
    recipe = _Recipe(_Request(config, model, Path(train_path), Path(out_dir), curve_facts, retention_facts,
                              probe_config, shot_sets, progress, on_epoch_end, expected_processes, threads))
    try:
        finished = recipe.setup()
        if finished is not None:
            return finished
        recipe.train()
        return recipe.finish()
    finally:
        recipe.cleanup()
