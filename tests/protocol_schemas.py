"""The message schemas of docs/asyncapi.yaml, as ``jsonschema`` validators for the tests.

The document leaves ``additionalProperties`` open (clients must ignore unknown fields); the
tests close it on every object schema with ``properties``, so a field the server sends, or a
shipped client sends, that the document does not list fails the test: the document cannot
drift from the code. ``data`` (an object without ``properties``) stays open.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests import REPO

ASYNCAPI = REPO / "docs" / "asyncapi.yaml"
_BASE = "urn:broadcaster:asyncapi"


@functools.cache
def document() -> dict[str, Any]:
    """docs/asyncapi.yaml, parsed."""
    loaded: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text())
    return loaded


def _closed(node: Any) -> Any:
    """``node`` with ``additionalProperties: false`` on every object schema with properties."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _closed(value) for key, value in node.items()}
    if closed.get("type") == "object" and "properties" in closed:
        closed.setdefault("additionalProperties", False)
    return closed


@functools.cache
def validator(schema_name: str, *, strict: bool = True) -> Draft7Validator:
    """A validator of ``components.schemas[schema_name]``, closed when ``strict``."""
    root = copy.deepcopy(document())
    if strict:
        root["components"]["schemas"] = _closed(root["components"]["schemas"])
    registry: Registry[Any] = Registry().with_resource(
        _BASE, Resource.from_contents(root, default_specification=DRAFT7)
    )
    return Draft7Validator(
        {"$ref": f"{_BASE}#/components/schemas/{schema_name}"}, registry=registry
    )


@functools.cache
def schema_names_by_type(union: str) -> dict[str, str]:
    """``type`` value -> schema name, for the members of the union ``union``."""
    schemas = document()["components"]["schemas"]
    names = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas[union]["oneOf"]]
    return {schemas[name]["properties"]["type"]["const"]: name for name in names}


def _check(message: Any, union: str) -> None:
    by_type = schema_names_by_type(union)
    kind = message.get("type") if isinstance(message, dict) else None
    assert kind in by_type, f"{union} of type {kind!r} is not in docs/asyncapi.yaml: {message}"
    error = best_match(validator(by_type[kind]).iter_errors(message))
    where = "/".join(map(str, error.absolute_path)) if error else ""
    assert error is None, f"{kind} vs docs/asyncapi.yaml: {error.message} at /{where}: {message}"


def assert_server_message(message: Any) -> None:
    """``message`` is a server message of docs/asyncapi.yaml, with no undocumented field."""
    _check(message, "ServerMessage")


def assert_client_message(message: Any) -> None:
    """``message`` is a client message of docs/asyncapi.yaml, with no undocumented field."""
    _check(message, "ClientMessage")
