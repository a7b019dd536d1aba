"""Checking a class against a declared ``Protocol``, member by member (STYLE habit 14).

``members(P)`` lists every member ``P`` declares (methods, properties, annotated attributes), so a
test parametrized over it covers a member added later without being told. ``mismatch(P, cls, m)``
says how ``cls`` fails member ``m``, or returns ``None``:

- a method: the same parameters (names, kinds, defaults, types) and a return type that fits;
- a property or attribute: where ``cls`` declares it (a property, or a class annotation), a type
  that fits; one set only in ``__init__`` is found on an instance by ``isinstance(obj, P)``
  (``P`` is ``runtime_checkable``), which the tests check too.

Types are compared as declared, resolved with :func:`typing.get_type_hints` where the texts
differ: a type fits when it is the same, when the protocol says ``Any`` (or either side is a
type variable), member-wise for unions and generics, and where the protocol names another
protocol, when it is a class listed in ``implementations`` for it (``Job`` for ``JobAPI``).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any


def members(protocol: type) -> list[str]:
    """Every member ``protocol`` declares itself (not ``object``'s or ``Protocol``'s)."""
    names = [n for n, v in vars(protocol).items() if not n.startswith("_") and _is_member(v)]
    names += [n for n in vars(protocol).get("__annotations__", {}) if n not in names]
    return names


def _is_member(value: Any) -> bool:
    return inspect.isfunction(value) or isinstance(value, property)


def mismatch(
    protocol: type, cls: type, name: str, implementations: Mapping[type, tuple[type, ...]] = {}
) -> str | None:
    """How ``cls`` fails ``protocol``'s member ``name``; ``None`` when it satisfies it."""
    declared = inspect.getattr_static(protocol, name, None)
    found = inspect.getattr_static(cls, name, None)
    if inspect.isfunction(declared):
        if not inspect.isfunction(found):
            return f"{cls.__name__}.{name} is not a method"
        return _signature_mismatch(declared, found, implementations)
    if inspect.isfunction(found):
        return f"{cls.__name__}.{name} is a method; {protocol.__name__} declares a value"
    # A property or an annotated attribute: its type, where the class declares one (one set only
    # in ``__init__`` is checked on an instance, by ``isinstance(obj, protocol)``).
    have = _member_type(cls, name)
    if have is _UNDECLARED:
        return None
    want = _member_type(protocol, name)
    if not _fits(want, have, implementations):
        return f"{cls.__name__}.{name}: {have!r} does not fit {want!r}"
    return None


_UNDECLARED: Any = object()


def _member_type(cls: type, name: str) -> Any:
    value = inspect.getattr_static(cls, name, None)
    if isinstance(value, property):
        return typing.get_type_hints(value.fget).get("return", Any)
    return typing.get_type_hints(cls).get(name, _UNDECLARED)


def _signature_mismatch(
    declared: Any, found: Any, implementations: Mapping[type, tuple[type, ...]]
) -> str | None:
    want, have = inspect.signature(declared), inspect.signature(found)
    where = found.__qualname__
    wp, hp = list(want.parameters.values()), list(have.parameters.values())
    if [(p.name, p.kind, p.default) for p in wp] != [(p.name, p.kind, p.default) for p in hp]:
        return f"{where}{have} has other parameters than {want}"
    if want == have:  # the same text: the same types
        return None
    want_hints, have_hints = typing.get_type_hints(declared), typing.get_type_hints(found)
    for p in wp:
        w, h = want_hints.get(p.name, Any), have_hints.get(p.name, Any)
        if not (_fits(w, h, implementations) and _fits(h, w, implementations)):
            return f"{where}: parameter {p.name} is {h!r}, not {w!r}"
    w, h = want_hints.get("return", Any), have_hints.get("return", Any)
    if not _fits(w, h, implementations):
        return f"{where} returns {h!r}, which does not fit {w!r}"
    return None


def _fits(want: Any, have: Any, implementations: Mapping[type, tuple[type, ...]]) -> bool:
    """Whether a value of type ``have`` can stand where ``want`` is declared."""
    if want is Any or want == have or isinstance(want, typing.TypeVar) or isinstance(have, typing.TypeVar):
        return True
    if _is_union(have):
        return all(_fits(want, h, implementations) for h in typing.get_args(have))
    if _is_union(want):
        return any(_fits(w, have, implementations) for w in typing.get_args(want))
    have_class = typing.get_origin(have) or have
    if want in implementations:
        return isinstance(have_class, type) and issubclass(have_class, implementations[want])
    want_origin = typing.get_origin(want)
    if want_origin is None or want_origin is not typing.get_origin(have):
        return False
    want_args, have_args = _flat_args(want), _flat_args(have)
    return len(want_args) == len(have_args) and all(
        _fits(w, h, implementations) for w, h in zip(want_args, have_args, strict=True)
    )


def _is_union(t: Any) -> bool:
    return typing.get_origin(t) in (typing.Union, types.UnionType)


def _flat_args(t: Any) -> list[Any]:
    """A generic's arguments, ``Callable[[A, B], R]``'s parameter list flattened into them."""
    out: list[Any] = []
    for a in typing.get_args(t):
        out.extend(a if isinstance(a, list) else [a])
    return out
