"""The `knowpack` command line: one Typer sub-app per pipeline stage."""
