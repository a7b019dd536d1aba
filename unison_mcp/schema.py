"""Tool schemas every client accepts: a model's JSON schema, made compact and portable.

The request and result models stay the one source of each field, its type, bounds and words
(:mod:`engine.api`, :mod:`unison_mcp.models`); :func:`portable` only reshapes pydantic's JSON schema
for what the clients' converters accept (``tests/test_clients.py`` runs every tool through them):

- no ``$ref``/``$defs``: openai-agents' strict mode refuses a reference inside ``anyOf``, so
  every reference is inlined;
- no ``additionalProperties: false`` on nested objects: google-genai's MCP conversion crashes on a
  boolean there (the model still refuses unknown fields; strict converters add it themselves);
- an optional field is ``"type": [T, "null"]`` rather than ``anyOf [T, null]`` with
  ``default: null`` (a third of the size), except objects and enumerations, which keep the
  ``anyOf`` so that strict converters close the object and an enum's ``null`` stays valid;
- no ``title`` (the property's name says it), no referenced model's docstring, and a path's own
  description is not repeated under the field's (nor an item's under its list's).

Each bound is an inclusive ``minimum``/``maximum`` already (:class:`engine.bounds.Bound`), since
google-genai's typed schema refuses ``exclusiveMinimum``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Keywords dropped everywhere: ``title`` repeats the property's name.
_DROPPED = frozenset({"title", "$defs"})


def portable(schema: Mapping[str, Any], *, omit: Iterable[str] = (), nulls: bool = True) -> dict[str, Any]:
    """``schema`` (pydantic's JSON schema of a model) inlined and compacted; the top-level
    properties named in ``omit`` left out (options the server is not configured for).

    ``nulls=False`` is for results that leave an unset field out rather than send ``null``
    (:mod:`unison_mcp.models`): an optional field is then its plain type; and as a result's schema
    only describes what comes back, it lists no ``required`` fields and no defaults, and the
    model's own docstring is left to the tool's description.
    """
    defs = schema.get("$defs", {})
    out = _node(schema, defs, nulls)
    if not nulls:
        out.pop("description", None)
    left_out = set(omit)
    if left_out:
        out["properties"] = {k: v for k, v in out.get("properties", {}).items() if k not in left_out}
        if "required" in out:
            out["required"] = [k for k in out["required"] if k not in left_out]
    return out


def _node(node: Mapping[str, Any], defs: Mapping[str, Any], nulls: bool) -> dict[str, Any]:
    if "$ref" in node:
        # A referenced model's description is its docstring, written for developers: the field's
        # own words say what it is for.
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**{k: v for k, v in target.items() if k != "description"}, **node}
        del node["$ref"]
    if "anyOf" in node:
        nullable = _nullable(node, defs, nulls)
        if nullable is not None:
            return nullable
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "additionalProperties" and isinstance(value, bool)):
            continue
        if not nulls and key in ("required", "default"):
            continue
        if key == "properties":
            out[key] = {name: _node(sub, defs, nulls) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _node(value, defs, nulls)
            if key == "items" and "description" in node:
                out[key].pop("description", None)
        elif key == "anyOf":
            out[key] = [_node(sub, defs, nulls) for sub in value]
        else:
            out[key] = value
    return out


def _nullable(node: Mapping[str, Any], defs: Mapping[str, Any], nulls: bool) -> dict[str, Any] | None:
    """An ``anyOf [T, null]`` as ``"type": [T, "null"]`` (objects and enumerations keep the
    ``anyOf``), or as ``T`` without ``nulls``; ``None`` when ``node`` is another kind of union."""
    branches = [b for b in node["anyOf"] if b != {"type": "null"}]
    if len(branches) != 1 or len(branches) == len(node["anyOf"]):
        return None
    inner = _node(branches[0], defs, nulls)
    outer = {k: v for k, v in node.items() if k not in _DROPPED and k != "anyOf"}
    if outer.get("default", 0) is None:
        del outer["default"]
    if "description" in outer:
        inner.pop("description", None)
    if not nulls:
        outer.pop("default", None)
        return {**inner, **outer}
    kind = inner.get("type")
    if not isinstance(kind, str) or kind == "object" or "enum" in inner:
        return {**outer, "anyOf": [inner, {"type": "null"}]}
    return {**inner, **outer, "type": [kind, "null"]}


__all__ = ["portable"]
