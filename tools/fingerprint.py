"""Content digests of one small pipeline run, to show that a refactoring changed no result.

Runs the installed CLI on the default model — a 56-fact sample (40 probed after the 4 × 4 fixed
shots are held out), a paraphrase mixture, a 2-epoch training and an evaluation with a tiny MMLU
slice — in ``WORKDIR/run`` and prints one ``sha256  path`` line per output file. Fields that
record wall time or the time of day (manifests, ``seconds`` columns) are dropped before hashing;
``format_version`` fields are dropped too, and training runs with ``--no-packing`` where that
option exists (packed batches match padded ones only up to float rounding); everything else must
match byte for byte between two commits (JSON objects compare key by key, so added fields show
as added lines):

    python tools/fingerprint.py /tmp/fp > before.txt   # on the old commit
    python tools/fingerprint.py /tmp/fp > after.txt    # on the new one
    diff before.txt after.txt

The run always happens in the same folder (outputs record absolute paths) with a fresh
``KNOWPACK_HOME`` that reuses the converted default model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Timing fields, and format_version (the artifact classes stamp it; results are unchanged).
TIMING_KEYS = {"seconds", "wall_seconds_this_call", "epoch_seconds_total", "created", "format_version"}
SKIPPED = {"manifest.json", "run.json"}  # provenance (times, versions, commands), not results


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digests(path: Path, name: str) -> list[tuple[str, str]]:
    """(sha256, label) pairs of a file's content with timing fields removed (none for provenance).

    A JSON object gets one line per top-level key (``file.json#key``), so a commit that adds a
    metric or a summary field shows as added lines while every value both commits have still
    compares byte for byte.
    """
    if path.name in SKIPPED or path.suffix == ".pt":
        return []
    data = path.read_bytes()
    if path.suffix == ".json":
        content = _strip(json.loads(data))
        if isinstance(content, dict):
            return [(_sha(json.dumps(v, sort_keys=True).encode()), f"{name}#{k}") for k, v in sorted(content.items())]
        data = json.dumps(content, sort_keys=True).encode()
    elif path.suffix == ".csv" and b"seconds" in data.splitlines()[0]:
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        data = json.dumps([_strip(r) for r in rows]).encode()
    return [(_sha(data), name)]


def _train_options(knowpack: str, env: dict) -> list[str]:
    """``--no-packing`` where the CLI has it: packed batches equal padded ones only up to float
    rounding, and the commits before packing trained padded."""
    text = subprocess.run([knowpack, "train", "--help"], env=env, capture_output=True, text=True).stdout
    return ["--no-packing"] if "--no-packing" in text else []


def run(workdir: Path) -> Path:
    """Run the pipeline in ``workdir/run`` (recreated) and return that folder."""
    root = workdir / "run"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    home = root / "home"
    cache = Path(os.environ.get("KNOWPACK_HOME", Path.home() / ".cache" / "knowpack")).expanduser()
    if (cache / "models").is_dir():
        home.mkdir()
        (home / "models").symlink_to(cache / "models")
    env = {**os.environ, "KNOWPACK_HOME": str(home)}
    knowpack = str(Path(sys.executable).with_name("knowpack"))
    steps = [
        ["facts", "build", "--sample", "56", "--seed", "3", "--out", "facts.jsonl"],
        ["probe", "--facts", "facts.jsonl", "--prompts", "4", "--shots", "4", "--samples", "2",
         "--out", "probe"],
        ["mix", "--probe", "probe", "--facts", "facts.jsonl", "--unknown", "6", "--extra", "1",
         "--kind", "paraphrase", "--heldout-per-category", "4", "--retention-sample", "2", "--out", "mix"],
        ["train", "--train", "mix/train.jsonl", "--preset", "smollm2", "--epochs", "2", "--out", "train",
         *_train_options(knowpack, env)],
        ["evaluate", "--adapter", "train/adapter", "--mix", "mix", "--out", "eval", "--benchmarks", "mmlu",
         "--mmlu-limit", "2", "--mmlu-subjects", "marketing,world_religions"],
    ]
    for step in steps:
        subprocess.run([knowpack, *step], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=sys.stderr)
    return root


def main() -> None:
    root = run(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/knowpack-fingerprint"))
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "home" not in p.relative_to(root).parts):
        for value, label in digests(path, str(path.relative_to(root))):
            print(f"{value}  {label}")


if __name__ == "__main__":
    main()
