"""A small parser for the script text operators send: statement lists of simple pipelines.

Supported: statements separated by `;` or newlines, `|` pipelines, commands with named parameters
(`-Name value`, `-Name:value`), switches, positional arguments, quoted strings, numbers, `a,b` arrays,
`@(...)`, `$true`/`$false`/`$null`, `@{K='v'; ...}` hashtables, `#` comments and backtick line
continuations, and a literal on its own as a statement. Everything else (variables, script blocks,
sub-expressions, operators, keywords) is a ParseError, which a client sees as PowerShell's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from simfarm.powershell.cmdlet import NO_VALUE
from simfarm.powershell.pipeline import CommandSpec


@dataclass(frozen=True)
class Literal:
    """A statement that is just a value: PowerShell writes it to the output."""

    value: Any


Element = CommandSpec | Literal
Statement = list[Element]


class ParseError(Exception):
    def __init__(self, error_id: str, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message


_NUMBER = re.compile(r"^-?(0x[0-9a-fA-F]+|\d+(\.\d+)?)$")
_SPECIAL = set("|;,(){}@'\"$#\n`")
_KEYWORDS = {
    "if",
    "else",
    "elseif",
    "foreach",
    "for",
    "while",
    "do",
    "switch",
    "function",
    "try",
    "catch",
    "finally",
    "return",
    "param",
    "begin",
    "process",
    "end",
    "throw",
    "trap",
    "break",
    "continue",
}


def parse(text: str) -> list[Statement]:
    return _Parser(text).script()


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    # --- characters -------------------------------------------------------------------------------

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_blanks(self) -> None:
        """Spaces, tabs, comments and backtick line continuations (not newlines)."""
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "`" and self.s[self.i + 1 : self.i + 2] in ("\n", "\r"):
                self.i += 2
            elif c == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def unexpected(self) -> ParseError:
        token = self.s[self.i :].split(None, 1)[0] if self.s[self.i :].strip() else self.peek()
        return ParseError("UnexpectedToken", f"Unexpected token '{token}' in expression or statement.")

    # --- grammar ----------------------------------------------------------------------------------

    def script(self) -> list[Statement]:
        statements: list[Statement] = []
        while True:
            self.skip_blanks()
            c = self.peek()
            if not c:
                return statements
            if c in ";\n":
                self.i += 1
                continue
            statements.append(self.pipeline())

    def pipeline(self) -> Statement:
        elements: list[Element] = [self.element()]
        while True:
            self.skip_blanks()
            if self.peek() != "|":
                break
            self.i += 1
            self.skip_blanks()
            while self.peek() == "\n":  # a pipe may end a line
                self.i += 1
                self.skip_blanks()
            if not self.peek():
                raise ParseError("EmptyPipeElement", "An empty pipe element is not allowed.")
            elements.append(self.element())
        c = self.peek()
        if c and c not in ";\n":
            raise self.unexpected()
        return elements

    def element(self) -> Element:
        self.skip_blanks()
        c = self.peek()
        if c in ("'", '"', "@", "$") or _NUMBER.match(self.word_ahead()):
            value = self.array()
            return Literal(value)
        name = self.bareword()
        if not name or name.lower() in _KEYWORDS or name[0] in "&.[=<>!+*/%":
            raise (
                self.unexpected()
                if name.lower() not in _KEYWORDS
                else ParseError(
                    "UnsupportedStatement", f"The '{name}' statement is not supported by this runspace."
                )
            )
        args: list[tuple[str | None, Any]] = []
        while True:
            self.skip_blanks()
            c = self.peek()
            if not c or c in "|;\n":
                return CommandSpec(name=name, args=tuple(args))
            if c == "-" and self.s[self.i + 1 : self.i + 2].isalpha():
                word = self.bareword()
                if ":" in word:
                    pname, rest = word[1:].split(":", 1)
                    if rest:
                        args.append((pname, _scalar(rest)))
                    else:
                        self.skip_blanks()
                        args.append((pname, self.array()))
                else:
                    args.append((word[1:], NO_VALUE))
                continue
            args.append((None, self.array()))

    def word_ahead(self) -> str:
        j = self.i
        while j < len(self.s) and self.s[j] not in _SPECIAL and not self.s[j].isspace():
            j += 1
        return self.s[self.i : j]

    def bareword(self) -> str:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in _SPECIAL and not self.s[self.i].isspace():
            self.i += 1
        return self.s[start : self.i]

    def array(self) -> Any:
        """One argument: a value, or values separated by commas (an array)."""
        values = [self.value()]
        while True:
            self.skip_blanks()
            if self.peek() != ",":
                break
            self.i += 1
            self.skip_blanks()
            values.append(self.value())
        return values[0] if len(values) == 1 else values

    def value(self) -> Any:
        c = self.peek()
        if c == "'":
            return self.single_quoted()
        if c == '"':
            return self.double_quoted()
        if c == "$":
            word = self.bareword_after(1)
            constants = {"true": True, "false": False, "null": None}
            if word.lower() in constants:
                self.i += 1 + len(word)
                return constants[word.lower()]
            raise ParseError(
                "VariableNotSupported",
                f"The variable '${word}' cannot be used: variables are not supported here.",
            )
        if self.s.startswith("@{", self.i):
            return self.hashtable()
        if self.s.startswith("@(", self.i):
            self.i += 2
            self.skip_blanks()
            items: list[Any] = []
            if self.peek() != ")":
                found = self.array()
                items = found if isinstance(found, list) else [found]
            self.skip_blanks()
            if self.peek() != ")":
                raise ParseError("MissingEndParenthesisInExpression", "Missing closing ')' in expression.")
            self.i += 1
            return items
        if not c or c in _SPECIAL:
            raise self.unexpected()
        return _scalar(self.bareword())

    def bareword_after(self, offset: int) -> str:
        j = self.i + offset
        while j < len(self.s) and (self.s[j].isalnum() or self.s[j] == "_"):
            j += 1
        return self.s[self.i + offset : j]

    def single_quoted(self) -> str:
        out = []
        self.i += 1
        while True:
            if self.i >= len(self.s):
                raise ParseError(
                    "TerminatorExpectedAtEndOfString", "The string is missing the terminator: '."
                )
            c = self.s[self.i]
            if c == "'":
                if self.s[self.i + 1 : self.i + 2] == "'":
                    out.append("'")
                    self.i += 2
                    continue
                self.i += 1
                return "".join(out)
            out.append(c)
            self.i += 1

    def double_quoted(self) -> str:
        escapes = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "`": "`", '"': '"', "$": "$"}
        out = []
        self.i += 1
        while True:
            if self.i >= len(self.s):
                raise ParseError(
                    "TerminatorExpectedAtEndOfString", 'The string is missing the terminator: ".'
                )
            c = self.s[self.i]
            if c == "`" and self.i + 1 < len(self.s):
                nxt = self.s[self.i + 1]
                out.append(escapes.get(nxt, nxt))
                self.i += 2
                continue
            if c == '"':
                if self.s[self.i + 1 : self.i + 2] == '"':
                    out.append('"')
                    self.i += 2
                    continue
                self.i += 1
                return "".join(out)
            if c == "$" and (
                self.s[self.i + 1 : self.i + 2].isalpha() or self.s[self.i + 1 : self.i + 2] == "("
            ):
                raise ParseError(
                    "VariableNotSupported",
                    "Expandable strings with variables or sub-expressions are not supported.",
                )
            out.append(c)
            self.i += 1

    def hashtable(self) -> dict[str, Any]:
        self.i += 2
        table: dict[str, Any] = {}
        while True:
            self.skip_blanks()
            c = self.peek()
            if c in (";", "\n"):
                self.i += 1
                continue
            if c == "}":
                self.i += 1
                return table
            if not c:
                raise ParseError(
                    "MissingEndCurlyBrace", "Missing closing '}' in statement block or type definition."
                )
            key = self.value() if c in "'\"" else self.key()
            self.skip_blanks()
            if self.peek() != "=":
                raise ParseError(
                    "MissingEqualsInHashLiteral", "Missing '=' operator after key in hash literal."
                )
            self.i += 1
            self.skip_blanks()
            table[str(key)] = self.array()

    def key(self) -> str:
        start = self.i
        while self.i < len(self.s) and (self.s[self.i].isalnum() or self.s[self.i] in "_-."):
            self.i += 1
        if start == self.i:
            raise self.unexpected()
        return self.s[start : self.i]


def _scalar(word: str) -> Any:
    """A bareword argument: numbers become numbers, everything else stays a string."""
    if _NUMBER.match(word):
        if word.lower().lstrip("-").startswith("0x"):
            return int(word, 16)
        return float(word) if "." in word else int(word)
    return word
