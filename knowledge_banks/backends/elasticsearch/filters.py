"""Shared metadata filter dicts (:mod:`knowledge_banks.filters`) -> Elasticsearch bool/term/range queries.

The translation keeps the Python semantics exactly, which Elasticsearch does not give for free:

- ES coerces across types (``"2000"`` matches a numeric 2000; ``1`` matches ``true`` on some fields),
  while the shared filters never equate values of different types. So each clause is built for the
  field's *mapped* type (read from the index mapping): a value of another type matches nothing
  (``match_none``), and its negation everything.
- ES indexes neither ``null`` nor the key of an empty list, yet ``{"f": None}`` and
  ``{"f": {"$exists": True}}`` must see them. Documents therefore carry two keyword fields written
  by the store: ``metadata_keys`` (every top-level metadata key present) and ``metadata_nulls``
  (keys whose value is ``None`` or a list holding ``None``).
- A missing field satisfies ``$ne``/``$nin`` (``must_not`` gives that) and never ``$eq``/ranges.
- Array values: ``term`` matches if any element matches, as Mongo-style ``$eq`` does.

Not expressible (a :class:`~knowledge_banks.filters.FilterError` is raised, never a silent
mismatch): equality with a whole list or dict value, and callables.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping, Optional

from ...filters import FilterError, compile_filter

__all__ = ["KEYS_FIELD", "NULLS_FIELD", "METADATA_FIELD", "translate_filter", "filter_fields", "metadata_markers"]

METADATA_FIELD = "metadata"
KEYS_FIELD = "metadata_keys"
NULLS_FIELD = "metadata_nulls"

MATCH_NONE: dict[str, Any] = {"match_none": {}}
MATCH_ALL: dict[str, Any] = {"match_all": {}}
_NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}
_RANGE_OPS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


def metadata_markers(metadata: Mapping[str, Any]) -> dict[str, list[str]]:
    """The ``metadata_keys`` / ``metadata_nulls`` fields a stored document carries."""
    nulls = [k for k, v in metadata.items() if v is None or isinstance(v, list) and any(x is None for x in v)]
    return {KEYS_FIELD: list(metadata), NULLS_FIELD: nulls}


def filter_fields(spec: Any) -> set[str]:
    """Metadata field names a filter dict mentions (to know which mapped types are needed)."""
    out: set[str] = set()
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if key in ("$and", "$or"):
                for sub in value or []:
                    out |= filter_fields(sub)
            elif key == "$not":
                out |= filter_fields(value)
            elif isinstance(key, str) and not key.startswith("$"):
                out.add(key)
    return out


def translate_filter(spec: Any, types: Mapping[str, str]) -> Optional[dict[str, Any]]:
    """A filter dict -> one ES query clause (``None`` for no filter). ``types``: metadata field -> ES type.

    The dict is first compiled by :func:`~knowledge_banks.filters.compile_filter`, so a malformed one
    raises the same :class:`FilterError` on every backend.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return None
    if callable(spec) and not isinstance(spec, Mapping):
        raise FilterError("Elasticsearch filters must be filter dicts; a Python callable cannot run in the cluster")
    compile_filter(spec)  # validation, with the shared error messages
    return _clause(spec, types)


def _clause(spec: Mapping[str, Any], types: Mapping[str, str]) -> dict[str, Any]:
    parts = []
    for key, value in spec.items():
        if key == "$and":
            parts.append(_all([_clause(s, types) for s in value]))
        elif key == "$or":
            parts.append(_any([_clause(s, types) for s in value]))
        elif key == "$not":
            parts.append(_not(_clause(value, types)))
        elif isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
            parts.extend(_field_op(key, op, arg, types.get(key)) for op, arg in value.items())
        else:
            parts.append(_field_op(key, "$eq", value, types.get(key)))
    return _all(parts)


def _field_op(name: str, op: str, arg: Any, ftype: Optional[str]) -> dict[str, Any]:
    if op == "$eq":
        return _eq(name, arg, ftype)
    if op == "$ne":
        return _not(_eq(name, arg, ftype))
    if op == "$in":
        return _any([_eq(name, o, ftype) for o in arg])
    if op == "$nin":
        return _not(_any([_eq(name, o, ftype) for o in arg]))
    if op in _RANGE_OPS:
        value = _comparable(arg, ftype)
        if value is None:
            return MATCH_NONE
        return {"range": {f"{METADATA_FIELD}.{name}": {_RANGE_OPS[op]: value}}}
    if op == "$exists":
        present = {"term": {KEYS_FIELD: name}}
        return present if arg else _not(present)
    raise FilterError(f"unknown operator {op!r}")  # pragma: no cover - compile_filter caught it


def _eq(name: str, value: Any, ftype: Optional[str]) -> dict[str, Any]:
    if value is None:
        return {"term": {NULLS_FIELD: name}}
    if isinstance(value, (list, tuple, dict)):
        raise FilterError(f"filter on {name!r}: equality with a whole list or object cannot be expressed in "
                          f"Elasticsearch; compare single values ($eq / $in)")
    comparable = _comparable(value, ftype)
    if comparable is None:
        return MATCH_NONE
    return {"term": {f"{METADATA_FIELD}.{name}": comparable}}


def _comparable(value: Any, ftype: Optional[str]) -> Any:
    """The value as the field's type indexes it, or None when no stored value can equal/compare to it."""
    if ftype is None:  # no document has this field
        return None
    if isinstance(value, (_dt.datetime, _dt.date)):
        value = value.isoformat()
    if ftype == "keyword":
        return value if isinstance(value, str) else None
    if ftype in _NUMERIC:
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if ftype == "boolean":
        return value if isinstance(value, bool) else None
    if ftype == "date":
        return value if isinstance(value, str) else None
    return None  # objects, text: nothing a scalar filter can equal


# ---- boolean algebra with the trivial cases folded (smaller queries, same meaning) ------------------


def _all(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if any(p == MATCH_NONE for p in parts):
        return MATCH_NONE
    parts = [p for p in parts if p != MATCH_ALL]
    if not parts:
        return MATCH_ALL
    return parts[0] if len(parts) == 1 else {"bool": {"filter": parts}}


def _any(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if any(p == MATCH_ALL for p in parts):
        return MATCH_ALL
    parts = [p for p in parts if p != MATCH_NONE]
    if not parts:
        return MATCH_NONE
    return parts[0] if len(parts) == 1 else {"bool": {"should": parts, "minimum_should_match": 1}}


def _not(part: dict[str, Any]) -> dict[str, Any]:
    if part == MATCH_ALL:
        return MATCH_NONE
    if part == MATCH_NONE:
        return MATCH_ALL
    return {"bool": {"must_not": [part]}}
