"""The schema an extraction asks for, made strict for OpenAI's structured outputs, and its validator.

Strict means: every property required (those the user left optional become nullable), no additional properties,
no ``default`` keywords, at every level (nested objects, array items, ``anyOf`` branches, ``$defs``). ``--many``
wraps the schema as ``{"items": [ ... ]}`` so one document may give several rows. Answers are validated with
``jsonschema`` against the strict schema that was sent.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from runner.errors import ConfigError

__all__ = ["Schema", "load_schema", "strict"]

NESTED = ("items", "additionalItems", "not", "if", "then", "else")
BRANCHES = ("anyOf", "oneOf", "allOf", "prefixItems")


class Schema:
    """The strict schema sent with every request (``sent``), its name, and a validator for answers."""

    def __init__(self, user: dict[str, Any], many: bool, name: str) -> None:
        if user.get("type", "object") != "object" or "properties" not in user:
            raise ConfigError("the schema's top level must be an object with properties (use --many for lists)")
        self.fields = list(user["properties"])
        self.kinds = {name: _kind(prop) for name, prop in user["properties"].items()}  # the table's column types
        self.many = many
        body = strict(user)
        if many:
            body = {
                "type": "object",
                "properties": {"items": {"type": "array", "items": body}},
                "required": ["items"],
                "additionalProperties": False,
                **({"$defs": body.pop("$defs")} if "$defs" in body else {}),
            }
        self.sent = body
        self.name = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "extraction"
        try:
            jsonschema.Draft202012Validator.check_schema(body)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"the schema is not valid JSON Schema: {exc.message}") from exc
        self.validator = jsonschema.Draft202012Validator(body)

    def response_format(self) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": self.name, "strict": True, "schema": self.sent}}

    def problem(self, value: Any) -> str | None:
        """The first way ``value`` breaks the schema, in words (None: valid)."""
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "the answer"
        return f"{where}: {error.message}"

    def rows(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows a valid answer gives: its items with --many, else itself."""
        items: list[dict[str, Any]] = value["items"] if self.many else [value]
        return items


def load_schema(spec: str, many: bool = False) -> Schema:
    """A JSON Schema file, or a Pydantic model named ``module:Class`` (importable from the current folder)."""
    path = Path(spec)
    if path.is_file():
        try:
            user = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(user, dict):
            raise ConfigError(f"{path}: a JSON Schema must be an object")
        return Schema(user, many, str(user.get("title") or path.stem))
    if ":" in spec and not spec.endswith(".json"):
        module_name, _, class_name = spec.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), class_name)
            user = model.model_json_schema()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--schema {spec}: cannot load the Pydantic model ({exc})") from exc
        return Schema(user, many, class_name)
    raise ConfigError(f"--schema {spec}: no such file (or give a Pydantic model as module:Class)")


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as structured outputs' strict mode wants it (a copy)."""
    out = copy.deepcopy(schema)
    _tighten(out)
    return out


def _tighten(node: Any) -> None:
    if not isinstance(node, dict):
        return
    node.pop("default", None)
    for key in ("$defs", "definitions", "properties"):
        for child in (node.get(key) or {}).values():
            _tighten(child)
    for key in NESTED:
        _tighten(node.get(key))
    for key in BRANCHES:
        for child in node.get(key) or []:
            _tighten(child)
    if isinstance(node.get("properties"), dict):
        optional = [name for name in node["properties"] if name not in set(node.get("required", []))]
        for name in optional:
            node["properties"][name] = _nullable(node["properties"][name])
        node["required"] = list(node["properties"])
        node["additionalProperties"] = False


def _kind(prop: Any) -> str:
    """How a top-level field is stored: text, integer, number, boolean, or json (objects, arrays, mixtures)."""
    if not isinstance(prop, dict):
        return "json"
    kind = prop.get("type")
    kinds = {k for k in (kind if isinstance(kind, list) else [kind]) if k != "null"}
    if len(kinds) == 1 and (only := kinds.pop()) in ("string", "integer", "number", "boolean"):
        return "text" if only == "string" else only
    if kind is None and "enum" in prop and all(isinstance(v, str) for v in prop["enum"] if v is not None):
        return "text"
    return "json"


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    kind = prop.get("type")
    if isinstance(kind, str):
        prop = {**prop, "type": [kind, "null"]}
        if "enum" in prop and None not in prop["enum"]:
            prop["enum"] = [*prop["enum"], None]
        return prop
    if isinstance(kind, list):
        return {**prop, "type": kind if "null" in kind else [*kind, "null"]}
    if "anyOf" in prop:
        branches = prop["anyOf"]
        return prop if {"type": "null"} in branches else {**prop, "anyOf": [*branches, {"type": "null"}]}
    return {"anyOf": [prop, {"type": "null"}]}  # a $ref, or an untyped property
