"""The CLI front door: help on every command, exit codes, no tracebacks for user errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from knowpack.cli.app import app

MOUNTED = sorted([c.name for c in app.registered_commands] + [g.name for g in app.registered_groups])


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "knowpack.cli.app", *args],
                          capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_stage():
    result = _run("--help")
    assert result.returncode == 0
    assert {"facts", "models"} <= set(MOUNTED)
    for name in MOUNTED:
        assert name in result.stdout


@pytest.mark.parametrize("name", MOUNTED)
def test_every_command_has_help(name):
    result = _run(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_user_error_exits_nonzero_without_traceback(tmp_path):
    result = _run("models", "info", str(tmp_path / "nope"))
    assert result.returncode != 0
    assert "unknown model" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unknown_option_is_a_usage_error():
    result = _run("models", "info", "--no-such-option")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_library_log_lines_about_knowpacks_own_choices_are_dropped(caplog):
    """lm-eval logs two warnings on every benchmark run because knowpack hands it an in-memory model on
    purpose; they are dropped, while its other warnings still reach the screen."""
    import logging

    from knowpack.logs import setup_logging

    setup_logging()
    setup_logging()  # idempotent: one filter per logger
    lm_eval_log = logging.getLogger("lm_eval.models.huggingface")
    assert len(lm_eval_log.filters) == 1
    with caplog.at_level(logging.WARNING):
        lm_eval_log.warning("`pretrained` model kwarg is not of type `str`. Many other model arguments may be ignored.")
        lm_eval_log.warning("Passed an already-initialized model through `pretrained`, assuming single-process")
        lm_eval_log.warning("a real problem with the task")
    assert [r.getMessage() for r in caplog.records] == ["a real problem with the task"]
