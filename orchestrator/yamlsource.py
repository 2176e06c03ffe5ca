"""YAML loading that remembers where every value came from.

Operators fix inventories from error messages at 2 a.m., so every error must name the file, line,
column and field path. PyYAML's plain loaders drop positions (and silently accept duplicate keys), so
we compose the node graph ourselves and keep a map from field path to source position.

This module is shared by the orchestrator core and the simulated farm; it depends on nothing else in
the package.
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


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: dict[PathKey, Position] = {}
        self._constructor = yaml.SafeLoader("")  # only used to resolve scalars to Python types

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.positions[path] = _pos(node)
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
                out[key] = self.build(value_node, child)
                # The key's own line is where an operator looks for the field.
                self.positions[child] = _pos(key_node)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.build_scalar(node, path)

    def build_scalar(self, node: yaml.Node, path: PathKey) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise SourceError(self.file, _pos(node), _fmt(path), "expected a plain value here")
        return self._constructor.construct_object(node, deep=True)


def _fmt(path: PathKey) -> str:
    return format_path(path)


def parse(text: str, file: str) -> Document:
    """Parse YAML text; syntax errors and duplicate keys become SourceError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Position(mark.line + 1, mark.column + 1) if mark is not None else None
        raise SourceError(file, pos, "(document)", f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise SourceError(file, None, "(document)", f"invalid YAML: {exc}") from None
    if node is None:
        return Document(file, None, {})
    builder = _Builder(file)
    data = builder.build(node, ())
    return Document(file, data, builder.positions)


def load(path: str | Path) -> Document:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
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
        return "expected a number, but the value is a quoted string: remove the quotes"
    if kind in ("int_type", "float_type") and isinstance(value, bool):
        return "expected a number, not a boolean"
    if kind == "bool_type" and isinstance(value, str):
        return "expected true or false, unquoted"
    if kind in ("model_type", "dict_type"):
        return "expected a mapping of settings" + (", but the value is empty" if value is None else "")
    if kind == "list_type":
        return "expected a list" + (", but the value is empty" if value is None else "")
    return None


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
