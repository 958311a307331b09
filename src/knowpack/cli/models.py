"""`knowpack models info`: what a model argument resolves to and what was loaded."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Inspect and provision models.", no_args_is_help=True)


@app.command("info")
def info(
    model: str = typer.Argument("default", help="`default`, a local folder, a .gguf file or a hub id."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Load MODEL and print what was loaded (parameters, dtype, chat template, cache location)."""
    from knowpack.models import load_model

    start = time.perf_counter()
    loaded = load_model(model, trust_remote_code=trust_remote_code)
    details = dict(loaded.info, model_hash=loaded.model_hash,
                   load_seconds=round(time.perf_counter() - start, 2))
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    table = Table(title=f"model {model}", show_header=False)
    for key, value in details.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)
