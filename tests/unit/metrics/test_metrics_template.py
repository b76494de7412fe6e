"""Query templates: safe substitution, and the by-variant rewrite with its fallbacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from arbiter.metrics import QueryContext, QueryPath, TemplateError, plan_queries, render
from arbiter.metrics.template import NotRewritable, rewrite_by_variant

CONTEXT = QueryContext(experiment="fraud", namespace="prod")
EXAMPLES = Path(__file__).parents[3] / "examples"


# --- render -----------------------------------------------------------------------------------------------


def test_every_placeholder_is_substituted() -> None:
    template = 'sum(x{experiment="{{experiment}}",namespace="{{namespace}}",variant="{{variant}}"})'
    assert render(template, CONTEXT, "v1") == 'sum(x{experiment="fraud",namespace="prod",variant="v1"})'


def test_whitespace_inside_the_braces_is_allowed() -> None:
    assert render('x{variant="{{ variant }}"}', CONTEXT, "v1") == 'x{variant="v1"}'


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ('x{a="{{variant}}"}', 'v"1', r'x{a="v\"1"}'),
        ('x{a="{{variant}}"}', "v\\1", r'x{a="v\\1"}'),
        ('x{a="{{variant}}"}', "v'1", 'x{a="v\'1"}'),
        ("x{a='{{variant}}'}", "v'1", r"x{a='v\'1'}"),
        ("x{a='{{variant}}'}", 'v"1', "x{a='v\"1'}"),
        ('x{a="{{variant}}"}', "line\nbreak", r'x{a="line\nbreak"}'),
        ("x{a=`{{variant}}`}", "back\\slash", "x{a=`back\\slash`}"),
    ],
    ids=[
        "double-quote",
        "backslash",
        "single-in-double",
        "single-quote",
        "double-in-single",
        "newline",
        "raw",
    ],
)
def test_values_are_escaped_for_their_string_literal(template: str, value: str, expected: str) -> None:
    assert render(template, CONTEXT, value) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('x{a=~"{{variant}}"}', r'x{a=~"v\\.1\\+"}'),
        ('x{a!~"{{variant}}|other"}', r'x{a!~"v\\.1\\+|other"}'),
        ('x{a =~ "pre-{{variant}}"}', r'x{a =~ "pre-v\\.1\\+"}'),
        ("x{a=~`{{variant}}`}", r"x{a=~`v\.1\+`}"),
        ('x{a="{{variant}}"}', 'x{a="v.1+"}'),
    ],
)
def test_values_in_regex_matchers_match_themselves_literally(template: str, expected: str) -> None:
    assert render(template, CONTEXT, "v.1+") == expected


def test_placeholders_after_escaped_quotes_are_located_correctly_and_comments_are_left_alone() -> None:
    template = 'x{a="say \\"{{variant}}\\"", b=~"{{variant}}"} # it\'s {{variant}} here'
    assert render(template, CONTEXT, "v.1") == r'x{a="say \"v.1\"", b=~"v\\.1"} # it' + "'s {{variant}} here"


def test_a_value_outside_a_string_must_be_an_identifier() -> None:
    assert render("metric_{{variant}}_total", CONTEXT, "v1") == "metric_v1_total"
    with pytest.raises(TemplateError, match="outside a string literal"):
        render("metric_{{variant}}_total", CONTEXT, "v-1")
    with pytest.raises(TemplateError, match="outside a string literal"):
        render("x{variant={{variant}}}", CONTEXT, 'a"} or vector(1) or x{b="')


def test_an_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"unknown placeholder \{\{model\}\}"):
        render('x{a="{{model}}"}', CONTEXT, "v1")


def test_an_empty_value_is_an_error() -> None:
    """experiment="" would match every series *without* the label: silently wrong numbers."""
    with pytest.raises(TemplateError, match="empty"):
        render('x{e="{{experiment}}"}', QueryContext(experiment="", namespace="n"), "v1")


def test_a_variant_placeholder_without_a_variant_is_an_error() -> None:
    with pytest.raises(TemplateError, match="no variant"):
        render('x{a="{{variant}}"}', CONTEXT, None)


def test_a_backtick_cannot_go_in_a_raw_string() -> None:
    with pytest.raises(TemplateError, match="backtick"):
        render("x{a=`{{variant}}`}", CONTEXT, "a`b")


def test_control_characters_are_refused() -> None:
    with pytest.raises(TemplateError, match="control character"):
        render('x{a="{{variant}}"}', CONTEXT, "a\x00b")


@given(st.text(min_size=1, max_size=20))
def test_an_escaped_regex_value_matches_exactly_itself(value: str) -> None:
    """Unquote the rendered literal the way PromQL does, then use it as an (RE2-compatible) regex."""
    rendered = render('x{a=~"{{variant}}"}', CONTEXT, value) if _renderable(value) else None
    if rendered is None:
        return
    literal = rendered[len('x{a=~"') : -len('"}')]
    pattern = re.sub(
        r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), literal
    )
    assert re.fullmatch(pattern, value, flags=re.DOTALL)
    assert not re.fullmatch(pattern, value + "x", flags=re.DOTALL)


def _renderable(value: str) -> bool:
    try:
        render('x{a=~"{{variant}}"}', CONTEXT, value)
    except TemplateError:
        return False
    return True


# --- the by-variant rewrite ---------------------------------------------------------------------------------

REWRITES = [
    (
        'sum(m{e="{{experiment}}",variant="{{variant}}"})',
        'sum by (variant) (m{e="{{experiment}}",variant=~"a|b"})',
    ),
    (
        'sum(rate(m{variant="{{variant}}",code=~"5.."}[1m]))',
        'sum by (variant) (rate(m{variant=~"a|b",code=~"5.."}[1m]))',
    ),
    (
        'sum(rate(m{variant="{{variant}}",code=~"5.."}[1m])) / sum(rate(m{variant="{{variant}}"}[1m]))',
        'sum by (variant) (rate(m{variant=~"a|b",code=~"5.."}[1m])) / sum by (variant) (rate(m{variant=~"a|b"}[1m]))',
    ),
    (
        'histogram_quantile(0.95, sum by (le) (rate(h_bucket{variant="{{variant}}"}[1m])))',
        'histogram_quantile(0.95, sum by (le, variant) (rate(h_bucket{variant=~"a|b"}[1m])))',
    ),
    (
        'sum(increase(m{variant="{{variant}}"}[5m] offset 1m)) by (le)',
        'sum(increase(m{variant=~"a|b"}[5m] offset 1m)) by (le, variant)',
    ),
    ('sum by (variant) (m{variant="{{variant}}"})', 'sum by (variant) (m{variant=~"a|b"})'),
    ('100 * (avg(m{variant="{{variant}}"}) - 1)', '100 * (avg by (variant) (m{variant=~"a|b"}) - 1)'),
    (
        'max(max_over_time(m{variant="{{variant}}"}[10m])) + min(m{variant="{{variant}}"})',
        'max by (variant) (max_over_time(m{variant=~"a|b"}[10m])) + min by (variant) (m{variant=~"a|b"})',
    ),
    ('count(m{variant = "{{ variant }}"})', 'count by (variant) (m{variant =~ "a|b"})'),
    ("sum(m{variant='{{variant}}'})", "sum by (variant) (m{variant=~'a|b'})"),
    ('m{variant="{{variant}}"}', 'm{variant=~"a|b"}'),
    ('rate(m{variant="{{variant}}"}[1m])', 'rate(m{variant=~"a|b"}[1m])'),
    (
        'sum(sum by (code) (m{variant="{{variant}}"}))',
        'sum by (variant) (sum by (code, variant) (m{variant=~"a|b"}))',
    ),
]


@pytest.mark.parametrize(("template", "expected"), REWRITES)
def test_rewritable_forms(template: str, expected: str) -> None:
    assert rewrite_by_variant(template, ["a", "b"]) == expected


NOT_REWRITABLE = [
    ('sum(m{variant=~"{{variant}}"})', "other than"),
    ('sum(m{model="{{variant}}-svc",variant="{{variant}}"})', "other than"),
    ('sum(m{variant="{{variant}}-x"})', "other than"),
    ('sum(m{variant!="{{variant}}"})', "not variant="),
    ('sum(m{version="{{variant}}"})', "without exactly one"),
    ('sum(m{variant="{{variant}}"}) / sum(n)', "without exactly one"),
    ('sum(m{variant="{{variant}}",variant="{{variant}}"})', "without exactly one"),
    ('sum without (code) (m{variant="{{variant}}"})', "without"),
    ('sum(m{variant="{{variant}}"}) or vector(0)', "'or'"),
    ('sum(m{variant="{{variant}}"}) / on() sum(n{variant="{{variant}}"})', "modifier 'on'"),
    ('sum(m{variant="{{variant}}"}) > bool 1', "'>'"),
    ('sum(m{variant="{{variant}}"}) / rate(n{variant="{{variant}}"}[1m])', "not both aggregated"),
    ('rate(m{variant="{{variant}}"}[1m]) / rate(n{variant="{{variant}}"}[1m])', "not both aggregated"),
    ('topk(1, m{variant="{{variant}}"})', "function 'topk'"),
    ('sum(label_replace(m{variant="{{variant}}"}, "variant", "x", "", ""))', "label_replace"),
    ('sum(m{variant="{{variant}}"}[5m:1m])', "range vector outside"),
    ('sum(m{variant="{{variant}}"} @ 100)', "@"),
    ('-sum(m{variant="{{variant}}"})', "unexpected '-'"),
    ('sum({__name__=~"a|b",variant="{{variant}}"})', "__name__"),
    ('sum(metric_{{variant}}{variant="{{variant}}"})', "outside a string literal"),
    ("sum(m{variant=`{{variant}}`})", "other than"),
]


@pytest.mark.parametrize(("template", "reason"), NOT_REWRITABLE)
def test_forms_that_fall_back_name_the_reason(template: str, reason: str) -> None:
    with pytest.raises(NotRewritable, match=re.escape(reason)):
        rewrite_by_variant(template, ["a", "b"])


def test_variant_names_are_regex_escaped_in_the_rewrite() -> None:
    rewritten = rewrite_by_variant('sum(m{variant="{{variant}}"})', ["v1.0", "v(2)", 'q"x'])
    assert rewritten == r'sum by (variant) (m{variant=~"v1\\.0|v\\(2\\)|q\"x"})'


def test_plan_takes_the_by_variant_path_and_renders_it() -> None:
    plan = plan_queries('sum(m{e="{{experiment}}",variant="{{variant}}"})', CONTEXT, ["a", "b"])
    assert plan.path is QueryPath.BY_VARIANT
    assert plan.query == 'sum by (variant) (m{e="fraud",variant=~"a|b"})'


def test_plan_falls_back_with_a_reason_and_one_query_per_variant() -> None:
    plan = plan_queries('sum(m{variant="{{variant}}"}) or vector(0)', CONTEXT, ["a", "b"])
    assert plan.path is QueryPath.PER_VARIANT
    assert "or" in plan.reason
    assert dict(plan.per_variant) == {
        "a": 'sum(m{variant="a"}) or vector(0)',
        "b": 'sum(m{variant="b"}) or vector(0)',
    }


def test_plan_for_one_variant_needs_no_rewrite() -> None:
    plan = plan_queries('sum(m{variant="{{variant}}"})', CONTEXT, ["a"])
    assert plan.path is QueryPath.PER_VARIANT
    assert dict(plan.per_variant) == {"a": 'sum(m{variant="a"})'}


def test_plan_without_variant_is_shared() -> None:
    plan = plan_queries('sum(up{namespace="{{namespace}}"})', CONTEXT, ["a", "b"])
    assert plan.path is QueryPath.SHARED
    assert plan.query == 'sum(up{namespace="prod"})'


def test_plan_reports_rendering_errors_per_variant_instead_of_raising() -> None:
    plan = plan_queries('m{variant="{{variant}}"} + metric_{{variant}}', CONTEXT, ["ok", "not-ok"])
    assert plan.path is QueryPath.PER_VARIANT
    assert "not-ok" in plan.errors
    assert "ok" in plan.per_variant


def _example_queries() -> list[object]:
    params: list[object] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "ModelExperiment":
                continue
            analysis = doc["spec"]["analysis"]
            queries = [g["query"] for g in analysis.get("guardrails", []) if "query" in g]
            for metric in [analysis.get("primary"), *analysis.get("secondary", [])]:
                if metric:
                    queries += [
                        metric[k]
                        for k in ("successes", "trials", "count", "sum", "sumSquares")
                        if k in metric
                    ]
            params += [
                pytest.param(q, id=f"{path.stem}-{doc['metadata']['name']}-{i}")
                for i, q in enumerate(queries)
            ]
    return params


@pytest.mark.parametrize("template", _example_queries())
def test_example_queries_on_the_variant_label_take_one_query_per_tick(template: str) -> None:
    """The shipped examples are what users copy. Those that select by the `variant` label cost one query
    per tick; those that build another label from {{variant}} (e.g. service="ranker-{{variant}}")
    fall back, saying why."""
    plan = plan_queries(template, CONTEXT, ["champion", "challenger"])
    uses = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*\{\{\s*variant\s*\}\}[^"]*)"', template)
    if uses and all(
        label == "variant" and op == "=" and re.fullmatch(r"\{\{\s*variant\s*\}\}", value)
        for label, op, value in uses
    ):
        assert plan.path is QueryPath.BY_VARIANT, plan.reason
    else:
        assert plan.path is QueryPath.PER_VARIANT
        assert "not rewritable by variant" in plan.reason
