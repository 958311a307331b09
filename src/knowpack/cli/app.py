"""Entry point of the `knowpack` CLI. Each stage lives in its own module under knowpack.cli."""

from __future__ import annotations

import importlib
import os
import sys
import warnings

# Set before any HF library is imported: tqdm reads TQDM_* variables at import time. The bars of
# lm-eval, datasets and transformers would drown knowpack's own rich progress display.
if not os.environ.get("KNOWPACK_VERBOSE"):
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")

import typer
from rich.console import Console

from knowpack.errors import KnowpackError

app = typer.Typer(
    name="knowpack",
    help="How many new facts can you pack into a LoRA adapter, and what does it break?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module under knowpack.cli, how it is mounted). A module exposes either `app` (a Typer group)
# or `command` (a single function) — the group/command name is the first element.
SUBCOMMANDS: list[tuple[str, str]] = [
    ("facts", "group"),
    ("models", "group"),
    ("probe", "command"),
    ("mix", "command"),
    ("paraphrase", "command"),
    ("train", "command"),
    ("evaluate", "command"),
    ("study", "group"),
    ("report", "command"),
]


def _mount() -> None:
    for name, how in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"knowpack.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"knowpack.cli.{name}":
                continue  # stage not built in this checkout
            raise
        if how == "group":
            app.add_typer(module.app, name=name)
        else:
            app.command(name=name, help=module.command.__doc__)(module.command)


_mount()


def main() -> None:
    """Run the CLI; user errors print one clear message and exit non-zero, without a traceback.

    Click's standalone mode already turns usage errors into exit code 2 and `typer.Exit` into its
    code; knowpack's own errors pass through it and are printed here.
    """
    err = Console(stderr=True)
    try:
        app()
    except KnowpackError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
