"""The API description the server serves: ``openapi/base.yaml`` merged with every other
``openapi/*.yaml`` fragment (one per area), and ``asyncapi.yaml`` for the socket frames.

A fragment is a partial OpenAPI 3.1 document with ``paths`` and optional ``components``;
a path or component name that two files define is an error naming both, so one area
can never silently replace another's description."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).resolve().parent
OPENAPI_DIR = SCHEMA_DIR / "openapi"
BASE_FILE = OPENAPI_DIR / "base.yaml"
ASYNCAPI_FILE = SCHEMA_DIR / "asyncapi.yaml"


class SchemaError(Exception):
    """The description files do not merge (a duplicate, or a file that is not a mapping)."""


def _read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise SchemaError(f"{path.name} is not a YAML mapping.")
    return data


def _merge_into(
    target: dict[str, Any], owners: dict[str, str], part: dict[str, Any], where: str, name: str
) -> None:
    for key, value in part.items():
        label = f"{where} {key!r}"
        if key in target:
            raise SchemaError(f"{label} is defined in both {owners[label]} and {name}.")
        target[key] = value
        owners[label] = name


def openapi_merge(files: list[Path]) -> dict[str, Any]:
    """Merge ``files`` (the first is the base) into one document."""
    base_file, *fragments = files
    document = _read(base_file)
    document.setdefault("paths", {})
    document.setdefault("components", {})
    owners: dict[str, str] = {}
    for key in document["paths"]:
        owners[f"path {key!r}"] = base_file.name
    for section, entries in document["components"].items():
        for key in entries:
            owners[f"components.{section} {key!r}"] = base_file.name
    for fragment in fragments:
        part = _read(fragment)
        _merge_into(document["paths"], owners, part.get("paths") or {}, "path", fragment.name)
        for section, entries in (part.get("components") or {}).items():
            merged = document["components"].setdefault(section, {})
            _merge_into(merged, owners, entries or {}, f"components.{section}", fragment.name)
    return document


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI description (cached: the files change only with a deploy)."""
    fragments = sorted(p for p in OPENAPI_DIR.glob("*.yaml") if p != BASE_FILE)
    return openapi_merge([BASE_FILE, *fragments])


@functools.cache
def asyncapi_document() -> dict[str, Any] | None:
    """The AsyncAPI description of the socket frames, or None while there is none."""
    if not ASYNCAPI_FILE.exists():
        return None
    return _read(ASYNCAPI_FILE)
