"""Metadata filter dicts (:mod:`knowledge_banks.filters`) -> Azure AI Search OData ``$filter`` strings.

The translation keeps filters.py's semantics, which the FAISS store evaluates in Python:

- a missing field (null in Azure) never satisfies ``$eq``/``$in``/ranges and always satisfies
  ``$ne``/``$nin``: OData's ``x eq 'a'`` is false and ``x ne 'a'`` true on null, and ``search.in``
  is false on null, so the plain operators already agree;
- list values are ``Collection(...)`` fields: ``$eq``/``$in``/ranges become ``f/any(v: ...)``,
  ``$ne``/``$nin`` become ``not f/any(v: ...)`` (no element matches);
- a field the index does not have yet has no value in any document: the clause folds to the
  constant ``true``/``false`` instead of an OData error about an unknown property;
- a literal of the wrong type for the field (``{"year": "2020"}`` on an Int64 field) matches
  nothing, as in Python where ``2020 != "2020"``; Azure would reject the comparison outright;
- ``$exists`` is ``ne null`` / ``eq null`` (``any()`` for collections). Azure cannot store
  "present but null", so ``{"x": {"$exists": True}}`` does not match ``x=None`` here.

Literals: strings in single quotes with ``'`` doubled (OData's only escape); ``search.in`` takes a
delimiter we pick from characters absent from every value, so commas or spaces in values are safe.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Mapping, Optional

from ...filters import FilterError, compile_filter

__all__ = ["to_odata", "odata_string", "odata_literal", "filter_keys", "EDM_TYPES"]

# metadata-schema type -> Edm type of the typed field
EDM_TYPES = {"string": "Edm.String", "int": "Edm.Int64", "float": "Edm.Double", "bool": "Edm.Boolean",
             "date": "Edm.DateTimeOffset"}

_RANGE = {"$gt": "gt", "$gte": "ge", "$lt": "lt", "$lte": "le"}
_DELIMITERS = ",|;~^`#!"
TRUE, FALSE = "true", "false"


def odata_string(value: str) -> str:
    """``O'Brien`` -> ``'O''Brien'``."""
    return "'" + value.replace("'", "''") + "'"


def _scalar_type(edm: str) -> str:
    return edm[len("Collection("):-1] if edm.startswith("Collection(") else edm


def odata_literal(value: Any, edm: str) -> Optional[str]:
    """The literal for ``value`` compared with an ``edm`` field, or None when no value of that field
    can equal it (the caller folds the comparison to a constant)."""
    t = _scalar_type(edm)
    if value is None:
        return "null"
    if t == "Edm.String":
        return odata_string(value) if isinstance(value, str) else None
    if t == "Edm.Boolean":
        return (TRUE if value else FALSE) if isinstance(value, bool) else None
    if isinstance(value, bool):  # booleans are not numbers in a filter (filters.py)
        return None
    if t == "Edm.Int64":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value) if isinstance(value, int) else (repr(float(value)) if isinstance(value, float)
                                                          and math.isfinite(value) else None)
    if t in ("Edm.Double", "Edm.Single"):
        if isinstance(value, (int, float)) and math.isfinite(value):
            return repr(float(value)) if isinstance(value, float) else str(value)
        return None
    if t == "Edm.DateTimeOffset":
        return _datetime_literal(value)
    return None


def _datetime_literal(value: Any) -> Optional[str]:
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:  # naive datetimes are stored as UTC (see the store)
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, _dt.date):
        return f"{value.isoformat()}T00:00:00Z"
    return None


def to_odata(spec: Any, fields: Mapping[str, str], field_names: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Translate a filter dict; ``fields`` maps index field names to Edm types, ``field_names`` maps
    metadata keys to field names (identity when absent). ``None`` / ``{}`` -> None (no filter).

    Raises :class:`FilterError` for what filters.py rejects, and for callables (Python predicates
    cannot run in the service)."""
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return None
    if callable(spec) and not isinstance(spec, Mapping):
        raise FilterError("Azure AI Search filters must be filter dicts; a Python callable cannot run in the service")
    compile_filter(spec)  # same validation and error messages as every other backend
    out = _Translator(fields, field_names if field_names is not None else {}).clause(spec)
    return None if out == TRUE else out


def filter_keys(spec: Any) -> set[str]:
    """The metadata keys a filter dict names (at any depth)."""
    keys: set[str] = set()
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if key in ("$and", "$or"):
                for sub in value if isinstance(value, (list, tuple)) else []:
                    keys |= filter_keys(sub)
            elif key == "$not":
                keys |= filter_keys(value)
            elif isinstance(key, str) and not key.startswith("$"):
                keys.add(key)
    return keys


class _Translator:
    def __init__(self, fields: Mapping[str, str], names: Mapping[str, str]):
        self.fields = fields
        self.names = names

    def clause(self, spec: Mapping[str, Any]) -> str:
        parts = []
        for key, value in spec.items():
            if key in ("$and", "$or"):
                subs = [self.clause(s) for s in value]
                parts.append(_and(subs) if key == "$and" else _or(subs))
            elif key == "$not":
                parts.append(_not(self.clause(value)))
            else:
                parts.append(self.field(key, value))
        return _and(parts)

    def field(self, key: str, cond: Any) -> str:
        if isinstance(cond, Mapping) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
            ops = list(cond.items())
        else:
            ops = [("$eq", cond)]
        name = self.names.get(key, key)
        edm = self.fields.get(name)
        return _and([self.op(name, edm, op, arg) for op, arg in ops])

    def op(self, name: str, edm: Optional[str], op: str, arg: Any) -> str:
        if edm is None:  # no such field: every document misses it
            return _missing(op, arg)
        coll = edm.startswith("Collection(")
        if op == "$exists":
            present = f"{name}/any()" if coll else f"{name} ne null"
            return present if arg else _not(present)
        if op in ("$eq", "$ne"):
            if isinstance(arg, (list, tuple)):
                # whole-list equality (filters.py compares lists element-wise); OData has no such
                # operator, so it is only supported as "contains all of them" when exact length is moot
                raise FilterError(f"filter on {name!r}: comparing a whole list is not supported by Azure AI "
                                  f"Search; use $in")
            hit = self.eq(name, edm, coll, arg)
            return hit if op == "$eq" else _not(hit)
        if op in ("$in", "$nin"):
            hit = _or([self.eq(name, edm, coll, a) for a in arg]) if arg else FALSE
            if arg and all(isinstance(a, str) for a in arg) and _scalar_type(edm) == "Edm.String":
                hit = self.search_in(name, coll, list(arg))
            return hit if op == "$in" else _not(hit)
        # ranges
        lit = odata_literal(arg, edm)
        if lit is None or lit == "null" or _scalar_type(edm) == "Edm.Boolean":
            return FALSE
        if coll and _scalar_type(edm) == "Edm.String":
            # the service only allows eq / search.in inside any() on string collections
            raise FilterError(f"filter on {name!r}: Azure AI Search cannot compare a list of strings with {op}")
        var = "v" if coll else name
        expr = f"{var} {_RANGE[op]} {lit}"
        return f"{name}/any(v: {expr})" if coll else expr

    def eq(self, name: str, edm: str, coll: bool, value: Any) -> str:
        lit = odata_literal(value, edm)
        if lit is None:
            return FALSE
        if lit == "null":  # {"x": None}: absent or null (Azure keeps no difference)
            return f"not {name}/any()" if coll else f"{name} eq null"
        return f"{name}/any(v: v eq {lit})" if coll else f"{name} eq {lit}"

    def search_in(self, name: str, coll: bool, values: list[str]) -> str:
        delim = next((d for d in _DELIMITERS if not any(d in v for v in values)), None)
        if delim is None:  # every delimiter occurs in some value: spell it out
            return _or([f"{name}/any(v: v eq {odata_string(v)})" if coll else f"{name} eq {odata_string(v)}"
                        for v in values])
        arg = odata_string(delim.join(values))
        var = "v" if coll else name
        call = f"search.in({var}, {arg}, {odata_string(delim)})"
        return f"{name}/any(v: {call})" if coll else call


def _missing(op: str, arg: Any) -> str:
    if op == "$exists":
        return FALSE if arg else TRUE
    if op in ("$ne", "$nin"):
        return TRUE
    return FALSE


def _and(parts: list[str]) -> str:
    if any(p == FALSE for p in parts):
        return FALSE
    parts = [p for p in parts if p != TRUE]
    if not parts:
        return TRUE
    return parts[0] if len(parts) == 1 else " and ".join(f"({p})" for p in parts)


def _or(parts: list[str]) -> str:
    if any(p == TRUE for p in parts):
        return TRUE
    parts = [p for p in parts if p != FALSE]
    if not parts:
        return FALSE
    return parts[0] if len(parts) == 1 else " or ".join(f"({p})" for p in parts)


def _not(expr: str) -> str:
    if expr in (TRUE, FALSE):
        return FALSE if expr == TRUE else TRUE
    return f"not ({expr})"
