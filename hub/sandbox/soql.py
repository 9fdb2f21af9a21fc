"""Just enough SOQL for the Salesforce fake: SELECT fields FROM object [WHERE ...] [ORDER BY ...] [LIMIT n].

WHERE supports AND / OR / NOT / parentheses, = != < <= > >= and IN (...), with string, number,
boolean, null and datetime literals. Text comparisons ignore case, as Salesforce's do.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:\\.|[^'\\])*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""", re.VERBOSE)


class SoqlError(ValueError):
    pass


@dataclass
class Query:
    fields: list[str]
    object_type: str
    where: Callable[[dict], bool] | None = None
    order_by: list[tuple[str, bool]] = field(default_factory=list)   # (field, descending)
    limit: int | None = None


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise SoqlError(f"unexpected token at: {text[position:position + 20]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def parse_datetime(text: str) -> datetime:
    text = text.replace("Z", "+00:00")
    if text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).astimezone(timezone.utc)


class _Parser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.i = 0

    def peek(self, offset: int = 0):
        index = self.i + offset
        return self.tokens[index] if index < len(self.tokens) else (None, None)

    def word(self, *expected: str) -> bool:
        kind, value = self.peek()
        return kind == "word" and value.upper() in expected

    def take(self):
        token = self.peek()
        self.i += 1
        return token

    def expect_word(self, expected: str) -> None:
        kind, value = self.take()
        if kind != "word" or value.upper() != expected:
            raise SoqlError(f"expected {expected}, got {value!r}")

    def query(self) -> Query:
        self.expect_word("SELECT")
        fields = [self.take()[1]]
        while self.peek() == ("op", ","):
            self.take()
            fields.append(self.take()[1])
        self.expect_word("FROM")
        query = Query(fields=fields, object_type=self.take()[1])
        if self.word("WHERE"):
            self.take()
            query.where = self.expr()
        if self.word("ORDER"):
            self.take()
            self.expect_word("BY")
            query.order_by = [self.order_item()]
            while self.peek() == ("op", ","):
                self.take()
                query.order_by.append(self.order_item())
        if self.word("LIMIT"):
            self.take()
            query.limit = int(self.take()[1])
        if self.i != len(self.tokens):
            raise SoqlError(f"unexpected {self.peek()[1]!r}")
        return query

    def order_item(self) -> tuple[str, bool]:
        name = self.take()[1]
        descending = False
        if self.word("ASC", "DESC"):
            descending = self.take()[1].upper() == "DESC"
        return name, descending

    def expr(self):
        left = self.term()
        while self.word("OR"):
            self.take()
            right = self.term()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
        return left

    def term(self):
        left = self.factor()
        while self.word("AND"):
            self.take()
            right = self.factor()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
        return left

    def factor(self):
        if self.word("NOT"):
            self.take()
            inner = self.factor()
            return lambda row: not inner(row)
        if self.peek() == ("op", "("):
            self.take()
            inner = self.expr()
            if self.take() != ("op", ")"):
                raise SoqlError("missing )")
            return inner
        return self.comparison()

    def comparison(self):
        kind, name = self.take()
        if kind != "word":
            raise SoqlError(f"expected a field, got {name!r}")
        if self.word("IN"):
            self.take()
            if self.take() != ("op", "("):
                raise SoqlError("IN needs (")
            values = [self.literal()]
            while self.peek() == ("op", ","):
                self.take()
                values.append(self.literal())
            if self.take() != ("op", ")"):
                raise SoqlError("missing ) after IN list")
            wanted = {_fold(v) for v in values}
            return lambda row: _fold(row.get(name)) in wanted
        op_kind, op = self.take()
        if op_kind != "op":
            raise SoqlError(f"expected an operator, got {op!r}")
        value = self.literal()
        return _comparison(name, op, value)

    def literal(self):
        kind, value = self.take()
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if kind == "datetime":
            return parse_datetime(value)
        if kind == "number":
            return float(value)
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind == "word" and value.lower() == "null":
            return None
        raise SoqlError(f"bad literal {value!r}")


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _coerce(actual: Any, expected: Any) -> Any:
    if isinstance(expected, datetime) and isinstance(actual, str):
        return parse_datetime(actual)
    if isinstance(expected, float) and isinstance(actual, (int, str)) and actual != "":
        return float(actual)
    return _fold(actual)


def _comparison(name: str, op: str, expected: Any):
    expected = _fold(expected)
    tests = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<>": lambda a, b: a != b,
             "<": lambda a, b: a is not None and a < b, "<=": lambda a, b: a is not None and a <= b,
             ">": lambda a, b: a is not None and a > b, ">=": lambda a, b: a is not None and a >= b}
    test = tests[op]

    def evaluate(row: dict) -> bool:
        actual = row.get(name)
        if actual is None or expected is None:
            return test(actual, expected) if op in ("=", "!=", "<>") else False
        return test(_coerce(actual, expected), expected)

    return evaluate


def parse(text: str) -> Query:
    return _Parser(tokenize(text)).query()
