"""A parser and evaluator for the small PromQL subset that the committed dashboard and autoscaling rule use, so
that tests evaluate the committed expressions themselves against counters scraped from a real tritonserver.

Subset: `metric{label="v",label=~"re",...}`, `rate(selector[range])`, `resets(selector[range])`,
`clamp_min(expr, number)`, `sum|avg|min|max [by|without (labels)] (expr) [by|without (labels)]`, `* / + -` between
vectors (one-to-one on all labels) or with a number, a comparison `> <` of a vector with a number (a filter, as in
alerting rules), parentheses, numbers. Anything else is a `PromQLError`, so an expression outside the subset fails
the test instead of being evaluated wrongly.

`rate` is evaluated over two scrapes taken `seconds` apart (a counter's increase over that interval divided by
it), `resets` as 1 where the counter went down between them; a bare selector reads the later scrape (gauges).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]


def _avg(values: list[float]) -> float:
    return sum(values) / len(values)


AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {"sum": sum, "min": min, "max": max, "avg": _avg}


class PromQLError(ValueError):
    pass


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: frozenset[Matcher]


@dataclass(frozen=True)
class Rate:
    selector: Selector
    window: str


@dataclass(frozen=True)
class ClampMin:
    expr: Node
    minimum: float


@dataclass(frozen=True)
class Aggregate:
    op: str
    grouping: str  # "by" or "without"
    labels: tuple[str, ...]
    expr: Node


@dataclass(frozen=True)
class Divide:
    numerator: Node
    denominator: Node


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Resets:
    selector: Selector
    window: str


@dataclass(frozen=True)
class Arithmetic:
    op: str  # "+", "-" or "*" (division is `Divide`)
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare:
    op: str  # ">" or "<", vector against a number: keeps the series for which it holds
    left: Node
    right: Node


Node = Selector | Rate | Resets | ClampMin | Aggregate | Divide | Arithmetic | Compare | Number

TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<name>[a-zA-Z_:][\w:]*)|(?P<string>\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<range>\[[^\]]+\])|(?P<op>=~|!~|!=|[=(){},/*+<>-]))"
)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            raise PromQLError(f"unexpected text at {position}: {text[position : position + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    position: int = 0
    _end: tuple[str, str] = field(default=("end", ""))

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else self._end

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token_kind, token = self.peek()
        if (value is not None and token != value) or (kind is not None and token_kind != kind):
            raise PromQLError(f"expected {value or kind}, found {token!r}")
        self.position += 1
        return token

    def expression(self) -> Node:
        node = self.additive()
        if self.peek()[0] == "op" and self.peek()[1] in "<>":
            op = self.take()
            node = Compare(op, node, self.additive())
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.take()
            node = Arithmetic(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.term()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/"):
            op = self.take()
            right = self.term()
            node = Divide(node, right) if op == "/" else Arithmetic(op, node, right)
        return node

    def grouping(self) -> tuple[str, tuple[str, ...]]:
        word = self.take(kind="name")
        self.take("(")
        labels: list[str] = []
        while self.peek() != ("op", ")"):
            labels.append(self.take(kind="name"))
            if self.peek() == ("op", ","):
                self.take(",")
        self.take(")")
        return word, tuple(labels)

    def term(self) -> Node:
        kind, token = self.peek()
        if kind == "number":
            self.take()
            return Number(float(token))
        if token == "(":
            self.take("(")
            node = self.expression()
            self.take(")")
            return node
        if kind != "name":
            raise PromQLError(f"unexpected {token!r}")
        if token in AGGREGATIONS:
            self.take()
            grouping, labels = ("by", ()) if self.peek()[1] == "(" else self.grouping()
            self.take("(")
            inner = self.expression()
            self.take(")")
            if self.peek()[1] in ("by", "without"):
                if labels:
                    raise PromQLError("grouping given twice")
                grouping, labels = self.grouping()
            if grouping not in ("by", "without"):
                raise PromQLError(f"unknown grouping {grouping!r}")
            return Aggregate(token, grouping, labels, inner)
        if token in ("rate", "resets"):
            self.take()
            self.take("(")
            selector = self.selector()
            window = self.take(kind="range")
            self.take(")")
            return Rate(selector, window) if token == "rate" else Resets(selector, window)
        if token == "clamp_min":
            self.take()
            self.take("(")
            inner = self.expression()
            self.take(",")
            minimum = float(self.take(kind="number"))
            self.take(")")
            return ClampMin(inner, minimum)
        return self.selector()

    def selector(self) -> Selector:
        metric = self.take(kind="name")
        if metric in AGGREGATIONS or metric in ("rate", "resets", "clamp_min", "by", "without"):
            raise PromQLError(f"{metric!r} is not a metric name")
        matchers: set[Matcher] = set()
        if self.peek() == ("op", "{"):
            self.take("{")
            while self.peek() != ("op", "}"):
                if self.peek() == ("op", ","):
                    self.take(",")
                    continue
                label = self.take(kind="name")
                op = self.take(kind="op")
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"unknown matcher {op!r}")
                value = self.take(kind="string")[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                matchers.add(Matcher(label, op, value))
            self.take("}")
        return Selector(metric, frozenset(matchers))


def parse(text: str) -> Node:
    parser = _Parser(tokenize(text))
    node = parser.expression()
    if parser.position != len(parser.tokens):
        raise PromQLError(f"trailing text: {parser.tokens[parser.position :]}")
    return node


# --- the Prometheus text format ---------------------------------------------------------------------------
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str, extra: dict[str, str] | None = None) -> dict[str, Vector]:
    """Samples by metric name; `extra` labels are added to every series, as a scrape's target labels are."""
    out: dict[str, Vector] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        labels = dict(LABEL.findall(match.group("labels") or ""))
        labels.update(extra or {})
        out.setdefault(match.group("name"), {})[frozenset(labels.items())] = float(match.group("value"))
    return out


@dataclass(frozen=True)
class Scrapes:
    before: dict[str, Vector]
    after: dict[str, Vector]
    seconds: float


def evaluate(node: Node, scrapes: Scrapes) -> Vector | float:
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Selector):
        return _select(node, scrapes.after)
    if isinstance(node, Rate):
        before = _select(node.selector, scrapes.before)
        return {
            labels: (value - before.get(labels, 0.0)) / scrapes.seconds
            for labels, value in _select(node.selector, scrapes.after).items()
        }
    if isinstance(node, Resets):
        before = _select(node.selector, scrapes.before)
        return {
            labels: float(value < before[labels]) if labels in before else 0.0
            for labels, value in _select(node.selector, scrapes.after).items()
        }
    if isinstance(node, Arithmetic | Compare):
        left, right = evaluate(node.left, scrapes), evaluate(node.right, scrapes)
        if isinstance(node, Compare):
            if not isinstance(left, dict) or not isinstance(right, float):
                raise PromQLError("a comparison in this subset is a vector against a number")
            keep = (lambda v: v > right) if node.op == ">" else (lambda v: v < right)
            return {labels: value for labels, value in left.items() if keep(value)}
        apply = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}[node.op]
        if isinstance(left, float) and isinstance(right, float):
            return apply(left, right)
        if isinstance(right, float):
            assert isinstance(left, dict)
            return {labels: apply(value, right) for labels, value in left.items()}
        if isinstance(left, float):
            return {labels: apply(left, value) for labels, value in right.items()}
        return {labels: apply(value, right[labels]) for labels, value in left.items() if labels in right}
    if isinstance(node, ClampMin):
        inner = evaluate(node.expr, scrapes)
        if isinstance(inner, float):
            return max(inner, node.minimum)
        return {labels: max(value, node.minimum) for labels, value in inner.items()}
    if isinstance(node, Aggregate):
        inner = evaluate(node.expr, scrapes)
        if isinstance(inner, float):
            raise PromQLError("aggregation of a number")
        groups: dict[Labels, list[float]] = {}
        for labels, value in inner.items():
            keep = (lambda k: k in node.labels) if node.grouping == "by" else (lambda k: k not in node.labels)
            groups.setdefault(frozenset((k, v) for k, v in labels if keep(k)), []).append(value)
        return {labels: AGGREGATIONS[node.op](values) for labels, values in groups.items()}
    if isinstance(node, Divide):
        top, bottom = evaluate(node.numerator, scrapes), evaluate(node.denominator, scrapes)
        if isinstance(top, float) and isinstance(bottom, float):
            return _div(top, bottom)
        if isinstance(bottom, float):
            assert isinstance(top, dict)
            return {labels: _div(value, bottom) for labels, value in top.items()}
        if isinstance(top, float):
            return {labels: _div(top, value) for labels, value in bottom.items()}
        return {labels: _div(value, bottom[labels]) for labels, value in top.items() if labels in bottom}
    raise PromQLError(f"cannot evaluate {node!r}")


def _div(a: float, b: float) -> float:
    return a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a))


def _select(selector: Selector, samples: dict[str, Vector]) -> Vector:
    out: Vector = {}
    for labels, value in samples.get(selector.metric, {}).items():
        as_dict = dict(labels)
        if all(m.matches(as_dict) for m in selector.matchers):
            out[frozenset((k, v) for k, v in labels if k != "__name__")] = value
    return out


def selectors(node: Node) -> list[Selector]:
    """Every selector under a node, left to right."""
    if isinstance(node, Selector):
        return [node]
    if isinstance(node, Rate):
        return [node.selector]
    if isinstance(node, ClampMin | Aggregate):
        return selectors(node.expr)
    if isinstance(node, Divide):
        return selectors(node.numerator) + selectors(node.denominator)
    if isinstance(node, Arithmetic | Compare):
        return selectors(node.left) + selectors(node.right)
    if isinstance(node, Resets):
        return [node.selector]
    return []


def divisions(node: Node) -> list[Divide]:
    """Every division under a node (outermost first)."""
    if isinstance(node, Divide):
        return [node, *divisions(node.numerator), *divisions(node.denominator)]
    if isinstance(node, ClampMin | Aggregate):
        return divisions(node.expr)
    if isinstance(node, Arithmetic | Compare):
        return divisions(node.left) + divisions(node.right)
    return []


def groupings(node: Node) -> list[tuple[str, tuple[str, ...]]]:
    """The (by|without, labels) of every aggregation under a node."""
    if isinstance(node, Aggregate):
        return [(node.grouping, tuple(sorted(node.labels))), *groupings(node.expr)]
    if isinstance(node, ClampMin):
        return groupings(node.expr)
    if isinstance(node, Divide):
        return groupings(node.numerator) + groupings(node.denominator)
    if isinstance(node, Arithmetic | Compare):
        return groupings(node.left) + groupings(node.right)
    return []
