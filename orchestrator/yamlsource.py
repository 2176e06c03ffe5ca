"""YAML loading that remembers where every value came from.

Operators fix inventories from error messages at 2 a.m., so every error must name the file, line,
column and field path. PyYAML's plain loaders drop positions (and silently accept duplicate keys), so
we compose the node graph ourselves and keep a map from field path to source position.

A file is untrusted input: aliases are expanded with a bound on the values they add, nesting is
bounded before the (recursive) composer can exhaust the stack, and a recursive alias is named as
such, so a hostile file is refused in milliseconds with its position instead of eating memory.

This module depends on nothing else in the package.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 32
"""Nesting levels a document may have; an inventory needs fewer than ten."""
MAX_ALIAS_VALUES = 10_000
"""Values that alias expansion may add to a small document (a billion-laughs file adds billions)."""
ALIAS_RATIO = 10
"""A larger document may add this many values through aliases for each value it writes out: an
inventory of thousands of nodes that each name a shared anchor stays well within it, while the work
stays proportional to the file."""
MAX_BYTES = 16 * 1024 * 1024
"""Largest file read; an inventory of thousands of nodes is well under a megabyte."""


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


def format_path(path: Iterable[str | int]) -> str:
    """`nodes[2].health.url` style, as operators read it in the file."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(document)"


class SourceError(Exception):
    """An input error pinned to a place in a file."""

    def __init__(self, file: str, position: Position | None, field_path: str, message: str) -> None:
        self.file = file
        self.position = position
        self.field_path = field_path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file
        if self.position is not None:
            where += f":{self.position.line}:{self.position.column}"
        return f"{where}: {self.field_path}: {self.message}"


@dataclass
class Document:
    """Plain Python data plus the position of every mapping key and value."""

    file: str
    data: Any
    positions: dict[PathKey, Position] = field(default_factory=dict)

    def locate(self, path: Iterable[str | int]) -> Position | None:
        """The position of `path`, or of its nearest ancestor that exists in the file."""
        key = tuple(path)
        while True:
            if key in self.positions:
                return self.positions[key]
            if not key:
                return None
            key = key[:-1]

    def error(self, path: Iterable[str | int], message: str) -> SourceError:
        path = tuple(path)
        return SourceError(self.file, self.locate(path), format_path(path), message)


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing nesting deeper than MAX_DEPTH while composing (PyYAML's composer
    recurses once per level, so a deep file would otherwise end in RecursionError), and keeping
    where each alias was written so an expansion error can point at it."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file = file
        self.path: list[str | int] = []
        self.composed = 0  # values written out (aliases not counted)
        self.alias_marks: dict[tuple[int, int | None], Position] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            if (at := _mark(event.start_mark)) is not None:
                self.alias_marks[_child_key(parent, index)] = at
            return super().compose_node(parent, index)
        self.composed += 1
        if parent is not None:
            self.path.append(_part(index))
        try:
            if len(self.path) > MAX_DEPTH:
                raise SourceError(
                    self.file,
                    _mark(event.start_mark),
                    format_path(self.path),
                    f"nested deeper than {MAX_DEPTH} levels",
                )
            return super().compose_node(parent, index)
        finally:
            if parent is not None:
                self.path.pop()


def _part(index: Any) -> str | int:
    """The path part of a child being composed: its sequence index, or its mapping key as written."""
    if isinstance(index, int):
        return index
    if isinstance(index, yaml.ScalarNode):
        return str(index.value)
    return "(key)"


def _child_key(parent: yaml.Node | None, index: Any) -> tuple[int, int | None]:
    """A child's place in the composed graph: (parent, sequence index or mapping key node)."""
    if isinstance(index, int):
        return id(parent), index
    return id(parent), None if index is None else id(index)


def _mark(mark: Any) -> Position | None:
    return None if mark is None else Position(mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(
        self, file: str, alias_marks: dict[tuple[int, int | None], Position], alias_limit: int
    ) -> None:
        self.file = file
        self.positions: dict[PathKey, Position] = {}
        self._constructor = yaml.SafeLoader("")  # only used to resolve scalars to Python types
        self._alias_marks = alias_marks
        self._open: set[int] = set()  # nodes being built: meeting one again is a recursive alias
        self._alias: tuple[Position, PathKey] | None = None  # the outermost alias being expanded
        self._alias_values = 0
        self._alias_limit = alias_limit

    def child(self, parent: yaml.Node, index: int | yaml.Node, node: yaml.Node, path: PathKey) -> Any:
        at = self._alias_marks.get(_child_key(parent, index))
        if at is None or self._alias is not None:
            return self.build(node, path)
        self._alias = (at, path)
        try:
            return self.build(node, path)
        finally:
            self._alias = None

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        if self._alias is not None:
            self._alias_values += 1
            if self._alias_values > self._alias_limit:
                at, where = self._alias
                raise SourceError(
                    self.file,
                    at,
                    _fmt(where),
                    f"aliases expand to more than {self._alias_limit} values; write the values out",
                )
        if id(node) in self._open:
            at, where = self._alias or (_pos(node), path)
            raise SourceError(self.file, at, _fmt(where), "recursive alias: a value cannot contain itself")
        if len(path) > MAX_DEPTH:
            raise SourceError(self.file, _pos(node), _fmt(path), f"nested deeper than {MAX_DEPTH} levels")
        self.positions[path] = _pos(node)
        if isinstance(node, yaml.ScalarNode):
            return self.build_scalar(node, path)
        self._open.add(id(node))
        try:
            return self._build_collection(node, path)
        finally:
            self._open.discard(id(node))

    def _build_collection(self, node: yaml.Node, path: PathKey) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise SourceError(
                        self.file, _pos(key_node), _fmt(path), "YAML merge keys (<<) are not supported"
                    )
                key = self.build_scalar(key_node, path)
                if isinstance(key, (dict, list)) or key is None:
                    raise SourceError(
                        self.file, _pos(key_node), _fmt(path), "mapping keys must be plain scalars"
                    )
                if key in out:
                    raise SourceError(self.file, _pos(key_node), _fmt((*path, key)), f"duplicate key {key!r}")
                child = (*path, key)
                out[key] = self.child(node, key_node, value_node, child)
                # The key's own line is where an operator looks for the field.
                self.positions[child] = _pos(key_node)
            return out
        assert isinstance(node, yaml.SequenceNode)
        return [self.child(node, i, item, (*path, i)) for i, item in enumerate(node.value)]

    def build_scalar(self, node: yaml.Node, path: PathKey) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise SourceError(self.file, _pos(node), _fmt(path), "expected a plain value here")
        try:
            return self._constructor.construct_object(node, deep=True)
        except (ValueError, yaml.YAMLError) as exc:
            # A number too long for Python to convert, or a timestamp on the 31st of February.
            reason = "a number this long is not a valid value" if "digits" in str(exc) else str(exc)
            raise SourceError(self.file, _pos(node), _fmt(path), f"unreadable value: {reason}") from None


def _fmt(path: PathKey) -> str:
    return format_path(path)


def parse(text: str, file: str) -> Document:
    """Parse YAML text; syntax errors and duplicate keys become SourceError."""
    loader = _BoundedLoader(text, file)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Position(mark.line + 1, mark.column + 1) if mark is not None else None
        raise SourceError(file, pos, "(document)", f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise SourceError(file, None, "(document)", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if node is None:
        return Document(file, None, {})
    builder = _Builder(file, loader.alias_marks, max(MAX_ALIAS_VALUES, ALIAS_RATIO * loader.composed))
    data = builder.build(node, ())
    return Document(file, data, builder.positions)


def load(path: str | Path) -> Document:
    p = Path(path)
    try:
        if p.is_dir():
            raise SourceError(str(p), None, "(file)", "is a directory, not an inventory file")
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise SourceError(str(p), None, "(file)", f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SourceError(str(p), None, "(file)", "file not found") from None
    except UnicodeDecodeError as exc:
        raise SourceError(str(p), None, "(file)", f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise SourceError(str(p), None, "(file)", f"cannot read: {exc.strerror}") from None
    return parse(text, str(p))


def validate(doc: Document, model: type[M], prefix: PathKey = ()) -> M:
    """Validate the section of `doc` at `prefix` with a pydantic model.

    Raises SourceError for the first problem, in file order, so the operator fixes them top down.
    """
    data: Any = doc.data
    for part in prefix:
        data = data[part] if data is not None else None
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = sorted(
            exc.errors(),
            key=lambda e: _order(doc.locate((*prefix, *_clean_loc(e["loc"], data)))),
        )
        first = errors[0]
        loc = _clean_loc(first["loc"], data)
        raise doc.error((*prefix, *loc), _describe(model, loc, first)) from None


def _order(pos: Position | None) -> tuple[int, int]:
    return (pos.line, pos.column) if pos else (0, 0)


def _clean_loc(loc: tuple[Any, ...], data: Any) -> PathKey:
    """The part of a pydantic error location that names keys and indexes in the operator's file.

    pydantic inserts union-member, validator and discriminator-tag names (e.g. 'function-after[...]',
    'list[str]', 'int', a tag) into locations. A name that is not a key of the mapping it would index
    is such a marker, unless it is the last part: then it is a missing field.
    """
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(part, str) and _is_synthetic(part):
            continue
        is_key = isinstance(current, dict) and part in current
        is_index = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if is_key or is_index:
            current = current[part]
        elif not (isinstance(current, dict) and i == len(loc) - 1):
            continue
        out.append(part)
    return tuple(out)


def _is_synthetic(part: str) -> bool:
    return "[" in part or part in {"int", "str", "float", "bool", "list", "dict", "none"}


def _describe(model: type[BaseModel], loc: PathKey, err: Any) -> str:
    if err["type"] == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1) if known else []
        msg = "unknown field"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        elif known:
            msg += f"; expected one of: {', '.join(sorted(known))}"
        return msg
    if err["type"] == "missing":
        return "required field is missing"
    explained = _type_hint(err["type"], err.get("input")) or _bound(err["type"], err.get("ctx") or {})
    if explained:
        return explained
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


_BOUNDS = {
    "greater_than": ("gt", "must be greater than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}


def _bound(kind: str, ctx: dict[str, Any]) -> str | None:
    if kind not in _BOUNDS:
        return None
    key, text = _BOUNDS[kind]
    return f"{text} {ctx[key]}"


def _type_hint(kind: str, value: Any) -> str | None:
    """Explain YAML's implicit typing, the usual cause of a type error in a hand-written file.

    The offending value is never echoed: it may be a secret typed into the wrong field.
    """
    if kind == "string_type":
        if isinstance(value, bool):
            return "expected a string, but YAML reads this unquoted value as a boolean: quote it"
        if isinstance(value, int | float):
            return "expected a string, but YAML reads this unquoted value as a number: quote it"
        if value is None:
            return "expected a string, but the value is empty"
        return None
    if kind in ("int_type", "float_type") and isinstance(value, str):
        if _reads_as_number(value):
            return "expected a number, but the value is a quoted string: remove the quotes"
        # `two`, `20s`: no quotes to remove; the value is text whatever its quoting.
        return "expected a number, but the value is text (no units: seconds are a plain number)"
    if kind in ("int_type", "float_type") and isinstance(value, bool):
        return "expected a number, not a boolean"
    if kind == "bool_type" and isinstance(value, str):
        return "expected true or false, unquoted"
    if kind in ("model_type", "dict_type"):
        return "expected a mapping of settings" + (", but the value is empty" if value is None else "")
    if kind == "list_type":
        return "expected a list" + (", but the value is empty" if value is None else "")
    return None


def _reads_as_number(value: str) -> bool:
    try:
        float(value.strip())
    except ValueError:
        return False
    return True


def _fields_at(model: type[BaseModel], path: PathKey) -> list[str]:
    """Field names of the model found by walking `path` through nested models and containers."""
    current: Any = model
    for part in path:
        current = _descend(current, part)
        if current is None:
            return []
    cls = _model_of(current)
    return list(cls.model_fields) if cls else []


def _descend(tp: Any, part: str | int) -> Any:
    cls = _model_of(tp)
    if cls is not None and isinstance(part, str):
        field = cls.model_fields.get(part)
        return field.annotation if field else None
    for arg in get_args(tp) or ():
        if arg is type(None):
            continue
        # list[X] (int part) or dict[str, X] (str part): the element type is the last argument
        origin = get_origin(tp)
        if origin in (list, tuple, dict) or isinstance(part, int):
            return get_args(tp)[-1]
        found = _descend(arg, part)
        if found is not None:
            return found
    return None


def _model_of(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
