"""Parse the FHIRPath subset that search parameter expressions use into a small AST.

https://hl7.org/fhirpath/N1/

Nodes are plain tuples, so the extractor compiler and the definitions script can both walk
them: ``("member", name)``, ``("call", name, args)``, ``("dot", left, right)``,
``("index", base, n)``, ``("as", expr, type)``, ``("is", expr, type)``,
``("union", left, right)``, ``("cmp", op, left, right)``, ``("and"|"or", left, right)``,
``("lit", value)``, ``("var", name)``. Anything outside the subset raises FhirPathSyntaxError.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

Node = tuple[Any, ...]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>!=|[.,()\[\]|=])"
    r"|(?P<var>%[A-Za-z_][A-Za-z0-9_]*|\$this)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<quoted>`[^`]*`))"
)


class FhirPathSyntaxError(ValueError):
    """The expression is outside the FHIRPath subset this parser understands."""


def _tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise FhirPathSyntaxError(f"unexpected text at {pos} in {expr!r}")
        kind = m.lastgroup or ""
        text = m.group(kind)
        if kind == "quoted":
            kind, text = "id", text[1:-1]
        tokens.append((kind, text))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, expr: str) -> None:
        self.tokens = _tokenize(expr)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, text: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (text is not None and tok[1] != text):
            raise FhirPathSyntaxError(f"expected {text or 'more input'}, got {tok}")
        self.pos += 1
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] in texts and tok[0] in ("op", "id")

    def parse(self) -> Node:
        node = self.logical()
        if self.peek() is not None:
            raise FhirPathSyntaxError(f"trailing input {self.peek()}")
        return node

    def logical(self) -> Node:
        node = self.equality()
        while self.at("and", "or"):
            op = self.take()[1]
            node = (op, node, self.equality())
        return node

    def equality(self) -> Node:
        node = self.union()
        while self.at("=", "!="):
            op = self.take()[1]
            node = ("cmp", op, node, self.union())
        return node

    def union(self) -> Node:
        node = self.typed()
        while self.at("|"):
            self.take()
            node = ("union", node, self.typed())
        return node

    def typed(self) -> Node:
        node = self.invocation()
        while self.at("is", "as"):
            op = self.take()[1]
            node = (op, node, self.type_name())
        return node

    def type_name(self) -> str:
        name = self.take()[1]
        while self.at("."):  # qualified names such as FHIR.Quantity
            self.take()
            name = self.take()[1]
        return name

    def invocation(self) -> Node:
        node = self.term()
        while self.at(".", "["):
            if self.take()[1] == ".":
                node = ("dot", node, self.member_or_call())
            else:
                kind, text = self.take()
                if kind != "num":
                    raise FhirPathSyntaxError("only integer indexers are supported")
                self.take("]")
                node = ("index", node, int(text))
        return node

    def member_or_call(self) -> Node:
        kind, name = self.take()
        if kind != "id":
            raise FhirPathSyntaxError(f"expected a name, got {name!r}")
        if not self.at("("):
            return ("member", name)
        self.take("(")
        args: list[Node] = []
        while not self.at(")"):
            args.append(self.logical())
            if self.at(","):
                self.take()
        self.take(")")
        return ("call", name, tuple(args))

    def term(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise FhirPathSyntaxError("unexpected end of expression")
        kind, text = tok
        if kind == "op" and text == "(":
            self.take()
            node = self.logical()
            self.take(")")
            return node
        if kind == "str":
            self.take()
            return ("lit", re.sub(r"\\(.)", r"\1", text[1:-1]))
        if kind == "num":
            self.take()
            return ("lit", float(text) if "." in text else int(text))
        if kind == "var":
            self.take()
            return ("var", text)
        if kind == "id" and text in ("true", "false"):
            self.take()
            return ("lit", text == "true")
        return self.member_or_call()


@lru_cache(maxsize=4096)
def parse(expr: str) -> Node:
    """Parse a FHIRPath expression into the tuple AST."""
    return _Parser(expr).parse()


def split_union(node: Node) -> list[Node]:
    """Flatten top-level ``|`` unions into their operands."""
    if node[0] == "union":
        return split_union(node[1]) + split_union(node[2])
    return [node]


def root_type(node: Node) -> str | None:
    """Return the resource type an expression starts from (``Observation.code`` -> Observation)."""
    while node[0] in ("dot", "index", "as", "is", "and", "or", "cmp"):
        node = node[2] if node[0] == "cmp" else node[1]
    if node[0] == "member" and node[1][:1].isupper():
        return str(node[1])
    return None


def unparse(node: Node) -> str:
    """Render an AST back to FHIRPath text (canonical spacing, operators parenthesised)."""
    kind = node[0]
    if kind == "member":
        return str(node[1])
    if kind == "call":
        return f"{node[1]}({', '.join(unparse(a) for a in node[2])})"
    if kind == "dot":
        return f"{unparse(node[1])}.{unparse(node[2])}"
    if kind == "index":
        return f"{unparse(node[1])}[{node[2]}]"
    if kind in ("as", "is"):
        return f"({unparse(node[1])} {kind} {node[2]})"
    if kind == "union":
        return f"{unparse(node[1])} | {unparse(node[2])}"
    if kind == "cmp":
        return f"{_operand(node[2])} {node[1]} {_operand(node[3])}"
    if kind in ("and", "or"):
        return f"{_operand(node[1])} {kind} {_operand(node[2])}"
    if kind == "lit":
        value = node[1]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return str(value)
    return str(node[1])  # var


def _operand(node: Node) -> str:
    text = unparse(node)
    return f"({text})" if node[0] in ("union", "cmp", "and", "or") else text
