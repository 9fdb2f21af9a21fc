"""The rules' small, safe expression language: parsed once, compiled to closures, evaluated many times.

A rule's `when` is one Python-like expression over a context dict, e.g.
`company_size >= 500 and contains(title, "vp")` or `props["form"] in ("demo-request", "trial")`.
The source is parsed with `ast` and every node is checked against a whitelist before it is turned
into a closure; there is no `eval`/`exec`, no attribute access, no comprehension, no lambda and
no call except the functions in FUNCTIONS. simpleeval (pinned) defines the same semantics for the
same subset and the tests check the two agree; closures are used because they are ~10x faster
than re-walking the AST per contact (bench/rules).

Missing names and comparisons with None are false rather than errors, so a rule over a blank
profile field simply does not fire.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

Context = dict
Compiled = Callable[[Context], Any]

MAX_SOURCE_CHARS = 500
MAX_NODES = 120
MAX_POWER = 100


class ExpressionError(ValueError):
    """An expression is not in the language (reason says why, with the offending part)."""


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _contains(haystack: Any, needle: Any) -> bool:
    """Case-insensitive substring test; for a list/set, membership."""
    if haystack is None or needle is None:
        return False
    if isinstance(haystack, (list, tuple, set, frozenset)):
        return needle in haystack
    return _text(needle).lower() in _text(haystack).lower()


def _contains_any(haystack: Any, needles: Iterable) -> bool:
    lowered = _text(haystack).lower()
    return bool(lowered) and any(_text(n).lower() in lowered for n in needles)


_REGEX_CACHE: dict[str, re.Pattern] = {}


def _matches(value: Any, pattern: str) -> bool:
    """Case-insensitive regex search (patterns are cached, and limited in length)."""
    if value is None:
        return False
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        if len(pattern) > 200:
            raise ExpressionError("regex too long")
        compiled = _REGEX_CACHE[pattern] = re.compile(pattern, re.IGNORECASE)
    return compiled.search(_text(value)) is not None


def _number(value: Any, default: float = 0.0) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


FUNCTIONS: dict[str, Callable] = {
    "lower": lambda s: _text(s).lower(),
    "upper": lambda s: _text(s).upper(),
    "contains": _contains,
    "contains_any": _contains_any,
    "startswith": lambda s, p: _text(s).lower().startswith(_text(p).lower()),
    "endswith": lambda s, p: _text(s).lower().endswith(_text(p).lower()),
    "matches": _matches,
    "number": _number,
    "len": lambda v: 0 if v is None else len(v),
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "blank": lambda v: v is None or v == "" or v == [] or v == {},
}

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}


def _in(a, b) -> bool:
    return b is not None and a in b


def _not_in(a, b) -> bool:
    return b is None or a not in b


_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: _in, ast.NotIn: _not_in,
}

_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


@dataclass(frozen=True)
class Expression:
    """A compiled expression: `expr(context)` evaluates it; `source` is what the rule author wrote."""

    source: str
    names: frozenset[str]
    fn: Compiled

    def __call__(self, context: Context) -> Any:
        return self.fn(context)

    def test(self, context: Context) -> bool:
        return bool(self.fn(context))


def _always_true(_context: Context) -> bool:
    return True


TRUE = Expression("", frozenset(), _always_true)


class _Compiler:
    def __init__(self, allowed_names: frozenset[str] | None):
        self.allowed_names = allowed_names
        self.names: set[str] = set()

    def compile(self, node: ast.AST) -> Compiled:
        handler = getattr(self, "_" + type(node).__name__, None)
        if handler is None:
            raise ExpressionError(f"'{type(node).__name__}' is not allowed")
        return handler(node)

    # --- leaves ---
    def _Constant(self, node: ast.Constant) -> Compiled:
        value = node.value
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise ExpressionError(f"constant {value!r} is not allowed")
        return lambda _c: value

    def _Name(self, node: ast.Name) -> Compiled:
        name = node.id
        if name in ("True", "False", "None"):
            value = {"True": True, "False": False, "None": None}[name]
            return lambda _c: value
        if name.startswith("_"):
            raise ExpressionError(f"name '{name}' is not allowed")
        if self.allowed_names is not None and name not in self.allowed_names:
            raise ExpressionError(f"unknown name '{name}'")
        self.names.add(name)
        return lambda c: c.get(name)

    def _literal_items(self, node) -> list[Compiled]:
        return [self.compile(item) for item in node.elts]

    def _Tuple(self, node: ast.Tuple) -> Compiled:
        return self._collection(node, tuple)

    def _List(self, node: ast.List) -> Compiled:
        return self._collection(node, tuple)

    def _Set(self, node: ast.Set) -> Compiled:
        return self._collection(node, frozenset)

    def _collection(self, node, kind) -> Compiled:
        items = self._literal_items(node)
        if all(isinstance(e, ast.Constant) for e in node.elts):
            value = kind(e.value for e in node.elts)   # folded once at compile time
            return lambda _c: value
        return lambda c: kind(item(c) for item in items)

    # --- operators ---
    def _BoolOp(self, node: ast.BoolOp) -> Compiled:
        parts = [self.compile(v) for v in node.values]
        if isinstance(node.op, ast.And):
            def _and(c):
                result = True
                for part in parts:
                    result = part(c)
                    if not result:
                        return result
                return result
            return _and

        def _or(c):
            result = False
            for part in parts:
                result = part(c)
                if result:
                    return result
            return result
        return _or

    def _UnaryOp(self, node: ast.UnaryOp) -> Compiled:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda c: not operand(c)
        if isinstance(node.op, ast.USub):
            return lambda c: -operand(c)
        if isinstance(node.op, ast.UAdd):
            return operand
        raise ExpressionError(f"operator '{type(node.op).__name__}' is not allowed")

    def _BinOp(self, node: ast.BinOp) -> Compiled:
        left, right = self.compile(node.left), self.compile(node.right)
        if isinstance(node.op, ast.Pow):
            def _pow(c):
                exponent = right(c)
                if abs(exponent) > MAX_POWER:
                    raise ExpressionError("power too large")
                return left(c) ** exponent
            return _pow
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator '{type(node.op).__name__}' is not allowed")
        if op is operator.mul:
            return lambda c: _bounded_mul(left(c), right(c))
        return lambda c: op(left(c), right(c))

    def _Compare(self, node: ast.Compare) -> Compiled:
        operands = [self.compile(node.left)] + [self.compile(c) for c in node.comparators]
        ops = []
        for op_node in node.ops:
            op = _COMPARE.get(type(op_node))
            if op is None:
                raise ExpressionError(f"comparison '{type(op_node).__name__}' is not allowed")
            ops.append((op, isinstance(op_node, _ORDERING)))
        if len(ops) == 1:
            (op, ordering), (left, right) = ops[0], operands
            if ordering:
                def _ordered(c):
                    a, b = left(c), right(c)
                    if a is None or b is None:
                        return False
                    try:
                        return op(a, b)
                    except TypeError:
                        return False
                return _ordered
            return lambda c: op(left(c), right(c))

        def _chain(c):
            a = operands[0](c)
            for (op, ordering), operand in zip(ops, operands[1:]):
                b = operand(c)
                if ordering and (a is None or b is None):
                    return False
                try:
                    if not op(a, b):
                        return False
                except TypeError:
                    return False
                a = b
            return True
        return _chain

    def _IfExp(self, node: ast.IfExp) -> Compiled:
        test, body, orelse = self.compile(node.test), self.compile(node.body), self.compile(node.orelse)
        return lambda c: body(c) if test(c) else orelse(c)

    def _Subscript(self, node: ast.Subscript) -> Compiled:
        """`props["form"]`, `custom["plan"]`: a dict lookup with a constant key, None when missing."""
        target = self.compile(node.value)
        key_node = node.slice
        if not isinstance(key_node, ast.Constant) or not isinstance(key_node.value, (str, int)):
            raise ExpressionError("subscripts take one constant key")
        key = key_node.value

        def _lookup(c):
            container = target(c)
            if isinstance(container, dict):
                return container.get(key)
            if isinstance(container, (list, tuple)) and isinstance(key, int) and -len(container) <= key < len(container):
                return container[key]
            return None
        return _lookup

    def _Call(self, node: ast.Call) -> Compiled:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
            raise ExpressionError(f"function '{name}' is not allowed; allowed: {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise ExpressionError("keyword arguments are not allowed")
        fn = FUNCTIONS[node.func.id]
        args = [self.compile(a) for a in node.args]
        if node.func.id == "matches" and len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
            _matches("", node.args[1].value)   # compile (and reject) the regex now, not per contact
        if len(args) == 1:
            only = args[0]
            return lambda c: fn(only(c))
        if len(args) == 2:
            first, second = args
            return lambda c: fn(first(c), second(c))
        return lambda c: fn(*(a(c) for a in args))


def _bounded_mul(a, b):
    if isinstance(a, (str, tuple)) or isinstance(b, (str, tuple)):
        raise ExpressionError("sequence repetition is not allowed")
    return a * b


def compile_expression(source: str, allowed_names: Iterable[str] | None = None) -> Expression:
    """Parse and compile `source`; raises ExpressionError with a readable reason.

    An empty source is the always-true expression. With `allowed_names`, an unknown name is an
    error at compile time (a typo in a rule is caught when the rule is saved, not per contact).
    """
    source = (source or "").strip()
    if not source:
        return TRUE
    if len(source) > MAX_SOURCE_CHARS:
        raise ExpressionError(f"expression longer than {MAX_SOURCE_CHARS} characters")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ExpressionError(f"expression has more than {MAX_NODES} parts")
    compiler = _Compiler(frozenset(allowed_names) if allowed_names is not None else None)
    fn = compiler.compile(tree.body)
    return Expression(source, frozenset(compiler.names), fn)


def simpleeval_evaluator(context: Context):
    """The same language through simpleeval (the reference semantics the tests compare against)."""
    from simpleeval import EvalWithCompoundTypes

    return EvalWithCompoundTypes(names=dict(context), functions=dict(FUNCTIONS))


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
