"""User-facing errors: one clear message (what, where, how to fix), no traceback."""

from __future__ import annotations


class KnowpackError(Exception):
    """An error caused by the user's input or environment.

    The CLI prints ``str(error)`` and exits with ``exit_code``; it never shows a traceback for it.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  fix: {hint}")


class ValidationFailed(KnowpackError):
    """Input data has one or more problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str], *, what: str = "input"):
        self.problems = problems
        summary = f"{len(problems)} problem(s) in {what}:\n" + "\n".join(f"  {p}" for p in problems)
        super().__init__(summary)
