"""`knowpack facts …`: validate, summarise and build fact files."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from knowpack.errors import KnowpackError

app = typer.Typer(
    help="Fact files: validate them, summarise them, or build one (default set or Head-to-Tail).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_out = Console()
_err = Console(stderr=True)


@contextlib.contextmanager
def _user_errors():
    """Print user errors as one message and exit non-zero, also when not run through `main()`."""
    try:
        yield
    except KnowpackError as exc:
        _err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        # SystemExit, not typer.Exit: `knowpack.cli.app.main` runs click with standalone_mode=False,
        # where a typer.Exit code is returned (and lost) instead of becoming the process status.
        raise SystemExit(exc.exit_code) from None


@app.command()
def validate(file: str = typer.Argument(..., help="Fact file (.jsonl, .csv, .parquet, datasets folder) or `default`.")) -> None:
    """Check a fact file and list every problem (file, line/row, field). Never writes anything.

    CSV list columns (aliases, paraphrases) are JSON arrays or `|`-separated text. Every text is
    one line without invisible characters; an answer or alias must keep some letters or digits
    once case, accents, punctuation and a/an/the are ignored (or it could never match); limits:
    question and paraphrase 2,000 characters, answer and alias 300, a JSONL line 1 MiB.
    """
    from knowpack.facts.default_set import build_default_facts, default_facts_path
    from knowpack.facts.io import check_fact_list, check_facts

    with _user_errors():
        if file == "default" and not default_facts_path().is_file():
            # Validating must not create the cache: check the set in memory instead.
            facts, problems = check_fact_list(build_default_facts(), "default")
        else:
            path = default_facts_path() if file == "default" else Path(file)
            facts, problems = check_facts(path)
    if problems:
        # Plain lines, never wrapped: each problem stays greppable as "file:line: message".
        typer.echo(f"{len(problems)} problem(s) in {file}:", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise SystemExit(1)
    typer.echo(f"OK: {len(facts)} facts, {len({f.relation for f in facts})} relations")


@app.command()
def stats(file: str = typer.Argument(..., help="Fact file or `default`."),
          as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON.")) -> None:
    """Counts by relation, tier and relation×tier; alias/paraphrase coverage; top-answer share."""
    from knowpack.facts.io import read_facts
    from knowpack.facts.stats import compute_stats

    with _user_errors():
        result = compute_stats(read_facts(file))
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    tiers = list(result.by_tier)
    table = Table(title=f"{file}: {result.n_facts} facts, {result.n_relations} relations")
    table.add_column("relation", no_wrap=True, min_width=max([8, *map(len, result.by_relation)]))
    for column in ("facts", *tiers, "top answer", "share"):
        table.add_column(column, justify="left" if column == "top answer" else "right")
    for relation, count in result.by_relation.items():
        top = result.top_answer[relation]
        table.add_row(relation, str(count), *(str(result.by_relation_tier[relation][t]) for t in tiers),
                      top.answer, f"{top.share:.1%}")
    table.add_row("all", str(result.n_facts), *(str(result.by_tier[t]) for t in tiers), "", "",
                  style="bold")
    _out.print(table)
    _out.print(f"alias coverage (≥ 1 alias besides the answer): {result.alias_coverage:.1%}   "
               f"paraphrase coverage: {result.paraphrase_coverage:.1%}", highlight=False, soft_wrap=True)


@app.command()
def build(
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .jsonl, .csv, .parquet (or a folder name for datasets). "
                                                  "An existing path is replaced only if it is a fact file knowpack wrote."),
    triples: Optional[Path] = typer.Option(None, help="Head-to-Tail mode: triples file (N-Triples .nt or TSV subject/relation/object)."),
    templates: Optional[Path] = typer.Option(None, help="Head-to-Tail mode: JSON/YAML relation → template(s) with `_` for the subject."),
    per_tier_relation: int = typer.Option(30, min=1, help="Head-to-Tail: at most K facts per (tier, relation)."),
    seed: int = typer.Option(42, help="Seed for Head-to-Tail sampling and for --sample."),
    sample: Optional[int] = typer.Option(None, min=0, help="Keep N facts, stratified by relation and tier."),
    relations: Optional[str] = typer.Option(None, help="Comma-separated relations to keep (default: all)."),
) -> None:
    """Build a fact file: the offline default set (no source), or Head-to-Tail from --triples/--templates."""
    from knowpack.facts.default_set import build_default_facts, sample_facts, select_relations
    from knowpack.facts.head_to_tail import HeadToTailConfig, build_head_to_tail
    from knowpack.facts.writers import check_fact_output, write_facts

    started = time.perf_counter()
    with _user_errors():
        check_fact_output(out)  # refuse a bad --out before spending time on the build
        wanted = relations.split(",") if relations else None
        if (triples is None) != (templates is None):
            raise KnowpackError("--triples and --templates go together",
                                hint="give both for Head-to-Tail, or neither for the default set")
        if triples is not None:
            facts = build_head_to_tail(triples, templates, HeadToTailConfig(
                per_tier_relation=per_tier_relation, seed=seed))
            if wanted is not None:
                keep = {r.strip() for r in wanted}
                facts = [f for f in facts if f.relation in keep]
        else:
            facts = build_default_facts(select_relations(wanted) if wanted else None)
        if sample is not None:
            facts = sample_facts(facts, sample, seed)
        if not facts:
            raise KnowpackError("no facts to write", hint="check --relations / --sample")
        write_facts(out, facts)
    _out.print(f"wrote {len(facts)} facts ({len({f.relation for f in facts})} relations) to {out} "
               f"in {time.perf_counter() - started:.1f} s", highlight=False, soft_wrap=True)
