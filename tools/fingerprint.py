"""Content digests of one small pipeline run, to show that a refactoring changed no result.

Runs the installed CLI on the default model — a 56-fact sample (40 probed after the 4 × 4 fixed
shots are held out), a paraphrase mixture, a 2-epoch training and an evaluation with a tiny MMLU
slice — in ``WORKDIR/run`` and prints one ``sha256  path`` line per output file. Fields that
record wall time or the time of day (manifests, ``seconds`` columns) are dropped before hashing;
everything else must match byte for byte between two commits:

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

TIMING_KEYS = {"seconds", "wall_seconds_this_call", "epoch_seconds_total", "created"}
SKIPPED = {"manifest.json", "run.json"}  # provenance (times, versions, commands), not results


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def digest(path: Path) -> str | None:
    """sha256 of a file's content with timing fields removed (None for provenance files)."""
    if path.name in SKIPPED or path.suffix == ".pt":
        return None
    data = path.read_bytes()
    if path.suffix == ".json":
        data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
    elif path.suffix == ".csv" and b"seconds" in data.splitlines()[0]:
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        data = json.dumps([_strip(r) for r in rows]).encode()
    return hashlib.sha256(data).hexdigest()


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
        ["train", "--train", "mix/train.jsonl", "--preset", "smollm2", "--epochs", "2", "--out", "train"],
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
        value = digest(path)
        if value is not None:
            print(f"{value}  {path.relative_to(root)}")


if __name__ == "__main__":
    main()
