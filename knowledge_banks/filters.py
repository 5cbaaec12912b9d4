"""Metadata filter dicts -> Python predicates, shared by every knowledge-bank backend.

The filter language is the small Mongo-like one LangChain users already write::

    {"source": "faq"}                                  # equality (shorthand for {"$eq": ...})
    {"year": {"$gte": 2020, "$lt": 2024}}              # several operators on one field = AND
    {"lang": {"$in": ["en", "fr"]}, "draft": {"$ne": True}}   # several fields = AND
    {"$or": [{"source": "faq"}, {"$and": [{"year": {"$gt": 2020}}, {"lang": "en"}]}]}
    {"$not": {"source": "faq"}}

Field operators: ``$eq $ne $in $nin $gt $gte $lt $lte $exists``. Logical: ``$and $or $not``.

Semantics (documented so the Elasticsearch / Azure translations can match them):

- A missing field never satisfies ``$eq``/``$in``/ranges and always satisfies ``$ne``/``$nin``.
- When the stored value is a list, ``$eq``/``$in`` match if any element matches and
  ``$ne``/``$nin`` match if no element does (Mongo's array semantics).
- Range comparisons between incomparable types (``"a" < 3``) are False, never an error; ``None`` is
  not ordered. Booleans are not numbers here: ``{"n": {"$gt": 0}}`` does not match ``n=True``.
- A malformed filter (unknown operator, ``$in`` without a list, empty ``$and``) raises
  :class:`FilterError` when compiled, not when a document is tested.

A callable is accepted as-is (``lambda metadata: ...``), for callers that need more.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union

from langchain_mesh.errors import MeshError

Predicate = Callable[[Mapping[str, Any]], bool]
FilterSpec = Union[Mapping[str, Any], Predicate, None]

__all__ = ["FilterError", "FilterSpec", "Predicate", "compile_filter", "matches"]

_MISSING = object()
FIELD_OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists")
LOGICAL_OPERATORS = ("$and", "$or", "$not")


class FilterError(MeshError, ValueError):
    """A metadata filter that cannot be compiled (a :class:`MeshError`; a ValueError as before)."""


def compile_filter(spec: FilterSpec) -> Optional[Predicate]:
    """Compile a filter dict (or pass a callable through); ``None`` / ``{}`` -> ``None`` (match all)."""
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, Mapping):
        return spec
    if not isinstance(spec, Mapping):
        raise FilterError(f"a metadata filter must be a dict or a callable, not {type(spec).__name__}")
    if not spec:
        return None
    return _compile_clause(spec, "filter")


def matches(spec: FilterSpec, metadata: Mapping[str, Any]) -> bool:
    """One-off test of ``metadata`` against ``spec`` (compile once with :func:`compile_filter` in loops)."""
    pred = compile_filter(spec)
    return True if pred is None else bool(pred(metadata))


# ---- compilation -----------------------------------------------------------------------------------


def _compile_clause(spec: Mapping[str, Any], where: str) -> Predicate:
    preds: list[Predicate] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"{where}: field names must be strings, got {key!r}")
        if key.startswith("$"):
            preds.append(_compile_logical(key, value, where))
        else:
            preds.append(_compile_field(key, value, f"{where}.{key}"))
    return _all(preds)


def _compile_logical(op: str, value: Any, where: str) -> Predicate:
    if op in ("$and", "$or"):
        if not isinstance(value, (list, tuple)) or not value:
            raise FilterError(f"{where}: {op} takes a non-empty list of filters, got {value!r}")
        subs = []
        for i, sub in enumerate(value):
            if not isinstance(sub, Mapping):
                raise FilterError(f"{where}.{op}[{i}]: expected a filter dict, got {sub!r}")
            subs.append(_compile_clause(sub, f"{where}.{op}[{i}]"))
        return _all(subs) if op == "$and" else _any(subs)
    if op == "$not":
        if not isinstance(value, Mapping) or not value:
            raise FilterError(f"{where}: $not takes a filter dict, got {value!r}")
        sub = _compile_clause(value, f"{where}.$not")
        return lambda md: not sub(md)
    raise FilterError(f"{where}: unknown operator {op!r} (logical operators: {', '.join(LOGICAL_OPERATORS)};"
                      f" field operators go under a field name)")


def _compile_field(field: str, cond: Any, where: str) -> Predicate:
    if isinstance(cond, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in cond):
        if not all(isinstance(k, str) and k.startswith("$") for k in cond):
            raise FilterError(f"{where}: cannot mix operators and plain keys in {cond!r}")
        tests = [_compile_op(op, arg, f"{where}.{op}") for op, arg in cond.items()]
    else:
        tests = [_compile_op("$eq", cond, where)]

    def pred(md: Mapping[str, Any]) -> bool:
        value = md.get(field, _MISSING) if isinstance(md, Mapping) else _MISSING
        return all(t(value) for t in tests)

    return pred


def _compile_op(op: str, arg: Any, where: str) -> Callable[[Any], bool]:
    if op == "$eq":
        return lambda v: _eq(v, arg)
    if op == "$ne":
        return lambda v: not _eq(v, arg)
    if op in ("$in", "$nin"):
        if not isinstance(arg, (list, tuple, set, frozenset)):
            raise FilterError(f"{where}: {op} takes a list, got {arg!r}")
        options = list(arg)
        if op == "$in":
            return lambda v: any(_eq(v, o) for o in options)
        return lambda v: not any(_eq(v, o) for o in options)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if arg is None or isinstance(arg, (Mapping, list, tuple, bool)):
            raise FilterError(f"{where}: {op} takes a number, string or date, got {arg!r}")
        return lambda v: _compare(op, v, arg)
    if op == "$exists":
        if not isinstance(arg, bool):
            raise FilterError(f"{where}: $exists takes true or false, got {arg!r}")
        return lambda v: (v is not _MISSING) == arg
    raise FilterError(f"{where}: unknown operator {op!r} (field operators: {', '.join(FIELD_OPERATORS)})")


# ---- evaluation --------------------------------------------------------------------------------------


def _scalar_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):  # True is not 1 in a filter
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - exotic types: no match rather than a crash mid-search
        return False


def _eq(value: Any, target: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(value, (list, tuple)) and not isinstance(target, (list, tuple)):
        return any(_scalar_eq(x, target) for x in value)
    if isinstance(value, (list, tuple)) and isinstance(target, (list, tuple)):
        return list(value) == list(target)
    return _scalar_eq(value, target)


def _compare(op: str, value: Any, bound: Any) -> bool:
    if value is _MISSING or value is None or isinstance(value, bool):
        return False
    if isinstance(value, (list, tuple)):
        return any(_compare(op, x, bound) for x in value)
    try:
        if op == "$gt":
            return bool(value > bound)
        if op == "$gte":
            return bool(value >= bound)
        if op == "$lt":
            return bool(value < bound)
        return bool(value <= bound)
    except TypeError:
        return False


def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    return lambda md: all(p(md) for p in preds)


def _any(preds: list[Predicate]) -> Predicate:
    return lambda md: any(p(md) for p in preds)
