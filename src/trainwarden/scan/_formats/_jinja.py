"""Static analysis of Jinja chat templates for sandbox escapes (SSTI), without rendering them.

Model files ship chat templates (GGUF ``tokenizer.chat_template``, Hugging Face
``tokenizer_config.json``) that loaders render with Jinja; a renderer that is not sandboxed (the
llama-cpp-python CVE-2024-34359) executes whatever Python the template reaches through attribute
chains such as ``lipsum.__globals__.os.popen``. This module tokenizes every ``{{ }}`` and ``{% %}``
block the way Jinja's lexer does and reports references to Python internals and the string-building
tricks used to hide them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from trainwarden.findings import Severity

__all__ = ["TemplateIssue", "analyze_template", "rule_for"]

#: Names whose only use in a template is reaching Python internals: Jinja's default globals that are
#: plain Python functions/classes (their ``__globals__`` hold ``os``) and ``self`` (the template
#: reference whose private ``_TemplateReference__context`` exposes the render context).
_GADGET_NAMES = frozenset({"lipsum", "cycler", "joiner", "self"})

#: Python module and function names that a chat template has no reason to mention as identifiers.
_DANGEROUS_NAMES = frozenset(
    {
        "os",
        "sys",
        "subprocess",
        "builtins",
        "importlib",
        "popen",
        "system",
        "spawn",
        "spawnv",
        "execv",
        "execl",
        "check_output",
        "run",
        "eval",
        "exec",
        "compile",
        "getattr",
        "setattr",
        "globals",
        "locals",
        "vars",
        "open",
        "import_module",
        "load_module",
        "modules",
        "func_globals",
        "gi_frame",
        "f_globals",
        "f_back",
        "tb_frame",
        "co_code",
    }
)
#: Bare identifiers (not after ``.``) that are too common as variable names to flag outside an
#: attribute chain.
_ATTR_ONLY_NAMES = frozenset({"system", "run", "open", "modules", "compile", "vars", "locals"})

_LOADER_STATEMENTS = frozenset({"include", "import", "from", "extends"})
_DUNDER_FULL = re.compile(r"__\w+__")
_FORMAT_FIELD_ATTR = re.compile(r"\{[^{}]*[.\[][^{}]*\}")
_NAME = re.compile(r"[^\W\d]\w*")
_NUMBER = re.compile(r"\d[\d_]*(\.\d[\d_]*)?([eE][+-]?\d+)?")
_OPERATORS = (
    "**",
    "//",
    "==",
    "!=",
    "<=",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "~",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ".",
    ",",
    ":",
    "|",
    "=",
    "<",
    ">",
    ";",
)
_OPEN = {"(": ")", "[": "]", "{": "}"}
_MAX_ISSUES = 50


@dataclass(frozen=True)
class TemplateIssue:
    """One problem in a template.

    ``kind`` is ``escape``, ``obfuscation``, ``loader`` or ``syntax``.
    """

    kind: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class _Tok:
    kind: str  # name | string | number | op
    value: str
    pos: int
    raw: str = ""


class _TemplateSyntaxError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


def _python_dunders() -> frozenset[str]:
    # The dunder attributes Python objects actually have (an SSTI chain walks through these);
    # text like ParlAI's "__start__" token is not one of them.
    import sys
    import types

    names: set[str] = {"__globals__", "__builtins__", "__import__", "__subclasses__", "__mro__"}
    for obj in (object, type, types.FunctionType, types.ModuleType, sys, BaseException, str, dict):
        names.update(n for n in dir(obj) if n.startswith("__") and n.endswith("__"))
    names.update(n for n in dir(lambda: 0) if n.startswith("__") and n.endswith("__"))
    return frozenset(names)


PYTHON_DUNDERS = _python_dunders()


def special_token_dunder(s: str) -> str | None:
    """Why a special-token text handed to templates is dangerous (a real Python dunder name or
    underscores only), or None. Dunder-shaped tokens that Python objects do not have (ParlAI's
    ``__start__``) are harmless there."""
    stripped = s.strip()
    if stripped in PYTHON_DUNDERS:
        return "names a Python dunder attribute"
    if stripped and set(stripped) == {"_"}:
        return "is only underscores (building a dunder name)"
    return None


def dunder_text(s: str) -> str | None:
    """Why text handed to a template could name a Python dunder attribute, or None.

    Covers a whole dunder name, a fragment of one (leading or trailing ``__``) and underscore-only
    text (the pieces dunder names are built from).
    """
    if _DUNDER_FULL.search(s):
        return "names a Python dunder attribute"
    stripped = s.strip()
    if stripped and set(stripped) == {"_"}:
        return "is only underscores (building a dunder name)"
    if stripped.startswith("__") or stripped.endswith("__"):
        return "is a fragment of a dunder name"
    return None


def _unescape(body: str, pos: int) -> str:
    # Jinja's lexer: value.encode("ascii", "backslashreplace").decode("unicode-escape").
    try:
        return body.encode("ascii", "backslashreplace").decode("unicode-escape")
    except UnicodeDecodeError as e:
        raise _TemplateSyntaxError(f"invalid escape in string literal: {e.reason}", pos) from e


def _lex_block(src: str, i: int, end_marker: str) -> tuple[list[_Tok], int]:
    """Tokenize from ``i`` up to the matching ``end_marker`` at bracket depth 0.

    Returns the tokens and the index just after the end marker.
    """
    toks: list[_Tok] = []
    stack: list[str] = []
    n = len(src)
    while True:
        if i >= n:
            raise _TemplateSyntaxError(f"unterminated block, expected {end_marker!r}", i)
        c = src[i]
        if c.isspace():
            i += 1
            continue
        if not stack:
            for lead in ("-", "+", ""):
                if src.startswith(lead + end_marker, i):
                    return toks, i + len(lead) + len(end_marker)
        if c in "'\"":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            if j >= n:
                raise _TemplateSyntaxError("unterminated string literal", i)
            raw = src[i + 1 : j]
            toks.append(_Tok("string", _unescape(raw, i), i, raw))
            i = j + 1
            continue
        m = _NAME.match(src, i)
        if m:
            toks.append(_Tok("name", m.group(), i))
            i = m.end()
            continue
        m = _NUMBER.match(src, i)
        if m:
            toks.append(_Tok("number", m.group(), i))
            i = m.end()
            continue
        for op in _OPERATORS:
            if src.startswith(op, i):
                break
        else:
            raise _TemplateSyntaxError(f"unexpected character {c!r}", i)
        if op in _OPEN:
            stack.append(_OPEN[op])
        elif op in (")", "]", "}") and stack:
            if stack[-1] != op:
                raise _TemplateSyntaxError(f"unbalanced {op!r}", i)
            stack.pop()
        toks.append(_Tok("op", op, i))
        i += len(op)


def _tokenize(src: str) -> list[list[_Tok]]:
    """Split a template into its expression/statement blocks, each a token list."""
    blocks: list[list[_Tok]] = []
    # Jinja drops one trailing newline before lexing (keep_trailing_newline=False).
    for nl in ("\r\n", "\n", "\r"):
        if src.endswith(nl):
            src = src[: -len(nl)]
            break
    i = 0
    n = len(src)
    while i < n:
        j = src.find("{", i)
        if j < 0 or j + 1 >= n:
            break
        nxt = src[j + 1]
        if nxt == "#":
            k = src.find("#}", j + 2)
            if k < 0 and j + 2 == n:
                break  # Jinja accepts a bare "{#" at the very end
            if k < 0:
                raise _TemplateSyntaxError("unterminated comment", j)
            i = k + 2
            continue
        if nxt not in "{%":
            i = j + 1
            continue
        start = j + 2
        if start < n and src[start] in "-+":
            start += 1
        toks, i = _lex_block(src, start, "}}" if nxt == "{" else "%}")
        if nxt == "%" and toks and toks[0].kind == "name" and toks[0].value == "raw":
            m = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}").search(src, i)
            if m is None and i == n:
                break  # Jinja accepts "{% raw %}" as the very last thing
            if m is None:
                raise _TemplateSyntaxError("unterminated raw block", j)
            i = m.end()
            continue
        blocks.append(toks)
    return blocks


def _merge_adjacent_strings(toks: list[_Tok]) -> list[_Tok]:
    # Jinja's parser concatenates adjacent string literals ('__cla' 'ss__' == '__class__').
    out: list[_Tok] = []
    for t in toks:
        if t.kind == "string" and out and out[-1].kind == "string":
            prev = out[-1]
            out[-1] = _Tok("string", prev.value + t.value, prev.pos, prev.raw + t.raw)
        else:
            out.append(t)
    return out


class _Analyzer:
    def __init__(self) -> None:
        self.issues: list[TemplateIssue] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, kind: str, severity: Severity, message: str, tok: _Tok) -> None:
        key = (kind, message)
        if key in self._seen or len(self.issues) >= _MAX_ISSUES:
            return
        self._seen.add(key)
        self.issues.append(TemplateIssue(kind, severity, message, {"offset": tok.pos}))

    def check_string(self, tok: _Tok) -> None:
        s = tok.value
        why = dunder_text(s)
        if why is not None:
            full = _DUNDER_FULL.search(s) is not None
            self.add(
                "escape" if full else "obfuscation",
                Severity.CRITICAL if full else Severity.HIGH,
                f"string literal {s[:60]!r} {why}",
                tok,
            )
        elif "%c" in s:
            self.add(
                "obfuscation",
                Severity.HIGH,
                "string literal uses %c to build text from character codes",
                tok,
            )

    def check_block(self, toks: list[_Tok]) -> None:
        if toks and toks[0].kind == "name" and toks[0].value in _LOADER_STATEMENTS:
            self.add(
                "loader",
                Severity.HIGH,
                f"template statement {{% {toks[0].value} %}} loads another template",
                toks[0],
            )
        toks = _merge_adjacent_strings(toks)
        for idx, t in enumerate(toks):
            prev = toks[idx - 1] if idx > 0 else None
            nxt = toks[idx + 1] if idx + 1 < len(toks) else None
            after_dot = prev is not None and prev.kind == "op" and prev.value == "."
            if t.kind == "string":
                self.check_string(t)
                if (
                    nxt is not None
                    and nxt.value == "."
                    and idx + 2 < len(toks)
                    and toks[idx + 2].value in ("format", "format_map")
                    and _FORMAT_FIELD_ATTR.search(t.value)
                ):
                    self.add(
                        "escape",
                        Severity.CRITICAL,
                        "str.format field reaches attributes or items of its arguments",
                        t,
                    )
                continue
            if t.kind != "name":
                continue
            name = t.value
            if "__" in name:
                self.add(
                    "escape",
                    Severity.CRITICAL,
                    f"template reaches the Python internal name {name!r}",
                    t,
                )
            elif set(name) == {"_"}:
                self.add(
                    "obfuscation",
                    Severity.HIGH,
                    f"identifier {name!r} made only of underscores (building a dunder name)",
                    t,
                )
            elif name in _GADGET_NAMES and not after_dot:
                self.add(
                    "escape",
                    Severity.CRITICAL,
                    f"template uses {name!r}, a Jinja global whose Python internals lead to "
                    "os and builtins",
                    t,
                )
            elif name == "namespace" and not after_dot and nxt is not None and nxt.value == ".":
                self.add(
                    "escape",
                    Severity.CRITICAL,
                    "template reaches attributes of the namespace class itself",
                    t,
                )
            elif name in _DANGEROUS_NAMES and (after_dot or name not in _ATTR_ONLY_NAMES):
                self.add(
                    "escape",
                    Severity.CRITICAL,
                    f"template names {name!r}, a Python module or function that runs code or "
                    "touches the system",
                    t,
                )
            if prev is not None and prev.value == "|":
                self.check_filter(toks, idx)
        self.check_subscripts(toks)

    def check_filter(self, toks: list[_Tok], idx: int) -> None:
        name = toks[idx].value
        nxt = toks[idx + 1] if idx + 1 < len(toks) else None
        if name == "attr":
            args = _call_args(toks, idx + 1)
            if args is None or len(args) != 1 or args[0].kind != "string":
                self.add(
                    "obfuscation",
                    Severity.CRITICAL,
                    "attr() filter with a computed attribute name",
                    toks[idx],
                )
            elif args[0].value in _DANGEROUS_NAMES or args[0].value in _GADGET_NAMES:
                self.add(
                    "escape",
                    Severity.CRITICAL,
                    f"attr() filter reaches {args[0].value!r}",
                    toks[idx],
                )
        elif name in ("string", "list") and nxt is not None and nxt.value == "[":
            self.add(
                "obfuscation",
                Severity.HIGH,
                f"indexing into the |{name} of an object extracts characters to build names",
                toks[idx],
            )
        elif (
            name == "string"
            and nxt is not None
            and nxt.value == "|"
            and idx + 2 < len(toks)
            and toks[idx + 2].value in ("list", "batch", "slice")
        ):
            self.add(
                "obfuscation",
                Severity.HIGH,
                "splitting the |string of an object into characters to build names",
                toks[idx],
            )

    def check_subscripts(self, toks: list[_Tok]) -> None:
        stack: list[int] = []
        for idx, t in enumerate(toks):
            if t.kind != "op":
                continue
            if t.value in ("[", "(", "{"):
                stack.append(idx)
            elif t.value in ("]", ")", "}") and stack:
                start = stack.pop()
                if t.value != "]" or start == 0:
                    continue
                before = toks[start - 1]
                is_subscript = before.kind in ("name", "string") or before.value in (")", "]")
                inner = toks[start + 1 : idx]
                if not is_subscript or len(inner) <= 1:
                    continue
                has_string = any(x.kind == "string" for x in inner)
                builds = any(x.kind == "op" and x.value in ("~", "+", "%", "*", "|") for x in inner)
                if has_string and builds:
                    self.add(
                        "obfuscation",
                        Severity.HIGH,
                        "subscript key computed from strings (hides the attribute being reached)",
                        t,
                    )


def _call_args(toks: list[_Tok], idx: int) -> list[_Tok] | None:
    """Tokens of a call's arguments if they are single tokens separated by commas."""
    if idx >= len(toks) or toks[idx].value != "(":
        return []
    args: list[_Tok] = []
    j = idx + 1
    while j < len(toks):
        t = toks[j]
        if t.kind == "op" and t.value == ")":
            return args
        if j + 1 < len(toks) and toks[j + 1].value in (",", ")"):
            args.append(t)
            j += 2 if toks[j + 1].value == "," else 1
            continue
        return None
    return None


def analyze_template(src: str) -> list[TemplateIssue]:
    """Return the issues found in one Jinja template (empty for an ordinary chat template).

    A template that cannot be tokenized is reported as a ``syntax`` issue: the scanner cannot vouch
    for what a renderer would accept.
    """
    analyzer = _Analyzer()
    try:
        blocks = _tokenize(src)
    except _TemplateSyntaxError as e:
        return [
            TemplateIssue(
                "syntax",
                Severity.HIGH,
                f"template cannot be tokenized: {e}",
                {"offset": e.pos},
            )
        ]
    for toks in blocks:
        analyzer.check_block(toks)
    return analyzer.issues


_KIND_RULES = {
    "escape": "TWS-TPL-001",
    "obfuscation": "TWS-TPL-002",
    "loader": "TWS-TPL-003",
    "syntax": "TWS-TPL-004",
}


def rule_for(issue: TemplateIssue) -> str:
    """The stable rule id of a template issue (shared by every container that carries templates)."""
    return _KIND_RULES[issue.kind]
