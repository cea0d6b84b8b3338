"""A small JSON Schema validator: exactly the keywords of the schemas in tests/fixtures/
(``jsonschema`` is not a dependency of this project). An unknown keyword is an error, so a
schema never silently checks less than it says."""

from __future__ import annotations

import re
from typing import Any

TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}
ANNOTATIONS = {"$schema", "$id", "title", "description"}
KNOWN = {
    "type",
    "required",
    "properties",
    "additionalProperties",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "allOf",
    "if",
    "then",
    "else",
}


def errors(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``instance`` breaks ``schema`` (empty: it is valid)."""
    unknown = set(schema) - KNOWN - ANNOTATIONS
    if unknown:
        raise ValueError(f"the validator does not implement {sorted(unknown)}")
    found: list[str] = []
    kind = schema.get("type")
    if kind and (
        not isinstance(instance, TYPES[kind]) or (isinstance(instance, bool) and kind != "boolean")
    ):
        return [f"{path}: not of type {kind}"]
    if "const" in schema and instance != schema["const"]:
        found.append(f"{path}: is not {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        found.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            found.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            found.append(f"{path}: longer than {schema['maxLength']} ({len(instance)})")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            found.append(f"{path}: does not match {schema['pattern']}")
    if isinstance(instance, dict):
        for name in schema.get("required", []):
            if name not in instance:
                found.append(f"{path}: {name} is required")
        properties = schema.get("properties", {})
        for name, value in instance.items():
            if name in properties:
                found += errors(value, properties[name], f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{path}: {name} is not allowed")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            found += errors(item, schema["items"], f"{path}[{i}]")
    for part in schema.get("allOf", []):
        found += errors(instance, part, path)
    if "if" in schema:
        branch = "then" if not errors(instance, schema["if"], path) else "else"
        if branch in schema:
            found += errors(instance, schema[branch], path)
    return found
