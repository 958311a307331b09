"""CLI options generated from the stage config models, so no command restates a default.

An option made by :func:`config_option` defaults to ``None`` (= "not given") and shows the
config model's own default and description in ``--help``; :func:`build_config` then builds the
config from the options that were given. A default changes in one place: the config model.
"""

from __future__ import annotations

from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from knowpack.schema import invalid

M = TypeVar("M", bound=BaseModel)


def flag(field: str) -> str:
    """The option spelling of a config field: ``max_new_tokens`` → ``--max-new-tokens``."""
    return "--" + field.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def config_option(model: type[BaseModel], field: str, *flags: str, help: str | None = None, **kwargs: Any) -> Any:
    """A typer option for ``model.field``: default None, help text and default from the model."""
    info = model.model_fields[field]
    default = info.get_default(call_default_factory=True)
    text = help or info.description or ""
    return typer.Option(None, *(flags or (flag(field),)), help=text, show_default=_shown(default), **kwargs)


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The options that were given on the command line (None means "use the config default")."""
    return {k: v for k, v in values.items() if v is not None}


def build_config(model: type[M], values: dict[str, Any], *, command: str, base: dict[str, Any] | None = None) -> M:
    """``model`` from ``base`` (e.g. a YAML section) updated with the given options.

    A validation error names the option as it is spelled on the command line.
    """
    data = {**(base or {}), **given(values)}
    try:
        return model(**data)
    except ValidationError as exc:
        raise invalid(f"option of `{command}`", exc, hint=f"see `{command} --help`", rename=flag) from None
