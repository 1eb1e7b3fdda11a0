"""``evolve``: ``dataclasses.replace`` for the hot paths of the pure core.

The core keeps its state in frozen dataclasses and makes a new one per change (jobs per
WebSocket message, pool health per request or ``status`` message). ``replace`` reads every
field through ``getattr`` and runs ``__init__`` with its per-field ``object.__setattr__``;
under Pyodide that was most of a progress message's job-state cost. Copying the instance
dict does the same for the classes it is used on: frozen, not slotted, no ``__post_init__``
(checked once per class; any other class goes through ``replace``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

T = TypeVar("T")

_FIELDS: dict[type, frozenset[str] | None] = {}


def _copyable(cls: type) -> frozenset[str] | None:
    known = _FIELDS.get(cls, ...)
    if known is not ...:
        return known  # type: ignore[return-value]
    ok = (hasattr(cls, "__dataclass_fields__") and not hasattr(cls, "__post_init__")
          and "__slots__" not in cls.__dict__)
    names = frozenset(f.name for f in fields(cls)) if ok else None
    _FIELDS[cls] = names
    return names


def evolve(obj: T, changes: dict[str, Any]) -> T:
    """A copy of the dataclass instance ``obj`` with ``changes`` applied; a misspelt field is
    a ``TypeError``, as with ``replace``."""
    cls = type(obj)
    names = _copyable(cls)
    if names is None:
        return replace(obj, **changes)  # type: ignore[type-var]
    if not changes.keys() <= names:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(changes.keys() - names)}")
    new = object.__new__(cls)
    d = new.__dict__
    d.update(obj.__dict__)
    d.update(changes)
    return new
