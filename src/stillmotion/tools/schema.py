"""JSON schemas every tool converter accepts.

Agent frameworks convert MCP input schemas for other models (Gemini, OpenAI strict mode,
pydantic-ai's transformers); many of them break on `$ref`/`$defs` or on a union inside a
union. So every schema the server publishes is:

- inlined: no `$ref`, no `$defs`;
- flat: at most one `anyOf` per property (a nullable tagged union becomes one `anyOf` with the
  null member last), `oneOf` only where pydantic never emits it (never, today);
- lean: no `title`s, no `default` of null, false or 0 (what a missing argument means anyway), and
  `additionalProperties: false` only at the top: nested objects forbid unknown keys in the
  server's check, which names the allowed keys (strict-mode converters add it back anyway);
  likewise `minLength: 1` on strings.

`raw_schema` keeps pydantic's own structure (with the tagged union as `oneOf`) for
tools/argerrors.py, which walks it along an error's location.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

JSON = dict[str, Any]


def raw_schema(model: type[BaseModel]) -> JSON:
    """The model's schema with every `$ref` inlined, otherwise as pydantic wrote it (a copy of its own
    that the caller may change)."""
    return copy.deepcopy(_inlined(model))


@functools.cache
def _inlined(model: type[BaseModel]) -> JSON:
    # once per model class: pydantic's schema generation is most of what building the tool list
    # costs, and every server (each test's in-process one included) builds it again
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    inlined: JSON = _inline(schema, defs)
    return inlined


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]), defs)
            rest = {k: _inline(v, defs) for k, v in node.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def published_schema(model: type[BaseModel]) -> JSON:
    """What tools/list shows: inlined, flat and lean."""
    schema: JSON = lean(raw_schema(model))
    for node in walk(schema["properties"]):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        if node.get("minLength") == 1 and node.get("type") == "string":
            del node["minLength"]  # "non-empty" goes without saying; the server still refuses ""
        enum = node.get("enum")
        if enum and node.get("type") in ("integer", "number") and all(isinstance(v, int | float) for v in enum):
            # Gemini's converter takes only string enums: publish the range and name the set; the
            # argument model (a Literal) still refuses anything outside it
            del node["enum"]
            node["minimum"], node["maximum"] = min(enum), max(enum)
            allowed = "One of " + ", ".join(f"{v:g}" for v in enum) + "."
            node["description"] = f"{allowed} {node['description']}" if node.get("description") else allowed
    return schema


def published_output_schema(model: type[BaseModel]) -> JSON:
    """An output schema: like published_schema; a union of result shapes stays a top-level `anyOf`
    of objects, marked `type: object` (MCP's rule for output schemas)."""
    raw = raw_schema(model)
    if "properties" in raw:
        return published_schema(model)
    out: JSON = lean(raw)
    out.setdefault("type", "object")
    return out


def lean(node: Any, *, in_properties: bool = False) -> Any:
    """Flatten unions and drop what a model does not need to read (titles, null defaults)."""
    if isinstance(node, list):
        return [lean(v) for v in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # keys are argument names, values are schemas
        return {k: lean(v) for k, v in node.items()}
    out: JSON = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and _zero(value)):
            continue
        if key == "properties":
            out[key] = lean(value, in_properties=True)
        else:
            out[key] = lean(value)
    for key in ("anyOf", "oneOf"):
        if key in out:
            members = _flat_members(out.pop(key), out)
            if len(members) == 1:
                out = {**members[0], **out}
            else:
                out["anyOf"] = members
    return out


def _zero(value: Any) -> bool:
    """null, false, 0: a default that goes without saying."""
    return value is None or value is False or (type(value) in (int, float) and value == 0)


def _flat_members(members: list[JSON], parent: JSON) -> list[JSON]:
    """Splice nested unions into one list (nulls last); a nested union's description moves up, a
    member's own description (a class docstring) goes: the property's description speaks for it."""
    flat: list[JSON] = []
    for member in members:
        member = {k: v for k, v in member.items() if k != "description"} if "properties" in member else member
        inner = member.get("anyOf") or member.get("oneOf")
        if inner is not None and set(member) <= {"anyOf", "oneOf", "description"}:
            if "description" in member:
                parent.setdefault("description", member["description"])
            flat.extend(_flat_members(inner, parent))
        else:
            flat.append(member)
    nulls = [m for m in flat if m == {"type": "null"}]
    return [m for m in flat if m != {"type": "null"}] + nulls[:1]


def walk(node: Any) -> Iterator[Any]:
    """Every schema object in a schema (for checks)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def nested_unions(schema: JSON) -> list[JSON]:
    """Union nodes with a union member: what langchain-google-genai cannot convert."""
    bad = []
    for node in walk(schema):
        for key in ("anyOf", "oneOf"):
            for member in node.get(key, []) if isinstance(node.get(key), list) else []:
                if isinstance(member, dict) and ("anyOf" in member or "oneOf" in member):
                    bad.append(node)
    return bad
