"""Entry point of the `knowpack` CLI. Each stage lives in its own module under knowpack.cli."""

from __future__ import annotations

import importlib
import os
import sys

# Set before any HF library is imported: tqdm reads TQDM_* variables at import time. The bars of
# lm-eval, datasets and transformers would drown knowpack's own rich progress display.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import typer  # noqa: E402

from knowpack.errors import KnowpackError  # noqa: E402
from knowpack.logs import silence_third_party_warnings  # noqa: E402

silence_third_party_warnings()

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
    ("capacity", "command"),
    ("report", "command"),
]


@app.callback()
def _global_options(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail: -v debug steps, -vvv library logs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Errors only: no progress bars, no summaries on stderr."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch intra-op threads.",
                                show_default="usable cores / local processes"),
) -> None:
    """Set up logging, progress bars and threads once, for whichever command follows."""
    from knowpack.logs import setup_logging
    from knowpack.progress import enable_bars

    setup_logging(verbose, quiet)
    enable_bars(not quiet and (sys.stderr.isatty() or bool(os.environ.get("KNOWPACK_PROGRESS"))))
    if threads:
        from knowpack.runtime import request_threads

        request_threads(threads)


def _mount() -> None:
    for name, how in SUBCOMMANDS:
        module = importlib.import_module(f"knowpack.cli.{name}")
        if how == "group":
            app.add_typer(module.app, name=name)
        else:
            app.command(name=name, help=module.command.__doc__)(module.command)


_mount()


def _os_error_line(exc: OSError) -> str:
    """One line for a file-system fault: what failed and on which path."""
    where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def main() -> None:
    """Run the CLI; user errors print one clear message and exit non-zero, without a traceback.

    Click's standalone mode already turns usage errors into exit code 2 and `typer.Exit` into its
    code; knowpack's own errors and operating-system faults (read-only folder, disk full, a path
    that is a file) pass through it and are printed here as one line.
    """
    from rich.markup import escape

    from knowpack.logs import console

    try:
        app()
    except KnowpackError as exc:
        console().print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        console().print(f"[bold red]error:[/] {escape(_os_error_line(exc))}", markup=True, highlight=False,
                        soft_wrap=True)
        console().print("  fix: check the path, its permissions and the free disk space", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
