"""Differential test of the template lexer against Jinja's own: it must see every name Jinja sees.

A name or string that Jinja's lexer produces but ours misses would be a blind spot an SSTI payload
could hide in; a template Jinja accepts but ours rejects would be a false alarm.
"""

from __future__ import annotations

import jinja2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import TemplateSyntaxError

from trainwarden.scan._formats._jinja import _tokenize, _unescape

_PIECES = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{{-",
    "-}}",
    "{%-",
    "-%}",
    "{%+",
    "{% raw %}",
    "{% endraw %}",
    "{%- raw -%}",
    " ",
    "\n",
    "x",
    "__class__",
    "lipsum",
    ".",
    "|",
    "attr",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "'a'",
    '"b"',
    "'\\x5f\\x5f'",
    "'}}'",
    "'%}'",
    "'#}'",
    '"\\""',
    "~",
    "+",
    "1",
    "0x1f",
    "1_0",
    "2.5e3",
    ",",
    ":",
    "=",
    "set",
    "if",
    "endif",
    "for",
    "in",
    "endfor",
    "text",
]

_ENV = jinja2.Environment()  # noqa: S701  (lexes and parses only, never renders HTML)


def _jinja_tokens(src: str) -> tuple[list[str], list[str]] | None:
    try:
        _ENV.parse(src)  # Jinja accepts the template (lexing alone is lazy about errors)
        toks = list(_ENV.lex(src))
    except TemplateSyntaxError:
        return None
    names = [v for _, kind, v in toks if kind == "name"]
    strings = [_unescape(v[1:-1], 0) for _, kind, v in toks if kind == "string"]
    return names, strings


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=25))
def test_lexer_sees_every_name_and_string_jinja_sees(pieces: list[str]) -> None:
    src = "".join(pieces)
    expected = _jinja_tokens(src)
    if expected is None:
        return
    names, strings = expected
    blocks = _tokenize(src)  # must not raise: Jinja accepted the template
    ours = [t for block in blocks for t in block]
    our_names = [t.value for t in ours if t.kind == "name"]
    our_strings = [t.value for t in ours if t.kind == "string"]
    for n in names:
        assert n in our_names, (src, n)
    for s in strings:
        assert s in our_strings, (src, s)


_EXPR_TOKENS = [
    "x",
    "__class__",
    "_TemplateReference__context",
    ".",
    "|",
    "attr",
    "(",
    ")",
    "[",
    "]",
    "'a'",
    "'\\x5f'",
    '"\\u005f\\u005f"',
    "'}}'",
    "'%}'",
    "~",
    "+",
    "1",
    ",",
    " ",
]
_exprs = st.lists(st.sampled_from(_EXPR_TOKENS), min_size=1, max_size=12).map("".join)
_blocks = st.one_of(
    _exprs.map(lambda e: "{{ " + e + " }}"),
    _exprs.map(lambda e: "{{- " + e + " -}}"),
    _exprs.map(lambda e: "{% set y = " + e + " %}"),
    _exprs.map(lambda e: "{% if " + e + " %}t{% endif %}"),
    st.sampled_from(["text ", "{# c #}", "{% raw %}{{ z }}{% endraw %}", "\n"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_blocks, min_size=1, max_size=6).map("".join))
def test_lexer_matches_jinja_on_structured_templates(src: str) -> None:
    expected = _jinja_tokens(src)
    if expected is None:
        return
    names, strings = expected
    ours = [t for block in _tokenize(src) for t in block]
    assert set(names) <= {t.value for t in ours if t.kind == "name"}, src
    assert set(strings) <= {t.value for t in ours if t.kind == "string"}, src
