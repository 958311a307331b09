"""Reading, validating and writing fact files, and the `facts validate/stats` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knowpack.cli.app import app
from knowpack.errors import KnowpackError, ValidationFailed
from knowpack.facts import Fact, compute_stats, facts_hash, read_facts, write_facts

DATA = Path(__file__).parent / "data" / "facts"
GOOD = {"id": "a/1", "subject": "France", "relation": "capital_of_country",
        "question": "What is the capital of France?", "answer": "Paris"}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        read_facts(path)
    return info.value.problems


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def test_reads_jsonl_and_csv_fixtures_alike():
    from_jsonl = read_facts(DATA / "valid.jsonl")
    from_csv = read_facts(DATA / "valid.csv")
    assert [f.id for f in from_jsonl] == ["capital_of_country/FR", "capital_of_country/IS",
                                          "element_of_symbol/Fe"]
    by_id = {f.id: f for f in from_csv}
    # CSV list cells: `|`-separated and JSON arrays both work; empty cells mean "not given".
    assert by_id["capital_of_country/FR"].aliases == ["Paris", "Lutetia"]
    assert by_id["capital_of_country/FR"].paraphrases[1] == "Name the capital of France."
    assert by_id["capital_of_country/IS"].aliases == ["Reykjavík", "Reykjavik"]
    assert by_id["element_of_symbol/Fe"].aliases == ["Iron"] and by_id["element_of_symbol/Fe"].tier is None
    assert by_id["capital_of_country/FR"].popularity == 66987244
    assert from_csv[1] == from_jsonl[1]


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv", "out.parquet", "hf_folder"])
def test_write_read_round_trip(tmp_path, name):
    facts = read_facts(DATA / "valid.jsonl")
    target = write_facts(tmp_path / name, facts)
    assert read_facts(target) == facts
    assert len(facts_hash(target)) == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_hash_changes_with_content(tmp_path):
    facts = read_facts(DATA / "valid.jsonl")
    first = facts_hash(write_facts(tmp_path / "a.jsonl", facts))
    assert facts_hash(write_facts(tmp_path / "b.jsonl", facts)) == first
    assert facts_hash(write_facts(tmp_path / "c.jsonl", facts[:2])) != first


def test_bad_json_line_is_reported_with_line_number(tmp_path):
    path = _jsonl(tmp_path / "f.jsonl", [GOOD, '{"id": "a/2", "subject": ', {**GOOD, "id": "a/3"}])
    problems = _problems(path)
    assert len(problems) == 1
    assert f"{path}:2: bad JSON" in problems[0]


def test_non_utf8_bytes_report_line_and_offset(tmp_path):
    path = tmp_path / "f.jsonl"
    good = (json.dumps(GOOD) + "\n").encode()
    data = good + b'{"id": "a/2", "subject": "Caf\xe9"}\n'
    path.write_bytes(data)
    problems = _problems(path)
    assert len(problems) == 1
    assert f"{path}:2: not valid UTF-8" in problems[0]
    offset = data.index(b"\xe9")
    assert f"byte offset {offset} in the file" in problems[0]


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "f.csv"
    data = b"id,subject,relation,question,answer\na/1,Caf\xe9,r,q?,x\n"
    path.write_bytes(data)
    problems = _problems(path)
    offset = data.index(b"\xe9")
    assert problems == [f"{path}:2: not valid UTF-8 (byte offset {offset} in the file) — save the file as UTF-8"]


def test_every_record_problem_is_listed(tmp_path):
    rows = [
        GOOD,
        {**GOOD, "id": "a/2", "answer": "  "},                      # empty answer
        {**GOOD, "id": "a/3", "aliases": ["Paris", ""]},            # empty alias
        {**GOOD, "id": "a/4", "paraphrases": ["ok?", " "]},         # empty paraphrase
        {**GOOD, "id": "a/1"},                                      # duplicate id
        {**GOOD, "id": "a/6", "tier": "middle"},                    # unknown tier
        {**GOOD, "id": "a/7", "colour": "blue"},                    # unknown field
        {**GOOD, "id": "a/8", "popularity": "high", "answer": 42},  # wrong types
        {k: v for k, v in GOOD.items() if k != "question"} | {"id": "a/9"},  # missing field
    ]
    problems = _problems(_jsonl(tmp_path / "f.jsonl", rows))
    text = "\n".join(problems)
    assert "f.jsonl:2: field 'answer': empty answer" in text
    assert "f.jsonl:3: field 'aliases[1]': empty string" in text
    assert "f.jsonl:4: field 'paraphrases[1]': empty string" in text
    assert f"f.jsonl:5: duplicate id 'a/1' (first at {tmp_path / 'f.jsonl'}:1)" in text
    assert "f.jsonl:6: field 'tier': unknown tier 'middle'" in text
    assert "f.jsonl:7: unknown field 'colour'" in text
    assert "f.jsonl:8: field 'popularity': expected a number, got a string" in text
    assert "f.jsonl:8: field 'answer': expected a string, got a number" in text
    assert "f.jsonl:9: missing required field 'question'" in text
    assert len(problems) == 9


def test_csv_missing_column_reported_once(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("id,subject,relation,question\na/1,France,r,q?\na/2,Spain,r,q?\n", encoding="utf-8")
    assert _problems(path) == [f"{path}: missing required column 'answer'"]


def test_csv_wrong_type_and_empty_alias(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("id,subject,relation,question,answer,aliases,popularity\n"
                    "a/1,France,r,q?,Paris,Paris||Lutece,many\n", encoding="utf-8")
    problems = _problems(path)
    # CSV problems name the line the record starts on (the header is line 1), like JSONL ones.
    assert f"{path}:2: field 'aliases[1]': empty string" in problems
    assert f"{path}:2: field 'popularity': expected a number, got a string" in problems


def test_parquet_and_hf_folder_validation(tmp_path):
    import datasets
    import pandas as pd

    frame = pd.DataFrame([{**GOOD, "aliases": ["Paris", ""]}, {**GOOD, "id": "a/2"}])
    frame.to_parquet(tmp_path / "f.parquet")
    assert "row 1: field 'aliases[1]': empty string" in _problems(tmp_path / "f.parquet")[0]
    datasets.Dataset.from_pandas(frame.drop(columns=["answer"])).save_to_disk(str(tmp_path / "ds"))
    # The missing column is reported once, the row's own problem still is, per row.
    assert _problems(tmp_path / "ds") == [f"{tmp_path / 'ds'}: missing required column 'answer'",
                                          f"{tmp_path / 'ds'}: row 1: field 'aliases[1]': empty string"]


def test_missing_file_is_a_knowpack_error_with_hint(tmp_path):
    with pytest.raises(KnowpackError) as info:
        read_facts(tmp_path / "nope.jsonl")
    assert "not found" in str(info.value) and info.value.hint


def test_stats_counts_and_coverage():
    stats = compute_stats(read_facts(DATA / "valid.jsonl"))
    assert stats.n_facts == 3 and stats.n_relations == 2
    assert stats.by_relation == {"capital_of_country": 2, "element_of_symbol": 1}
    assert stats.by_tier == {"head": 1, "torso": 0, "tail": 1, "none": 1}
    assert stats.by_relation_tier["capital_of_country"] == {"head": 1, "torso": 0, "tail": 1, "none": 0}
    assert stats.alias_coverage == pytest.approx(2 / 3)
    assert stats.paraphrase_coverage == pytest.approx(1 / 3)
    assert stats.top_answer["capital_of_country"].share == 0.5


runner = CliRunner()


def test_cli_validate_ok_and_writes_nothing(tmp_path):
    path = write_facts(tmp_path / "f.jsonl", read_facts(DATA / "valid.jsonl"))
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["facts", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK: 3 facts, 2 relations" in result.output
    assert _snapshot(tmp_path) == before


def test_cli_validate_broken_file_exits_nonzero_without_traceback(tmp_path):
    path = _jsonl(tmp_path / "f.jsonl", [GOOD, "{oops", {**GOOD, "aliases": [""]}])
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["facts", "validate", str(path)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "f.jsonl:2: bad JSON" in result.output
    assert "f.jsonl:3: field 'aliases[0]': empty string" in result.output
    assert "duplicate id 'a/1'" in result.output
    assert _snapshot(tmp_path) == before


def test_cli_validate_missing_file(tmp_path):
    result = runner.invoke(app, ["facts", "validate", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "not found" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_validate_default_does_not_create_the_cache(tmp_path, monkeypatch):
    from knowpack.facts import default_set

    built = read_facts(DATA / "valid.jsonl")
    monkeypatch.setattr(default_set, "build_default_facts", lambda relations=None: built)
    result = runner.invoke(app, ["facts", "validate", "default"])
    assert result.exit_code == 0 and "OK: 3 facts" in result.output
    assert not default_set.default_facts_path().exists()


def test_cli_stats_json_and_table():
    result = runner.invoke(app, ["facts", "stats", str(DATA / "valid.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_facts"] == 3 and data["by_relation"]["capital_of_country"] == 2
    table = runner.invoke(app, ["facts", "stats", str(DATA / "valid.csv")])
    assert table.exit_code == 0 and "capital_of_country" in table.output and "alias coverage" in table.output


@pytest.mark.parametrize("command", ["validate", "stats", "build"])
def test_every_command_has_help(command):
    result = runner.invoke(app, ["facts", command, "--help"])
    assert result.exit_code == 0 and len(result.output) > 100


def test_real_entry_point_exit_codes(tmp_path):
    """Through `knowpack.cli.app.main` (not CliRunner): problems exit non-zero, no traceback."""
    import subprocess
    import sys

    path = _jsonl(tmp_path / "f.jsonl", [{**GOOD, "answer": ""}, "{bad"])
    before = _snapshot(tmp_path)
    run = subprocess.run([sys.executable, "-m", "knowpack.cli.app", "facts", "validate", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "Traceback" not in run.stdout + run.stderr
    lines = [line.strip() for line in run.stderr.splitlines()]
    assert lines[1:] == [f"{path}:1: field 'answer': empty answer",
                         f"{path}:2: bad JSON (Expecting property name enclosed in double quotes at column 2)"]
    assert _snapshot(tmp_path) == before
