"""`knowpack probe` end to end on the tiny model, and its one-line errors for bad input."""

import json
import sys

import pytest

from knowpack.facts.schema import Fact
from test_probe_fakes import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(monkeypatch, capsys, *args):
    from knowpack.cli.app import main

    monkeypatch.setattr(sys, "argv", ["knowpack", "probe", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return exc.value.code, " ".join((captured.out + captured.err).split())  # rich wraps long lines


@pytest.fixture
def facts_file(tmp_path):
    path = tmp_path / "facts.jsonl"
    facts = [Fact(id=f"c{i}", subject=f"Place {i}", relation=f"r{i % 2}",
                  question=f"What is the capital of place {i}?", answer=f"City{i}") for i in range(12)]
    path.write_text("".join(f.model_dump_json() + "\n" for f in facts))
    return path


SMALL = ["--prompts", 2, "--shots", 1, "--samples", 2, "--max-new-tokens", 6, "--batch-size", 4]


def test_cli_probe_writes_outputs(monkeypatch, capsys, tmp_path, tiny_model_dir, facts_file):
    from knowpack.cli.app import main

    out = tmp_path / "probe"
    monkeypatch.setattr(sys, "argv", ["knowpack", "probe", "--model", str(tiny_model_dir), "--facts",
                                      str(facts_file), "--out", str(out), "--limit", "5", *map(str, SMALL)])
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None)
    text = capsys.readouterr().out
    assert "probed 5 facts" in text
    rows = [json.loads(line) for line in (out / "categories.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(r["category"] == "Unknown" for r in rows)  # random weights know nothing
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "probe" and len(manifest["details"]["held_out_ids"]) == 2


@pytest.mark.parametrize("case, expect", [
    ("missing-facts", "fact file not found"),
    ("unknown-model", "unknown model"),
    ("pool-too-small", "packaged exemplar pool"),
    ("bad-option", "--shot-pool: Input should be"),
    ("missing-adapter", "adapter folder not found"),
])
def test_cli_bad_input_is_one_clear_error(monkeypatch, capsys, tmp_path, tiny_model_dir, facts_file, case, expect):
    out = tmp_path / "out"
    args = {"missing-facts": ["--model", tiny_model_dir, "--facts", tmp_path / "nope.jsonl"],
            "unknown-model": ["--model", tmp_path / "no-such-model", "--facts", facts_file],
            "pool-too-small": ["--model", tiny_model_dir, "--facts", facts_file, "--prompts", 10, "--shots", 10],
            "bad-option": ["--model", tiny_model_dir, "--facts", facts_file, "--shot-pool", "nearby"],
            "missing-adapter": ["--model", tiny_model_dir, "--facts", facts_file, "--adapter", tmp_path / "none"],
            }[case]
    code, text = run_cli(monkeypatch, capsys, *SMALL, *args, "--out", out)
    assert code == 2
    assert expect in text and "Traceback" not in text
    assert not out.exists()


def test_cli_adapter_for_another_model(monkeypatch, capsys, tmp_path, tiny_model_dir, facts_file):
    from peft import LoraConfig, get_peft_model

    from conftest import build_tiny_llama
    from knowpack.models import load_model

    other = load_model(str(build_tiny_llama(tmp_path / "other", hidden=32)))
    get_peft_model(other.model, LoraConfig(r=1, target_modules=["up_proj"], task_type="CAUSAL_LM")
                   ).save_pretrained(tmp_path / "adapter")
    out = tmp_path / "out"
    code, text = run_cli(monkeypatch, capsys, "--model", tiny_model_dir, "--facts", facts_file,
                         "--adapter", tmp_path / "adapter", "--out", out, *SMALL)
    assert code == 2 and "does not fit" in text
    assert not out.exists()


def test_cached_probe_runs_once_and_is_reused(tmp_path, tiny_model_dir, facts_file):
    from knowpack.paths import knowpack_home
    from knowpack.probe.cache import cached_probe
    from knowpack.probe.config import ProbeConfig

    cfg = ProbeConfig(prompts=2, shots=1, samples=0, max_new_tokens=4, batch_size=8)
    first = cached_probe(str(tiny_model_dir), str(facts_file), cfg)
    assert first.is_relative_to(knowpack_home() / "probes")
    stamp = (first / "categories.jsonl").stat().st_mtime_ns
    again = cached_probe(str(tiny_model_dir), str(facts_file), cfg.model_copy(update={"batch_size": 3}))
    assert again == first and (first / "categories.jsonl").stat().st_mtime_ns == stamp
    other = cached_probe(str(tiny_model_dir), str(facts_file), cfg.model_copy(update={"seed": 1}))
    assert other != first
