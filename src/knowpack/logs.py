"""Logging for the CLI: one rich handler on stderr, levels chosen by ``-v`` / ``-q``.

Library modules log with ``logging.getLogger(__name__)`` and never print. The CLI calls
:func:`setup_logging` once: by default knowpack's INFO lines (one-line stage summaries, what is
being done) are shown; ``-v`` adds DEBUG lines (internal steps such as an evaluation's inputs);
``-q`` shows errors only. Third-party libraries are held at WARNING (at ERROR under ``-q``), and
warnings that tell a knowpack user nothing are filtered where they are raised.
"""

from __future__ import annotations

import logging
import warnings

_CONSOLE = None
# Libraries whose INFO chatter (model loading, dataset building, lm-eval task setup) is noise here.
_THIRD_PARTY = ("transformers", "datasets", "accelerate", "peft", "lm_eval", "lm-eval", "filelock", "urllib3",
                "torch", "matplotlib", "PIL", "fsspec", "huggingface_hub", "absl", "evaluate", "sqlitedict")
# (category, message regex, module regex) of warnings raised by libraries for situations knowpack
# creates on purpose: an in-memory model handed to lm-eval, deprecations inside transformers.
_SILENCED = [
    (UserWarning, r".*`pretrained` model kwarg is not of type `str`.*", ""),
    (FutureWarning, r".*", r"transformers\..*"),
    (DeprecationWarning, r".*", r"(transformers|lm_eval|datasets|accelerate)\..*"),
]
# The same situations reported through a library's logger instead of ``warnings``: logger name ->
# message prefixes. lm-eval logs both lines for every benchmark run on the in-memory model.
_SILENCED_LOGS = {
    "lm_eval.models.huggingface": ("`pretrained` model kwarg is not of type `str`",
                                   "Passed an already-initialized model through `pretrained`"),
}


class _DropMessages(logging.Filter):
    """Drops a logger's records whose message starts with one of the given prefixes."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def console():
    """The one rich console on stderr shared by log lines and progress bars."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        _CONSOLE = Console(stderr=True)
    return _CONSOLE


def level_for(verbose: int, quiet: bool) -> int:
    """knowpack's log level for ``-v`` (count) and ``-q``."""
    if quiet:
        return logging.ERROR
    return logging.DEBUG if verbose > 0 else logging.INFO


def silence_third_party_warnings() -> None:
    """Filter the warnings in ``_SILENCED`` (call before the libraries are imported) and the log lines in
    ``_SILENCED_LOGS`` (idempotent: a logger gets one filter however often this runs)."""
    for category, message, module in _SILENCED:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, prefixes in _SILENCED_LOGS.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in target.filters):
            target.addFilter(_DropMessages(prefixes))


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Install the rich handler on the ``knowpack`` logger and set every level (idempotent)."""
    from rich.logging import RichHandler

    level = level_for(verbose, quiet)
    logger = logging.getLogger("knowpack")
    for handler in list(logger.handlers):
        if getattr(handler, "_knowpack", False):
            logger.removeHandler(handler)
    handler = RichHandler(console=console(), show_time=verbose > 1, show_path=verbose > 1,
                          show_level=verbose > 0, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._knowpack = True
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    third_party = logging.DEBUG if verbose > 2 else (logging.ERROR if quiet else logging.WARNING)
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(third_party)
    if verbose <= 2:
        silence_third_party_warnings()
