"""Hostile fact files and output paths: each case is one clear message, never data loss or a traceback."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knowpack.cli.app import app
from knowpack.errors import KnowpackError, ValidationFailed
from knowpack.facts import Fact, check_facts, read_facts, write_facts
from knowpack.facts.checks import MAX_CHARS
from knowpack.facts.readers import MAX_LINE_BYTES
from test_facts_io import GOOD, _jsonl, _problems  # the same record and helpers as the basic IO tests

HEADER = "id,subject,relation,question,answer"
runner = CliRunner()


def _good(n: int) -> list[Fact]:
    return [Fact(**{**GOOD, "id": f"a/{i}"}) for i in range(n)]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# 1. Output paths: nothing knowpack did not write is ever deleted or overwritten.

def test_build_refuses_an_existing_foreign_folder_and_keeps_it(tmp_path):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("precious")
    (mine / "sub" / "x.bin").write_bytes(b"\x00\x01")
    before = _tree(mine)
    result = runner.invoke(app, ["facts", "build", "--sample", "4", "--out", str(mine)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "refusing to replace" in result.output
    assert _tree(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # refused before any temp folder


def test_build_refuses_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):
        result = runner.invoke(app, ["facts", "build", "--sample", "4", "--out", out])
        assert result.exit_code == 2, out
        assert "current folder" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name, content", [
    ("notes.csv", "name,phone\nAnn,123\n"),
    ("facts.jsonl", '{"id": "a/1", "subject": "s", "relation": "r", "question": "q?", "answer": "x"}\n'),
    ("facts.parquet", "not parquet at all"),
    ("facts", "a plain file where a datasets folder would go"),
])
def test_build_refuses_a_file_it_did_not_write(tmp_path, name, content):
    target = tmp_path / name
    target.write_text(content)
    result = runner.invoke(app, ["facts", "build", "--sample", "4", "--out", str(target)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "refusing to" in result.output
    assert target.read_text() == content


@pytest.mark.parametrize("name", ["f.jsonl", "f.csv", "f.parquet", "folder"])
def test_rewriting_its_own_output_works(tmp_path, name):
    target = tmp_path / name
    write_facts(target, _good(3))
    write_facts(target, _good(2))
    assert [f.id for f in read_facts(target)] == ["a/0", "a/1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp or set-aside folder left


def test_an_empty_file_or_folder_may_be_written_over(tmp_path):
    (tmp_path / "f.jsonl").touch()
    (tmp_path / "ds").mkdir()
    assert len(read_facts(write_facts(tmp_path / "f.jsonl", _good(2)))) == 2
    assert len(read_facts(write_facts(tmp_path / "ds", _good(2)))) == 2


def test_datasets_folder_with_an_extra_file_is_not_ours(tmp_path):
    write_facts(tmp_path / "ds", _good(2))
    (tmp_path / "ds" / "README.md").write_text("my notes")
    with pytest.raises(KnowpackError, match="refusing to replace"):
        write_facts(tmp_path / "ds", _good(1))
    assert (tmp_path / "ds" / "README.md").read_text() == "my notes"


def test_a_symbolic_link_is_never_replaced(tmp_path):
    real = tmp_path / "real.jsonl"
    write_facts(real, _good(2))
    (tmp_path / "link.jsonl").symlink_to(real)
    with pytest.raises(KnowpackError, match="symbolic link"):
        write_facts(tmp_path / "link.jsonl", _good(1))
    assert (tmp_path / "link.jsonl").is_symlink() and len(read_facts(real)) == 2


def test_a_file_as_parent_is_refused_before_the_build(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    result = runner.invoke(app, ["facts", "build", "--out", str(tmp_path / "notes.txt" / "f.jsonl")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    assert "wrote" not in result.output


# 2. CSV rows with more (or fewer) fields than the header.

def test_every_ragged_csv_row_is_named_by_its_first_line(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(f"{HEADER}\n"
                    "extra,a/1,France,r,What?,Paris\n"          # line 2: one field too many
                    'a/2,Spain,r,"Which\ncity?",Madrid\n'         # lines 3-4: one record
                    "a/3,Italy,r,q?,Rome,oops,more\n"             # line 5: two too many
                    "a/4,Peru,r,q?\n"                             # line 6: one too few
                    "a/5,Chile,r,q?,Santiago\n", encoding="utf-8")
    problems = _problems(path)
    assert f"{path}:2: 6 fields but the header has 5 (more than the header; quote any value that contains a comma)" in problems
    assert any(p.startswith(f"{path}:3: field 'question': contains a line break") for p in problems)
    assert any(p.startswith(f"{path}:5: 7 fields but the header has 5") for p in problems)
    assert any(p.startswith(f"{path}:6: 4 fields but the header has 5 (fewer") for p in problems)
    assert len(problems) == 4  # line 7 is fine
    # Nothing shifted: the valid record keeps its values where they belong.
    facts, _ = check_facts(path)
    assert [(f.id, f.answer) for f in facts] == [("a/5", "Santiago")]


def test_a_quoted_comma_is_not_ragged_and_csv_header_problems(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(f'{HEADER}\na/1,"Washington, D.C.",r,q?,"Yes, it is"\n', encoding="utf-8")
    assert read_facts(path)[0].subject == "Washington, D.C."
    bad = tmp_path / "h.csv"
    bad.write_text(f"{HEADER},answer,\na/1,s,r,q?,x,y,\n", encoding="utf-8")
    problems = _problems(bad)
    assert f"{bad}: column 'answer' appears more than once in the header" in problems
    assert f"{bad}: header column 7 has no name" in problems


# 3. Answers and aliases that can never match, and multi-line text.

@pytest.mark.parametrize("answer, expected", [
    ("!!!", "'!!!' can never match an answer"),
    ("The", "'The' can never match an answer"),
    ("  a  ", "'  a  ' can never match an answer"),
    ("Paris\u200b", "invisible or control character U+200B (ZERO WIDTH SPACE) at position 6"),
    ("\ufeffParis", "U+FEFF"),
    ("Paris\nFrance", "contains a line break (only the first line of a generation is compared"),
    ("Paris\u2028France", "contains a line break"),
])
def test_unusable_answers_are_errors(tmp_path, answer, expected):
    problems = _problems(_jsonl(tmp_path / "f.jsonl", [{**GOOD, "answer": answer}]))
    assert len(problems) == 1 and "field 'answer'" in problems[0] and expected in problems[0], problems


def test_unusable_aliases_are_named_by_index(tmp_path):
    row = {**GOOD, "aliases": ["Paris", "The", "Lut\u00e8ce", "x\ny", "Par\u200bis"]}
    text = "\n".join(_problems(_jsonl(tmp_path / "f.jsonl", [row])))
    assert "field 'aliases[1]': 'The' can never match" in text
    assert "aliases[2]" not in text  # an accented alias is fine
    assert "field 'aliases[3]': contains a line break" in text
    assert "field 'aliases[4]': contains the invisible or control character U+200B" in text


def test_questions_and_paraphrases_must_be_one_line(tmp_path):
    rows = [{**GOOD, "question": "What is\nthe capital of France?"},
            {**GOOD, "id": "a/2", "paraphrases": ["Fine?", "Not\tfine?"]}]
    problems = _problems(_jsonl(tmp_path / "f.jsonl", rows))
    assert problems[0].endswith("field 'question': contains a line break (every text field must be one line)")
    assert "field 'paraphrases[1]': contains the invisible or control character U+0009" in problems[1]


def test_joiners_needed_by_real_scripts_are_allowed(tmp_path):
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a word with a zero-width non-joiner
    facts = read_facts(_jsonl(tmp_path / "f.jsonl", [{**GOOD, "answer": persian}]))
    assert facts[0].answer == persian


# 4. Duplicate keys, near-duplicate ids, non-finite numbers, objects in CSV list cells.

def test_duplicate_json_keys_are_reported(tmp_path):
    line = '{"id": "a/1", "id": "a/2", "subject": "s", "relation": "r", "question": "q?", "answer": "x"}'
    problems = _problems(_jsonl(tmp_path / "f.jsonl", [line]))
    assert problems == [f"{tmp_path / 'f.jsonl'}:1: key 'id' appears more than once in the object "
                        "(JSON would keep only the last value)"]


def test_ids_equal_up_to_case_space_or_invisible_characters_are_duplicates(tmp_path):
    rows = [{**GOOD, "id": "Paris/1"}, {**GOOD, "id": "paris/1 "}, {**GOOD, "id": "PARIS/1"},
            {**GOOD, "id": "Paris/2"}]
    path = _jsonl(tmp_path / "f.jsonl", rows)
    problems = _problems(path)
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}:2: duplicate id 'paris/1 ': the same as 'Paris/1' at {path}:1")
    assert problems[1].startswith(f"{path}:3: duplicate id 'PARIS/1'")
    invisible = _jsonl(tmp_path / "g.jsonl", [{**GOOD, "id": "Paris/1"}, {**GOOD, "id": "Paris/1\u200b"}])
    text = "\n".join(_problems(invisible))
    assert "duplicate id 'Paris/1\\u200b'" in text and "field 'id': contains the invisible" in text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400])
def test_popularity_must_be_finite_in_json(tmp_path, value):
    line = json.dumps(GOOD)[:-1] + f', "popularity": {value}}}'
    problems = _problems(_jsonl(tmp_path / "f.jsonl", [line]))
    assert len(problems) == 1 and "field 'popularity': must be a finite number" in problems[0]


def test_csv_nan_inf_and_object_cells(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(f"{HEADER},aliases,popularity\n"
                    'a/1,s,r,q?,x,"{""a"": 1}",3\n'
                    "a/2,s,r,q?,y,,nan\n"
                    "a/3,s,r,q?,z,,-inf\n"
                    'a/4,s,r,q?,w,"[""w"", ""W""]",\n', encoding="utf-8")
    problems = _problems(path)
    assert problems == [
        f"{path}:2: field 'aliases': a JSON object is not a list (write a JSON array of strings or `|`-separated text)",
        f"{path}:3: field 'popularity': must be a finite number, got nan",
        f"{path}:4: field 'popularity': must be a finite number, got -inf",
    ]


def test_parquet_infinity_is_refused_and_missing_values_are_not(tmp_path):
    import pandas as pd

    pd.DataFrame([{**GOOD, "popularity": float("inf")}, {**GOOD, "id": "a/2", "popularity": None}]
                 ).to_parquet(tmp_path / "f.parquet")
    problems = _problems(tmp_path / "f.parquet")
    assert len(problems) == 1 and "row 1: field 'popularity': must be a finite number, got inf" in problems[0]


# 5. A JSON array or pretty-printed JSON saved as JSONL.

def test_json_array_as_jsonl_is_one_message(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps([GOOD, {**GOOD, "id": "a/2"}], indent=2), encoding="utf-8")
    problems = _problems(path)
    assert len(problems) == 1
    assert "one JSON array of 2 item(s), not JSON Lines" in problems[0] and "one JSON object per line" in problems[0]
    one_line = tmp_path / "g.jsonl"
    one_line.write_text(json.dumps([GOOD]) + "\n", encoding="utf-8")
    assert "one JSON array of 1 item(s)" in _problems(one_line)[0]


def test_pretty_printed_objects_as_jsonl_is_one_message(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(GOOD, indent=2) + "\n" + json.dumps({**GOOD, "id": "a/2"}, indent=2),
                    encoding="utf-8")
    problems = _problems(path)
    assert len(problems) == 1 and "2 JSON value(s) written over several lines (pretty-printed)" in problems[0]


def test_one_broken_line_is_still_reported_per_line(tmp_path):
    path = _jsonl(tmp_path / "f.jsonl", [GOOD, '{"id": "a/2",', {**GOOD, "id": "a/3"}])
    assert [p.split(": ", 1)[0] for p in _problems(path)] == [f"{path}:2"]


# 6. No facts at all.

@pytest.mark.parametrize("name, content, reason", [
    ("empty.jsonl", "", "the file is empty"),
    ("blank.jsonl", "\n  \n\n", "only blank lines"),
    ("header.csv", HEADER + "\n", "only a header row"),
    ("empty.csv", "", "the file is empty"),
])
def test_a_file_without_facts_is_an_error(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_text(content)
    assert _problems(path) == [f"{path}: no facts in it ({reason})"]
    result = runner.invoke(app, ["facts", "validate", str(path)])
    assert result.exit_code == 1 and "no facts" in result.output


def test_zero_row_parquet_and_dataset(tmp_path):
    import datasets
    import pandas as pd

    frame = pd.DataFrame([GOOD]).iloc[:0]
    frame.to_parquet(tmp_path / "f.parquet")
    assert _problems(tmp_path / "f.parquet") == [f"{tmp_path / 'f.parquet'}: no facts in it (the table has 0 rows)"]
    datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(tmp_path / "ds"))
    assert _problems(tmp_path / "ds") == [f"{tmp_path / 'ds'}: no facts in it (the dataset has 0 rows)"]


# 7. Sizes and unreadable paths.

def test_over_long_text_fields_are_reported(tmp_path):
    row = {**GOOD, "question": "Q" * 100_000 + "?", "answer": "A" * (MAX_CHARS["answer"] + 1),
           "aliases": ["ok", "B" * 301], "paraphrases": ["P" * 2001]}
    text = "\n".join(_problems(_jsonl(tmp_path / "f.jsonl", [row])))
    assert "field 'question': 100,001 characters, over the limit of 2,000" in text
    assert "field 'answer': 301 characters, over the limit of 300" in text
    assert "field 'aliases[1]': 301 characters" in text
    assert "field 'paraphrases[0]': 2,001 characters" in text


def test_an_absurd_line_is_skipped_unparsed(tmp_path, monkeypatch):
    import knowpack.facts.readers as readers

    parsed = []
    real = readers.parse_json_object
    monkeypatch.setattr(readers, "parse_json_object", lambda text: parsed.append(len(text)) or real(text))
    path = tmp_path / "f.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(GOOD) + "\n")
        fh.write('{"id": "' + "x" * (10 * MAX_LINE_BYTES) + '"}\n')
        fh.write(json.dumps({**GOOD, "id": "a/3", "answer": ""}) + "\n")
    problems = _problems(path)
    assert problems == [f"{path}:2: line longer than 1,048,576 bytes, not read (a fact is one short JSON object per line)",
                        f"{path}:3: field 'answer': empty answer"]
    assert max(parsed) < 1000  # the 10 MB line never reached the JSON parser


def test_too_many_aliases(tmp_path):
    row = {**GOOD, "aliases": [f"Paris {i}" for i in range(101)]}
    assert "field 'aliases': 101 items, over the limit of 100" in _problems(_jsonl(tmp_path / "f.jsonl", [row]))[0]


def test_unreadable_file_is_one_error(tmp_path, monkeypatch):
    import knowpack.facts.readers as readers

    path = _jsonl(tmp_path / "f.jsonl", [GOOD])
    # Tests run as root, which chmod cannot lock out: make the access check and the read fail instead.
    monkeypatch.setattr(readers.os, "access", lambda p, mode: False)
    with pytest.raises(KnowpackError, match="permission denied") as info:
        read_facts(path)
    assert not isinstance(info.value, ValidationFailed)
    monkeypatch.undo()

    def denied(_path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(readers, "_read_by_format", denied)
    with pytest.raises(KnowpackError, match="permission denied"):
        read_facts(path)


@pytest.mark.parametrize("where", ["/proc/self/status", "/proc", "/proc/self/fd/0", "/sys/kernel", "/dev/null"])
def test_pseudo_files_are_refused(where):
    result = runner.invoke(app, ["facts", "validate", where])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "kernel or device file" in result.output


def test_fifo_folder_and_binary_files(tmp_path):
    os.mkfifo(tmp_path / "pipe.jsonl")
    with pytest.raises(KnowpackError, match="not a regular file"):
        read_facts(tmp_path / "pipe.jsonl")
    (tmp_path / "plain").mkdir()
    with pytest.raises(KnowpackError, match="not a saved `datasets` dataset"):
        read_facts(tmp_path / "plain")
    import gzip

    (tmp_path / "z.jsonl").write_bytes(gzip.compress(json.dumps(GOOD).encode()))
    with pytest.raises(KnowpackError, match="is a gzip archive"):
        read_facts(tmp_path / "z.jsonl")
    write_facts(tmp_path / "p.parquet", _good(1))
    (tmp_path / "p.csv").write_bytes((tmp_path / "p.parquet").read_bytes())
    with pytest.raises(KnowpackError, match="is a Parquet file"):
        read_facts(tmp_path / "p.csv")


def test_latin1_file_is_one_problem(tmp_path):
    path = tmp_path / "f.jsonl"
    lines = [json.dumps({**GOOD, "id": f"a/{i}", "subject": "Caf\u00e9"}, ensure_ascii=False) for i in range(5)]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    problems = _problems(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:1: not valid UTF-8") and "4 more line(s)" in problems[0]


def test_utf8_bom_and_lone_surrogates(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert read_facts(path)[0].id == "a/1"
    broken = _jsonl(tmp_path / "g.jsonl", [json.dumps(GOOD)[:-1] + ', "domain": "\\ud800"}'])
    assert "U+D800" in _problems(broken)[0]


def test_deeply_nested_json_is_a_problem_not_a_crash(tmp_path):
    path = _jsonl(tmp_path / "f.jsonl", [GOOD, "[" * 200_000 + "]" * 200_000])
    problems = _problems(path)
    assert len(problems) == 1 and ":2: " in problems[0]


# 9. No import cycle among the facts modules (static: function-level imports count too).

def _imports(module_file: Path) -> set[str]:
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("knowpack.facts")}


def test_facts_modules_have_no_import_cycle():
    import knowpack.facts

    root = Path(knowpack.facts.__file__).parent
    graph = {}
    for file in root.rglob("*.py"):
        parts = file.relative_to(root).with_suffix("").parts
        name = ".".join(["knowpack.facts", *[p for p in parts if p != "__init__"]])
        graph[name] = _imports(file) - {name}
    graph.pop("knowpack.facts")  # the package's own re-exports sit above every module

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    cycles = sorted(name for name in graph if reaches(name, name, set()))
    assert cycles == []
    assert "knowpack.facts.io" not in graph["knowpack.facts.default_set"]
