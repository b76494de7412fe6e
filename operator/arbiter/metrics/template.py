"""Query templates: safe substitution of ``{{experiment}}``, ``{{namespace}}``, ``{{variant}}``, and the
one-query-for-all-variants rewrite.

Substitution knows where each placeholder sits. Inside a PromQL string literal the value is escaped for
that literal's quote; inside the string of a regex matcher (``=~``, ``!~``) it is regex-escaped first, so
a value always matches itself literally; outside any string it must be a plain identifier, because there
it becomes PromQL syntax. Anything else is a :class:`TemplateError`; nothing half-rendered is ever sent.

The rewrite turns ``sum(rate(m{variant="{{variant}}"}[1m]))`` into
``sum by (variant) (rate(m{variant=~"a|b"}[1m]))``. It is applied only to a small grammar whose
equivalence is argued in ``docs/metrics.md`` (and checked against a real Prometheus in the integration
tests); every other template is answered with one query per variant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from arbiter.metrics.base import QueryContext, QueryPath

__all__ = [
    "PLACEHOLDERS",
    "VARIANT_LABEL",
    "NotRewritable",
    "QueryStrategy",
    "TemplateError",
    "plan_queries",
    "render",
    "render_parameters",
    "rewrite_by_variant",
]

PLACEHOLDERS = ("experiment", "namespace", "variant")
VARIANT_LABEL = "variant"

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_IDENTIFIER_SAFE = re.compile(r"[A-Za-z0-9_:]+")
# RE2 metacharacters; escaping them makes a value match itself literally.
_REGEX_META = frozenset("\\.+*?()|[]{}^$")
_STRING_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class TemplateError(ValueError):
    """A template cannot be rendered safely (unknown placeholder, unsafe value)."""


def _regex_escape(value: str) -> str:
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in value)


def _string_escape(value: str, quote: str) -> str:
    """Escape a value for a PromQL string literal opened with ``quote``."""
    if quote == "`":
        if "`" in value:
            raise TemplateError(f"value {value!r} contains a backtick and cannot go in a `raw` string")
        return value
    out = []
    for ch in value:
        if ch in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise TemplateError(f"value {value!r} contains a control character")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class _Placeholder:
    """One ``{{name}}`` in a template, and the PromQL context it sits in."""

    name: str
    start: int
    end: int
    quote: str | None  # the string literal's quote, None outside any string
    regex: bool  # inside the string of a =~ or !~ matcher
    literal_start: int = -1  # the enclosing string literal, quotes included
    literal_end: int = -1


def _placeholders(template: str) -> Iterator[_Placeholder]:
    """Every placeholder with its context, found by walking PromQL's string and comment syntax."""
    i, n = 0, len(template)
    quote: str | None = None
    regex = False
    literal_start = -1
    pending: list[_Placeholder] = []
    while i < n:
        ch = template[i]
        match = _PLACEHOLDER.match(template, i) if ch == "{" else None
        if match:
            pending.append(_Placeholder(match.group(1), match.start(), match.end(), quote, regex))
            if quote is None:
                yield pending.pop()
            i = match.end()
            continue
        if quote is None:
            if ch in "\"'`":
                quote, literal_start = ch, i
                before = template[:i].rstrip()
                regex = before.endswith(("=~", "!~"))
            elif ch == "#":  # a comment runs to the end of the line
                newline = template.find("\n", i)
                i = n if newline < 0 else newline
                continue
        elif ch == "\\" and quote != "`":
            i += 2
            continue
        elif ch == quote:
            for p in pending:
                yield _Placeholder(p.name, p.start, p.end, p.quote, p.regex, literal_start, i + 1)
            pending.clear()
            quote = None
        i += 1
    # An unterminated string: Prometheus will reject the query; still render what is there.
    yield from pending


def _substitute(value: str, where: _Placeholder) -> str:
    if value == "":
        raise TemplateError(f"{{{{{where.name}}}}} is empty; an empty label value matches unlabelled series")
    if where.quote is None:
        if not _IDENTIFIER_SAFE.fullmatch(value):
            raise TemplateError(
                f"{{{{{where.name}}}}} is outside a string literal, where {value!r} would be PromQL syntax; "
                f'put it in quotes, e.g. {where.name}="{{{{{where.name}}}}}"'
            )
        return value
    if where.regex:
        value = _regex_escape(value)
    return _string_escape(value, where.quote)


def render(template: str, context: QueryContext, variant: str | None) -> str:
    """Substitute the placeholders of a query template.

    Args:
        template: the query template.
        context: experiment and namespace.
        variant: the variant name; None only for templates without ``{{variant}}``.

    Returns:
        The PromQL query.

    Raises:
        TemplateError: an unknown placeholder, a missing variant or a value that cannot be made safe.
    """
    values = {"experiment": context.experiment, "namespace": context.namespace, "variant": variant}
    out: list[str] = []
    position = 0
    for where in sorted(_placeholders(template), key=lambda p: p.start):
        if where.name not in values:
            raise TemplateError(
                f"unknown placeholder {{{{{where.name}}}}}; use "
                + ", ".join(f"{{{{{p}}}}}" for p in PLACEHOLDERS)
            )
        value = values[where.name]
        if value is None:
            raise TemplateError("the template uses {{variant}} but no variant was given")
        out.append(template[position : where.start])
        out.append(_substitute(value, where))
        position = where.end
    out.append(template[position:])
    return "".join(out)


# --- the by-variant rewrite -------------------------------------------------------------------------

_AGGREGATIONS = frozenset({"sum", "avg", "min", "max", "count"})
# Functions of one range vector that keep every label but __name__: each output series comes from one
# input series, so grouping by variant afterwards partitions exactly as filtering by variant before.
_RANGE_FUNCTIONS = frozenset(
    {
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "resets",
        "changes",
        "sum_over_time",
        "count_over_time",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "last_over_time",
    }
)
_ARITHMETIC = frozenset({"+", "-", "*", "/"})
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})
_DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")
_NUMBER = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][0-9]+)?")
_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<num>[0-9.][0-9A-Za-z_.]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
    """,
    re.VERBOSE | re.DOTALL,
)


class NotRewritable(ValueError):
    """The template is outside the grammar whose by-variant rewrite is proven equivalent."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokens(template: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(template):
        match = _TOKEN.match(template, position)
        if not match or match.lastgroup is None:
            raise NotRewritable(f"unexpected character {template[position]!r} at {position}")
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup, match.group(), match.start(), match.end()))
        position = match.end()
    return tokens


# The kind of a vector expression decides what the rewrite does to its labels:
# _RAW series keep their own labels (variant among them), _GROUPED series gain the variant label
# through the added grouping. Binary operations match series by labels, so both sides must be _GROUPED.
_RAW = "raw"
_GROUPED = "grouped"
_SCALAR = "scalar"


@dataclass
class _Parser:
    """A recursive-descent parser for the rewritable subset of PromQL; collects the text edits."""

    tokens: list[_Token]
    template: str
    position: int = 0
    edits: list[tuple[int, int, str]] = field(default_factory=list)
    variant_matchers: list[tuple[_Token, _Token]] = field(default_factory=list)  # (operator, literal)

    def peek(self, offset: int = 0) -> _Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, text: str | None = None, kind: str | None = None) -> _Token:
        token = self.peek()
        if token is None:
            raise NotRewritable("unexpected end of query")
        if (text is not None and token.text != text) or (kind is not None and token.kind != kind):
            raise NotRewritable(f"unexpected {token.text!r} at {token.start}")
        self.position += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.text == text

    def parse(self) -> str:
        kind = self.expression()
        if self.peek() is not None:
            raise NotRewritable(f"unexpected {self.peek().text!r}")  # type: ignore[union-attr]
        if kind == _SCALAR:
            raise NotRewritable("the query has no vector selector")
        return kind

    def expression(self) -> str:
        kind = self.operand()
        while (token := self.peek()) is not None and token.text in _ARITHMETIC:
            self.take()
            after = self.peek()
            if (
                after is not None
                and after.kind == "ident"
                and after.text
                in {
                    "bool",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                }
            ):
                raise NotRewritable(f"binary operator modifier {after.text!r}")
            right = self.operand()
            if _SCALAR in (kind, right):
                kind = right if kind == _SCALAR else kind
            elif kind == right == _GROUPED:
                kind = _GROUPED
            else:
                raise NotRewritable("a binary operation between vectors that are not both aggregated")
        return kind

    def operand(self) -> str:
        token = self.peek()
        if token is None:
            raise NotRewritable("unexpected end of query")
        if token.kind == "num":
            if not _NUMBER.fullmatch(token.text):
                raise NotRewritable(f"not a number: {token.text!r}")
            self.take()
            return _SCALAR
        if token.text == "(":
            self.take()
            kind = self.expression()
            self.take(")")
            return kind
        if token.kind == "ident":
            follower = self.peek(1)
            if (
                token.text in _AGGREGATIONS
                and follower is not None
                and follower.text in {"(", "by", "without"}
            ):
                return self.aggregation()
            if token.text == "histogram_quantile" and follower is not None and follower.text == "(":
                self.take()
                self.take("(")
                quantile = self.take(kind="num")
                if not _NUMBER.fullmatch(quantile.text):
                    raise NotRewritable(f"not a number: {quantile.text!r}")
                self.take(",")
                kind = self.expression()
                self.take(")")
                if kind == _SCALAR:
                    raise NotRewritable("histogram_quantile of a scalar")
                return kind
            if token.text in _RANGE_FUNCTIONS and follower is not None and follower.text == "(":
                self.take()
                self.take("(")
                self.selector(with_range=True)
                self.take(")")
                return _RAW
            if follower is not None and follower.text == "(":
                raise NotRewritable(f"function {token.text!r} is not known to keep the variant label")
        if token.kind == "ident" or token.text == "{":
            self.selector(with_range=False)
            return _RAW
        raise NotRewritable(f"unexpected {token.text!r} at {token.start}")

    def aggregation(self) -> str:
        self.take(kind="ident")
        grouped = False
        if self.at("by"):
            self.grouping()
            grouped = True
        elif self.at("without"):
            raise NotRewritable("aggregation 'without' (...)")
        opening = self.take("(")
        if self.expression() == _SCALAR:
            raise NotRewritable("an aggregation of a scalar")
        self.take(")")
        if self.at("by"):
            if grouped:
                raise NotRewritable("two 'by' clauses")
            self.grouping()
            grouped = True
        elif self.at("without"):
            raise NotRewritable("aggregation 'without' (...)")
        if not grouped:
            self.edits.append((opening.start, opening.start, f" by ({VARIANT_LABEL}) "))
        return _GROUPED

    def grouping(self) -> None:
        self.take("by")
        self.take("(")
        labels: list[str] = []
        while not self.at(")"):
            labels.append(self.take(kind="ident").text)
            if not self.at(")"):
                self.take(",")
        closing = self.take(")")
        if VARIANT_LABEL not in labels:
            self.edits.append((closing.start, closing.start, f"{', ' if labels else ''}{VARIANT_LABEL}"))

    def selector(self, *, with_range: bool) -> None:
        token = self.peek()
        if token is not None and token.kind == "ident":
            self.take()
        variant_matchers = 0
        if self.at("{"):
            self.take("{")
            while not self.at("}"):
                label = self.take(kind="ident")
                operator = self.take()
                if operator.text not in _MATCH_OPS:
                    raise NotRewritable(f"unexpected {operator.text!r} in a label matcher")
                value = self.take(kind="string")
                if label.text == VARIANT_LABEL:
                    variant_matchers += 1
                    if operator.text != "=" or not _PLACEHOLDER.fullmatch(value.text[1:-1]):
                        raise NotRewritable(
                            f'the variant matcher is not variant="{{{{variant}}}}": {value.text}'
                        )
                    self.variant_matchers.append((operator, value))
                elif label.text == "__name__":
                    raise NotRewritable("a __name__ matcher")
                if not self.at("}"):
                    self.take(",")
            self.take("}")
        if variant_matchers != 1:
            raise NotRewritable('a selector without exactly one variant="{{variant}}" matcher')
        if with_range:
            self.take("[")
            duration = self.take(kind="num")
            if not _DURATION.fullmatch(duration.text):
                raise NotRewritable(f"not a range: {duration.text!r}")
            self.take("]")
        elif self.at("["):
            raise NotRewritable("a range vector outside a known function")
        if self.at("offset"):
            self.take("offset")
            if not _DURATION.fullmatch(self.take(kind="num").text):
                raise NotRewritable("offset without a duration")
        if self.at("@"):
            raise NotRewritable("the @ modifier")


def rewrite_by_variant(template: str, variants: Sequence[str]) -> str:
    """Rewrite a template into one query whose series carry the ``variant`` label.

    Every ``variant="{{variant}}"`` matcher becomes ``variant=~"<v1>|<v2>|..."`` (regex-escaped) and every
    aggregation gains ``by (variant)`` (or ``variant`` in its existing ``by`` list). Other placeholders are
    left for :func:`render`.

    Raises:
        NotRewritable: with the reason, when the template is outside the proven grammar.
    """
    for where in _placeholders(template):
        if where.quote is None:
            raise NotRewritable(f"{{{{{where.name}}}}} is outside a string literal")
        if where.name == VARIANT_LABEL and (
            where.quote not in {'"', "'"}
            or where.regex
            or (where.start, where.end) != (where.literal_start + 1, where.literal_end - 1)
        ):
            raise NotRewritable('{{variant}} is used other than as variant="{{variant}}"')
    parser = _Parser(_tokens(template), template)
    parser.parse()
    if not parser.variant_matchers:
        raise NotRewritable('no variant="{{variant}}" matcher')
    alternatives = "|".join(_regex_escape(v) for v in variants)
    for operator, literal in parser.variant_matchers:
        quote = literal.text[0]
        parser.edits.append((operator.start, operator.end, "=~"))
        parser.edits.append((literal.start, literal.end, quote + _string_escape(alternatives, quote) + quote))
    rewritten = template
    for start, end, text in sorted(parser.edits, key=lambda e: (e[0], e[1]), reverse=True):
        rewritten = rewritten[:start] + text + rewritten[end:]
    return rewritten


@dataclass(frozen=True)
class QueryStrategy:
    """How one template will be answered for a set of variants.

    Attributes:
        path: BY_VARIANT, PER_VARIANT or SHARED.
        reason: why this path (for PER_VARIANT: why the rewrite did not apply).
        query: the single query, for BY_VARIANT and SHARED.
        per_variant: variant -> query, for PER_VARIANT.
        errors: variant -> why its query could not be rendered (those variants are not queried).
    """

    path: QueryPath
    reason: str
    query: str | None = None
    per_variant: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def plan_queries(
    template: str, context: QueryContext, variants: Sequence[str], *, by_variant: bool = True
) -> QueryStrategy:
    """Decide how to answer a template for every variant, and render the queries.

    Args:
        template: the query template.
        context: experiment and namespace.
        variants: the variants to answer for (deduplicated, order kept).
        by_variant: allow the one-query rewrite; False forces one query per variant.

    Returns:
        The plan. Rendering problems are in ``errors`` (per variant); they never raise.
    """
    variants = list(dict.fromkeys(variants))
    uses_variant = any(p.name == VARIANT_LABEL for p in _placeholders(template))
    if not uses_variant:
        try:
            return QueryStrategy(
                QueryPath.SHARED, "the template does not use {{variant}}", render(template, context, None)
            )
        except TemplateError as exc:
            return QueryStrategy(
                QueryPath.SHARED,
                "the template does not use {{variant}}",
                errors=dict.fromkeys(variants, str(exc)),
            )
    reason = "one query per variant was requested"
    if by_variant and len(variants) > 1:
        try:
            single = rewrite_by_variant(template, variants)
        except NotRewritable as exc:
            reason = f"not rewritable by variant: {exc}"
        else:
            try:
                return QueryStrategy(
                    QueryPath.BY_VARIANT, "rewritten to one query by (variant)", render(single, context, None)
                )
            except TemplateError as exc:
                reason = f"the rewritten query cannot be rendered: {exc}"
    elif by_variant:
        reason = "a single variant"
    queries: dict[str, str] = {}
    errors: dict[str, str] = {}
    for variant in variants:
        try:
            queries[variant] = render(template, context, variant)
        except TemplateError as exc:
            errors[variant] = str(exc)
    return QueryStrategy(QueryPath.PER_VARIANT, reason, per_variant=queries, errors=errors)


# --- template parameters (MetricTemplate) ----------------------------------------------------------------

_NUMBER_VALUE = re.compile(r"[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def render_parameters(template: str, values: Mapping[str, str]) -> str:
    """Substitute a MetricTemplate's declared parameters, leaving the operator's own placeholders.

    The same context rules as :func:`render` apply (escaped inside string literals, regex-escaped inside
    a regex matcher); outside any string a value must be an identifier, a duration such as ``5m`` or a
    plain number such as ``0.95`` (e.g. the quantile of ``histogram_quantile``).

    Args:
        template: the query of the template.
        values: parameter name -> value.

    Returns:
        The query with every parameter substituted; ``{{experiment}}``, ``{{namespace}}`` and
        ``{{variant}}`` are kept for :func:`render`.

    Raises:
        TemplateError: a placeholder that is neither a parameter with a value nor the operator's own, or a
            value that cannot be made safe where it sits.
    """
    out: list[str] = []
    position = 0
    for where in sorted(_placeholders(template), key=lambda p: p.start):
        if where.name in PLACEHOLDERS:
            continue
        if where.name not in values:
            raise TemplateError(
                f"{{{{{where.name}}}}} is not a declared parameter with a value (the template declares "
                + (", ".join(sorted(values)) or "none")
                + "; experiment, namespace and variant are filled by the operator)"
            )
        value = values[where.name]
        if "{{" in value or "}}" in value:
            raise TemplateError(f"the value of {{{{{where.name}}}}} must not contain {{{{ or }}}}")
        out.append(template[position : where.start])
        if where.quote is None and _NUMBER_VALUE.fullmatch(value):
            out.append(value)
        else:
            out.append(_substitute(value, where))
        position = where.end
    out.append(template[position:])
    return "".join(out)
