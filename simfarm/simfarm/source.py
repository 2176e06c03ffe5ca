"""Reading the farm's settings from YAML, with errors that name file, line, column and field.

The orchestrator has a richer loader of its own. This one is a deliberate, smaller copy: the farm is
a separate distribution that must install and run without the orchestrator (and a dependency on it by
name could resolve to an unrelated project on a package index), and it reads only the inventory's
`nodes` list and its `sim:` section. Aliases are expanded with a bound on the values built and on the
nesting depth, so a hostile file fails at once instead of exhausting memory.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

PathKey = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line and column
M = TypeVar("M", bound=BaseModel)

MAX_VALUES = 100_000
MAX_DEPTH = 64


class SourceError(Exception):
    def __init__(self, file: str, at: Mark | None, field_path: PathKey, message: str) -> None:
        where = file if at is None else f"{file}:{at[0]}:{at[1]}"
        super().__init__(f"{where}: {_dotted(field_path)}: {message}")


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(document)"


@dataclass
class Document:
    file: str
    data: Any
    marks: dict[PathKey, Mark] = field(default_factory=dict)

    def error(self, path: PathKey, message: str) -> SourceError:
        key = tuple(path)
        while key and key not in self.marks:
            key = key[:-1]
        return SourceError(self.file, self.marks.get(key), tuple(path), message)


def _mark(node: yaml.Node) -> Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.marks: dict[PathKey, Mark] = {}
        self.values = 0
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.values += 1
        if self.values > MAX_VALUES or len(path) > MAX_DEPTH:
            raise SourceError(self.file, _mark(node), path, "document too large or too deep")
        self.marks.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalars.construct_object(key_node, deep=True)
                if key in out:
                    raise SourceError(self.file, _mark(key_node), path, f"duplicate key {key!r}")
                self.marks[(*path, key)] = _mark(key_node)
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)


class _BoundedLoader(yaml.SafeLoader):
    """Refuses nesting past MAX_DEPTH while composing: PyYAML's composer recurses once per level, so
    a deeply nested file would otherwise take seconds to end in RecursionError, with no position."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load(path: str | Path) -> Document:
    file = str(path)
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=_BoundedLoader)
    except OSError as exc:
        raise SourceError(file, None, (), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SourceError(file, None, (), "not UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        at = (exc.problem_mark.line + 1, exc.problem_mark.column + 1) if exc.problem_mark else None
        raise SourceError(file, at, (), f"invalid YAML: {exc.problem}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise SourceError(file, None, (), f"invalid YAML: {exc}") from None
    if node is None:
        return Document(file, None)
    builder = _Builder(file)
    return Document(file, builder.build(node, ()), builder.marks)


def validate(doc: Document, model: type[M], prefix: PathKey = ()) -> M:
    """The section at `prefix` as `model`; the first problem becomes a SourceError."""
    data: Any = doc.data
    for part in prefix:
        data = data.get(part) if isinstance(data, dict) else None
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(first["loc"][-1]), _field_names(model), n=1)
            message = "unknown field" + (f"; did you mean {hint[0]!r}?" if hint else "")
        raise doc.error((*prefix, *_file_path(first["loc"], data)), message) from None


def _field_names(model: type[BaseModel]) -> set[str]:
    """Every field name in the model's tree: enough for a did-you-mean on a settings file this small."""
    names: set[str] = set()
    todo: list[Any] = [model]
    seen: set[Any] = set()
    while todo:
        tp = todo.pop()
        if tp in seen:
            continue
        seen.add(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            names.update(tp.model_fields)
            todo.extend(f.annotation for f in tp.model_fields.values())
        else:
            todo.extend(get_args(tp))
    return names


def _file_path(loc: tuple[Any, ...], data: Any) -> PathKey:
    """The keys and indexes of a pydantic location that exist in the file (a missing field last).

    pydantic also puts union-member, type and discriminator-tag names into locations.
    """
    out: list[str | int] = []
    for i, part in enumerate(loc):
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_list or (isinstance(data, dict) and part in data):
            data = data[part]
            out.append(part)
        elif i == len(loc) - 1 and isinstance(data, dict):
            out.append(part)
    return tuple(out)
