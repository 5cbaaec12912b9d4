"""An OData ``$filter`` parser and evaluator for the local Azure AI Search server.

The subset Azure AI Search accepts that the stores and SDK users send: comparisons ``eq ne gt ge lt
le`` between a field path (or a lambda variable) and a literal, ``and``/``or``/``not``, parentheses,
``search.in(field, 'a,b', ',')`` (default delimiters: space and comma), the boolean literals as whole
expressions, and ``any()`` / ``any(v: ...)`` / ``all(v: ...)`` on collection fields. Literals:
``'strings'`` (``''`` escapes a quote), integers, decimals and exponents, ``true``/``false``/``null``,
unquoted ISO-8601 ``DateTimeOffset`` values.

Semantics follow the service: ``null`` (a missing value) equals only ``null``; ``ne`` is true when
the value is null; ordering comparisons with null are false; string equality is case-sensitive;
unknown fields and type mismatches are errors (HTTP 400), as are non-filterable fields.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

__all__ = ["ODataError", "parse_filter", "compile_filter", "parse_datetime"]


class ODataError(ValueError):
    """An invalid ``$filter`` (the server answers 400 with this message)."""


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<punct>[()/,:])
""", re.VERBOSE)

_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(src: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None:
            raise ODataError(f"Invalid expression: Syntax error at position {pos} in '{src}'.")
        if m.lastgroup != "ws":
            out.append(_Tok(m.lastgroup or "", m.group(), pos))
        pos = m.end()
    out.append(_Tok("end", "", pos))
    return out


def parse_datetime(text: str) -> _dt.datetime:
    value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)


# AST nodes are tuples: ("and", a, b) ("or", a, b) ("not", a) ("cmp", op, left, right) ("const", v)
# ("field", path) ("var", name) ("in", operand, values) ("any", path, var|None, body|None) ("all", path, var, body)


class _Parser:
    def __init__(self, src: str, fields: Mapping[str, Mapping[str, Any]]):
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0
        self.fields = fields
        self.vars: dict[str, str] = {}  # lambda variable -> element Edm type

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok.text != text:
            raise ODataError(f"Invalid expression: Expected '{text}' at position {tok.pos} in '{self.src}'.")

    def parse(self) -> tuple:
        node = self.or_expr()
        if self.peek().kind != "end":
            tok = self.peek()
            raise ODataError(f"Invalid expression: Syntax error at position {tok.pos} in '{self.src}'.")
        self.check_boolean(node)
        return node

    def check_boolean(self, node: tuple) -> None:
        if node[0] == "field" and self.field_type(node[1]) != "Edm.Boolean":
            raise ODataError(f"Invalid expression: The field '{node[1]}' is not a Boolean and cannot be used "
                             f"as a filter on its own.")
        if node[0] == "const" and not isinstance(node[1], bool):
            raise ODataError("Invalid expression: A filter must be a Boolean expression.")

    def or_expr(self) -> tuple:
        node = self.and_expr()
        while self.peek().text == "or":
            self.next()
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self) -> tuple:
        node = self.not_expr()
        while self.peek().text == "and":
            self.next()
            node = ("and", node, self.not_expr())
        return node

    def not_expr(self) -> tuple:
        if self.peek().text == "not":
            self.next()
            inner = self.not_expr()
            self.check_boolean(inner)
            return ("not", inner)
        return self.comparison()

    def comparison(self) -> tuple:
        left = self.primary()
        if self.peek().text in _COMPARISONS:
            op = self.next().text
            right = self.primary()
            return self.typed_comparison(op, left, right)
        return left

    def primary(self) -> tuple:
        tok = self.peek()
        if tok.text == "(":
            self.next()
            node = self.or_expr()
            self.expect(")")
            return node
        if tok.kind == "string":
            self.next()
            return ("const", tok.text[1:-1].replace("''", "'"))
        if tok.kind == "number":
            self.next()
            return ("const", float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text))
        if tok.kind == "datetime":
            self.next()
            return ("const", parse_datetime(tok.text))
        if tok.kind == "name":
            self.next()
            if tok.text in ("true", "false"):
                return ("const", tok.text == "true")
            if tok.text == "null":
                return ("const", None)
            if tok.text in ("search.in", "search.ismatch", "search.ismatchscoring", "geo.distance"):
                return self.function(tok)
            return self.path(tok)
        raise ODataError(f"Invalid expression: Syntax error at position {tok.pos} in '{self.src}'.")

    def path(self, tok: _Tok) -> tuple:
        name = tok.text
        if name in self.vars:
            return ("var", name)
        self.field_type(name)  # validates
        if self.peek().text == "/":
            self.next()
            fn = self.next()
            if fn.text not in ("any", "all"):
                raise ODataError(f"Invalid expression: Unsupported path segment '{fn.text}' after '{name}'.")
            elem = self.collection_element(name)
            self.expect("(")
            if self.peek().text == ")":
                self.next()
                if fn.text == "all":
                    raise ODataError("Invalid expression: all() requires a lambda expression.")
                return ("any", name, None, None)
            var = self.next()
            if var.kind != "name":
                raise ODataError(f"Invalid expression: Expected a range variable at position {var.pos}.")
            self.expect(":")
            self.vars[var.text] = elem
            body = self.or_expr()
            del self.vars[var.text]
            self.expect(")")
            self.check_lambda(fn.text, elem, body)
            return (fn.text, name, var.text, body)
        return ("field", name)

    def check_lambda(self, kind: str, elem: str, body: tuple) -> None:
        # The service's rules for string collections: any() bodies are eq / search.in joined by or,
        # all() bodies are ne / not search.in joined by and. Numeric collections allow ranges too.
        if elem != "Edm.String":
            return
        ok_ops = {"eq"} if kind == "any" else {"ne"}

        def allowed(node: tuple, negated: bool) -> bool:
            if node[0] == "or" and kind == "any" and not negated:
                return allowed(node[1], negated) and allowed(node[2], negated)
            if node[0] == "and" and kind == "all":
                return allowed(node[1], negated) and allowed(node[2], negated)
            if node[0] == "not" and kind == "all":
                return node[1][0] == "in"
            if node[0] == "cmp":
                return node[1] in ok_ops
            return node[0] == "in" and kind == "any"

        if not allowed(body, False):
            raise ODataError(f"Invalid expression: Invalid lambda expression. Found a test for {kind}() on a "
                             f"string collection that the service does not support; any() allows 'eq' and "
                             f"search.in combined with 'or', all() allows 'ne' and 'not search.in' with 'and'.")

    def function(self, tok: _Tok) -> tuple:
        if tok.text != "search.in":
            raise ODataError(f"Invalid expression: the function '{tok.text}' is not supported by this test server.")
        self.expect("(")
        target = self.primary()
        if target[0] not in ("field", "var"):
            raise ODataError("Invalid expression: search.in's first argument must be a field or range variable.")
        self.expect(",")
        values = self.next()
        if values.kind != "string":
            raise ODataError("Invalid expression: search.in's second argument must be a string literal.")
        delims = " ,"
        if self.peek().text == ",":
            self.next()
            d = self.next()
            if d.kind != "string":
                raise ODataError("Invalid expression: search.in's third argument must be a string literal.")
            delims = d.text[1:-1].replace("''", "'")
        self.expect(")")
        raw = values.text[1:-1].replace("''", "'")
        parts = [p for p in re.split("|".join(re.escape(c) for c in delims), raw) if p != ""] if delims else [raw]
        edm = self.operand_type(target)
        if edm != "Edm.String":
            raise ODataError("Invalid expression: search.in applies to string fields only.")
        return ("in", target, frozenset(parts))

    # ---- types -----------------------------------------------------------------------------------

    def field_type(self, name: str) -> str:
        f = self.fields.get(name)
        if f is None:
            raise ODataError(f"Invalid expression: Could not find a property named '{name}' on type "
                             f"'search.document'.")
        if not f.get("filterable", True):
            raise ODataError(f"Invalid expression: The field '{name}' is not filterable. Only filterable fields "
                             f"can be used in filter expressions.")
        return f["type"]

    def collection_element(self, name: str) -> str:
        t = self.field_type(name)
        if not t.startswith("Collection("):
            raise ODataError(f"Invalid expression: '{name}' is not a collection; any() and all() apply to "
                             f"collection fields.")
        return t[len("Collection("):-1]

    def operand_type(self, node: tuple) -> Optional[str]:
        if node[0] == "field":
            t = self.field_type(node[1])
            if t.startswith("Collection("):
                raise ODataError(f"Invalid expression: The collection field '{node[1]}' can only be tested with "
                                 f"any() or all().")
            return t
        if node[0] == "var":
            return self.vars[node[1]]
        return None

    def typed_comparison(self, op: str, left: tuple, right: tuple) -> tuple:
        if left[0] == "const" and right[0] != "const":  # 5 lt year -> year gt 5
            left, right = right, left
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        if left[0] not in ("field", "var") or right[0] != "const":
            raise ODataError("Invalid expression: Comparisons must be between a field (or range variable) and a "
                             "literal.")
        edm = self.operand_type(left)
        value = right[1]
        if value is None:
            if op not in ("eq", "ne"):
                raise ODataError("Invalid expression: null can only be compared with 'eq' or 'ne'.")
        elif not _literal_fits(edm or "", value):
            raise ODataError(f"Invalid expression: Cannot compare a field of type '{edm}' with the literal "
                             f"{value!r}.")
        elif edm == "Edm.Boolean" and op not in ("eq", "ne"):
            raise ODataError("Invalid expression: Boolean fields can only be compared with 'eq' or 'ne'.")
        if edm == "Edm.DateTimeOffset" and isinstance(value, str):
            value = parse_datetime(value)
        return ("cmp", op, left, ("const", value))


def _literal_fits(edm: str, value: Any) -> bool:
    if edm == "Edm.String":
        return isinstance(value, str)
    if edm == "Edm.Boolean":
        return isinstance(value, bool)
    if edm in ("Edm.Int32", "Edm.Int64", "Edm.Double", "Edm.Single"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if edm == "Edm.DateTimeOffset":
        return isinstance(value, _dt.datetime)
    return False


def parse_filter(src: str, fields: Mapping[str, Mapping[str, Any]]) -> tuple:
    """Parse and type-check ``src`` against ``fields`` (name -> REST field definition)."""
    if not src or not src.strip():
        raise ODataError("Invalid expression: The filter is empty.")
    return _Parser(src, fields).parse()


# ---- evaluation ----------------------------------------------------------------------------------------


def compile_filter(src: Optional[str], fields: Mapping[str, Mapping[str, Any]]) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over stored documents (field name -> value as stored, datetimes as ``datetime``)."""
    if src is None:
        return lambda doc: True
    ast = parse_filter(src, fields)
    return lambda doc: bool(_eval(ast, doc, {}))


def _eval(node: tuple, doc: Mapping[str, Any], env: dict[str, Any]) -> Any:
    kind = node[0]
    if kind == "and":
        return _eval(node[1], doc, env) and _eval(node[2], doc, env)
    if kind == "or":
        return _eval(node[1], doc, env) or _eval(node[2], doc, env)
    if kind == "not":
        return not _eval(node[1], doc, env)
    if kind == "const":
        return node[1]
    if kind == "field":
        return doc.get(node[1])
    if kind == "var":
        return env[node[1]]
    if kind == "cmp":
        return _compare(node[1], _eval(node[2], doc, env), node[3][1])
    if kind == "in":
        value = _eval(node[1], doc, env)
        return value is not None and value in node[2]
    if kind in ("any", "all"):
        items = doc.get(node[1]) or []
        if node[2] is None:
            return len(items) > 0
        test = (lambda x: bool(_eval(node[3], doc, {**env, node[2]: x})))
        return any(test(x) for x in items) if kind == "any" else all(test(x) for x in items)
    raise ODataError(f"cannot evaluate {kind}")  # pragma: no cover - the parser only builds the above


def _compare(op: str, value: Any, literal: Any) -> bool:
    if op == "eq":
        return value == literal if value is not None and literal is not None else value is literal
    if op == "ne":
        return not _compare("eq", value, literal)
    if value is None:
        return False
    if op == "gt":
        return value > literal
    if op == "ge":
        return value >= literal
    if op == "lt":
        return value < literal
    return value <= literal
