"""Run benchmarks through lm-evaluation-harness as a library, on an in-memory model, offline.

Task configs are written to a temporary folder as YAML (``dataset_path: json`` pointing at local
JSONL files) and loaded with a ``TaskManager`` that sees only that folder, so no task can reach
the hub. The model is wrapped in lm-eval's ``HFLM`` as is (a PEFT model included).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from knowpack.errors import KnowpackError
from knowpack.evaluate.benchmarks import mmlu, truthfulqa

_OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """Force the HF libraries offline while lm-eval runs (restoring the caller's environment)."""
    saved = {k: os.environ.get(k) for k in _OFFLINE}
    os.environ.update(_OFFLINE)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_task_yaml(config: dict[str, Any], folder: Path) -> Path:
    """Write one task config; values starting with "!function " become real YAML function tags."""
    plain = {k: v for k, v in config.items() if not (isinstance(v, str) and v.startswith("!function "))}
    tagged = [f"{k}: {v}" for k, v in config.items() if isinstance(v, str) and v.startswith("!function ")]
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True) + "".join(f"{line}\n" for line in tagged)
    path = folder / f"{config['task']}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _quiet(hflm: type) -> type:
    """``HFLM`` without its own tqdm bars, which would break the stage's rich output."""

    class QuietHFLM(hflm):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=True)

    return QuietHFLM


def run_tasks(model, tokenizer, configs: list[dict], *, work_dir: Path, batch_size: int = 8,
              helper_files: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on the given task configs; returns ``{task: {"acc": float, "n": int}}``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task_dir = work_dir / "tasks"
    task_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (helper_files or {}).items():
        (task_dir / name).write_text(text, encoding="utf-8")
    for config in configs:
        kwargs = dict(config.get("dataset_kwargs", {}))
        kwargs.setdefault("cache_dir", str(work_dir / "datasets-cache"))  # keep the HF cache clean
        write_task_yaml({**config, "dataset_kwargs": kwargs}, task_dir)
    with offline_env():
        manager = TaskManager(include_path=str(task_dir), include_defaults=False)
        lm = _quiet(HFLM)(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = lm_eval.simple_evaluate(model=lm, tasks=[c["task"] for c in configs], task_manager=manager,
                                      log_samples=False, bootstrap_iters=0, verbosity="ERROR")
    if out is None:
        raise KnowpackError("lm-evaluation-harness returned no results", hint="rerun with a single process")
    n_samples = out.get("n-samples", {})
    return {task: {"acc": float(res["acc,none"]),
                   "n": int(n_samples.get(task, {}).get("effective", 0))}
            for task, res in out["results"].items() if "acc,none" in res}


def run_benchmarks(model, tokenizer, config, *, mmlu_paths: tuple[Path | None, Path | None] = (None, None)) -> dict:
    """MMLU (k-shot) and TruthfulQA MC1/MC2 for one model, as configured in an EvalConfig.

    ``mmlu_paths`` = (test file, dev file) override the packaged data (tests use tiny files).
    A benchmark without data is reported as ``{"status": "not configured", "hint": ...}``.
    """
    results: dict[str, Any] = {}
    configs, helpers, selection = [], {}, None
    with tempfile.TemporaryDirectory(prefix="knowpack-lmeval-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        data_dir.mkdir()
        if "mmlu" in config.benchmarks:
            selection = mmlu.select(mmlu.load_test(mmlu_paths[0]), mmlu.load_dev(mmlu_paths[1]),
                                    limit=config.mmlu_limit, subjects=config.mmlu_subjects,
                                    shots=config.mmlu_shots, seed=config.seed)
            configs += mmlu.task_configs(selection, data_dir, shots=config.mmlu_shots)
        if "truthfulqa" in config.benchmarks:
            if config.truthfulqa_path is None:
                results["truthfulqa"] = {"status": "not configured", "hint": truthfulqa.HOW_TO_CONFIGURE}
            else:
                rows, layout = truthfulqa.load_truthfulqa(config.truthfulqa_path)
                tqa_configs, helpers = truthfulqa.task_configs(rows, data_dir, limit=config.truthfulqa_limit)
                configs += tqa_configs
                results["truthfulqa"] = {"layout": layout, "path": str(config.truthfulqa_path)}
        if not configs:
            return results
        scores = run_tasks(model, tokenizer, configs, work_dir=work, batch_size=config.benchmark_batch_size,
                           helper_files=helpers)
    if selection is not None:
        results["mmlu"] = {**mmlu.aggregate(scores, selection), "shots": config.mmlu_shots,
                           "limit_per_subject": config.mmlu_limit}
    if "knowpack_truthfulqa_mc1" in scores:
        results["truthfulqa"].update({"mc1": scores["knowpack_truthfulqa_mc1"]["acc"],
                                      "mc2": scores["knowpack_truthfulqa_mc2"]["acc"],
                                      "n_questions": scores["knowpack_truthfulqa_mc1"]["n"], "shots": 0})
    return results
