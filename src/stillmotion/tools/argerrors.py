"""Schema-level mistakes in the same form as the server's own checks.

A pydantic ValidationError becomes an InvalidInput: the argument's path (`camera.config.dolly`,
`dynamic_masks[0].trajectory`), the rule in words, the allowed values read from the tool's
schema, and a did-you-mean for near misses. No pydantic URLs, no error-type codes, under
MAX_ERROR_CHARS.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ..errors import InvalidInput
from ..plan.validation import did_you_mean
from .schema import JSON

MAX_ERROR_CHARS = 600
_SHOWN_VALUE = 40


def argument_error(exc: ValidationError, schema: JSON) -> InvalidInput:
    """The first problem of a failed validation, in the server's one error form."""
    errors = exc.errors(include_url=False)
    # an unknown name explains the rest (a typo'd key also makes its real key "missing")
    errors.sort(key=lambda e: 0 if e["type"] == "extra_forbidden" else 1)
    first = _describe(errors[0], schema)
    others = sorted({_path(e["loc"], schema)[0] for e in errors[1:]} - {first.argument})
    if others:
        more = f" Also invalid: {', '.join(others[:4])}{', ...' if len(others) > 4 else ''}."
        first = InvalidInput(first.argument, first.rule + more, first.allowed)
    return fit(first)


def fit(err: InvalidInput) -> InvalidInput:
    """Shorten the allowed values of an over-long message (never the argument or the rule)."""
    if len(err.message) <= MAX_ERROR_CHARS or not isinstance(err.allowed, list | tuple):
        return err
    allowed = [str(a) for a in err.allowed]
    while allowed and len(InvalidInput(err.argument, err.rule, [*allowed, "..."]).message) > MAX_ERROR_CHARS:
        allowed.pop()
    return InvalidInput(err.argument, err.rule, [*allowed, "..."])


def _path(loc: tuple[int | str, ...], schema: JSON) -> tuple[str, JSON | None, JSON | None]:
    """(display path, schema node at loc, parent node). Union tags in loc are skipped."""
    text = ""
    node: JSON | None = schema
    parent: JSON | None = None
    i = 0
    while i < len(loc):
        key = loc[i]
        if node is not None and isinstance(node.get("oneOf"), list):
            node = _tagged_member(node["oneOf"], str(key))  # loc names the tag here, not a field
            i += 1
            continue
        node = _concrete(node)
        parent = node
        if isinstance(key, int):
            text += f"[{key}]"
            node = node.get("items") if node is not None else None
        else:
            text += f".{key}" if text else key
            props = node.get("properties", {}) if node is not None else {}
            node = props.get(key)
        i += 1
    return text or "(arguments)", node, parent


def _concrete(node: JSON | None) -> JSON | None:
    """The non-null member of a nullable `anyOf` (a plain union: the first object member)."""
    if node is None or "anyOf" not in node:
        return node
    members = [m for m in node["anyOf"] if m.get("type") != "null"]
    if len(members) == 1:
        return _concrete({**members[0], **{k: v for k, v in node.items() if k != "anyOf"}})
    return node


def _tagged_member(members: list[JSON], tag: str) -> JSON | None:
    for m in members:
        if tag in m.get("properties", {}):
            return m
    return next((m for m in members if m.get("type") != "object"), None)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 3] + "..."


def _keys(node: JSON | None) -> list[str]:
    """Property names a node accepts (every object member of a union)."""
    if node is None:
        return []
    members = node.get("anyOf") or node.get("oneOf") or [node]
    out: list[str] = []
    for m in members:
        for k in (_concrete(m) or {}).get("properties", {}):
            if k not in out:
                out.append(k)
    return out


def summary(node: JSON | None) -> str | list[str] | None:
    """The allowed values of a schema node, in words."""
    node = _concrete(node)
    if node is None:
        return None
    if "enum" in node:
        return [str(v) for v in node["enum"]]
    if "const" in node:
        return [str(node["const"])]
    members = node.get("anyOf") or node.get("oneOf")
    if members:
        parts = [summary(m) for m in members if m.get("type") != "null"]
        return " or ".join(p if isinstance(p, str) else ", ".join(p) for p in parts if p)
    kind = node.get("type")
    if kind in ("integer", "number"):
        lo, hi = node.get("minimum"), node.get("maximum")
        noun = "an integer" if kind == "integer" else "a number"
        if lo is not None and hi is not None:
            return f"{noun} from {lo:g} to {hi:g}"
        if lo is not None:
            return f"{noun} >= {lo:g}"
        if hi is not None:
            return f"{noun} <= {hi:g}"
        return noun
    if kind == "string":
        lo, hi = node.get("minLength"), node.get("maxLength")
        if hi is not None:
            return f"a string of {lo or 0}-{hi} characters"
        return "a non-empty string" if lo else "a string"
    if kind == "boolean":
        return "true or false"
    if kind == "array":
        lo, hi = node.get("minItems"), node.get("maxItems")
        if lo is not None and hi is not None:
            count = f"{lo} " if lo == hi else f"{lo}-{hi} "
        elif hi is not None:
            count = f"at most {hi} "
        elif lo is not None:
            count = f"at least {lo} "
        else:
            count = ""
        inner = summary(node.get("items"))
        inner_text = inner if isinstance(inner, str) else "values"
        return f"a list of {count}items ({inner_text})"
    if kind == "object":
        return "an object {" + ", ".join(_keys(node)) + "}"
    return None


def _describe(err: ErrorDetails, schema: JSON) -> InvalidInput:
    kind = err["type"]
    loc = tuple(err["loc"])
    path, node, parent = _path(loc, schema)
    given = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _keys(parent)
        name = str(loc[-1])
        near = did_you_mean(name, allowed)
        what = "argument" if len(loc) == 1 else "field"
        rule = f"unknown {what}" + (f"; did you mean '{near}'?" if near else ".")
        return InvalidInput(path, rule, allowed)
    if kind == "missing":
        described = (_concrete(node) or {}).get("description") if node is not None else None
        return InvalidInput(path, "is required.", described.rstrip(".") if described else summary(node))
    if kind in ("literal_error", "enum"):
        allowed_values = summary(node)
        choices = allowed_values if isinstance(allowed_values, list) else []
        near = did_you_mean(str(given), choices) if isinstance(given, str) else None
        rule = f"{_shown(given)} is not allowed" + (f"; did you mean '{near}'?" if near else ".")
        return InvalidInput(path, rule, allowed_values)
    if kind in ("less_than_equal", "less_than", "greater_than_equal", "greater_than"):
        bound = ctx.get("le", ctx.get("lt", ctx.get("ge", ctx.get("gt"))))
        sign = {"less_than_equal": "<=", "less_than": "<", "greater_than_equal": ">=", "greater_than": ">"}[kind]
        shown_bound = f"{bound:g}" if isinstance(bound, int | float) else str(bound)
        return InvalidInput(path, f"must be {sign} {shown_bound}; got {_shown(given)}.", summary(node))
    if kind in ("string_too_long", "string_too_short"):
        n = len(given) if isinstance(given, str) else "?"
        return InvalidInput(path, f"is {n} characters long.", summary(node))
    if kind in ("too_long", "too_short"):
        n = ctx.get("actual_length", len(given) if isinstance(given, list | dict) else "?")
        return InvalidInput(path, f"has {n} items.", summary(node))
    if kind == "mask_type":
        return InvalidInput(path, f"got {_shown(given)}; {err['msg']}.", summary(node))
    expected = summary(node)
    return InvalidInput(path, f"got {_shown(given)}, which is not {_article(expected)}.", expected)


def _article(expected: str | list[str] | None) -> str:
    if expected is None:
        return "valid"
    if isinstance(expected, list):
        return "one of the allowed values"
    return expected if expected.startswith(("a ", "an ", "true")) else "valid"
