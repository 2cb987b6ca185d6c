"""A job spec file for ``runner extract SPEC.toml``: the command's options as TOML keys (``source``, ``schema``,
``instructions`` or ``prompt_file``, ``text_column``, ``id_column``, ``many``, ``model``, ``mode``, ``deadline``,
``max_spend``, ``name``, ``output``, ``max_output_tokens``, ``max_input_tokens``, ``overlap_tokens``, ``tier``).
Paths are relative to the spec file's folder; options given on the command line win over the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from runner.errors import ConfigError

__all__ = ["KEYS", "PATH_KEYS", "read_spec"]

KEYS: dict[str, type | tuple[type, ...]] = {
    "source": str,
    "schema": str,
    "instructions": str,
    "prompt_file": str,
    "text_column": str,
    "id_column": str,
    "many": bool,
    "model": str,
    "mode": str,
    "deadline": str,
    "max_spend": (str, int, float),
    "name": str,
    "output": str,
    "max_output_tokens": int,
    "max_input_tokens": int,
    "overlap_tokens": int,
    "tier": str,
}
PATH_KEYS = ("source", "schema", "prompt_file", "output")


def read_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    spec: dict[str, Any] = {}
    for key, value in raw.items():
        kind = KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(KEYS)})")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: {key} = {value!r} is not a {getattr(kind, '__name__', 'number or text')}")
        pydantic_model = key == "schema" and ":" in str(value) and not str(value).endswith(".json")
        if key in PATH_KEYS and not pydantic_model:
            spec[key] = str(path.parent / str(value))
        else:
            spec[key] = str(value) if key == "max_spend" else value
    if "source" not in spec or "schema" not in spec:
        raise ConfigError(f"{path}: needs source and schema")
    return spec
