"""Loading spec YAML: documents in, validated models out, or every issue located.

A spec that loads is valid. Each issue names the file, the document (1-based), the
line and the field path, and says what would be valid.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agentcell.errors import SpecError, SpecIssue
from agentcell.spec._models import API_VERSION, Agent, LocatedError, Tenant, unsupported

__all__ = ["Document", "load_file", "load_text"]

Document = Tenant | Agent
_KINDS: dict[str, type[Tenant] | type[Agent]] = {"Tenant": Tenant, "Agent": Agent}
Path_ = tuple[str | int, ...]


def load_file(path: str | Path) -> list[Document]:
    """Load and validate every document of one spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([SpecIssue(str(p), 0, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([SpecIssue(str(p), 0, None, "", f"cannot read: {e}")]) from None
    return load_text(text, source=str(p))


def load_text(text: str, *, source: str = "<spec>") -> list[Document]:
    """Load and validate YAML text holding one or more documents."""
    issues: list[SpecIssue] = []
    docs: list[Document] = []
    seen: dict[tuple[str, str | None, str], int] = {}
    index = 0
    for index, node in _compose(text, source, issues):
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            continue  # an empty document, e.g. after a trailing '---'
        converter = _Converter(source, index, issues)
        data = converter.convert(node)
        lines = converter.lines
        doc = _validate(data, lines, source, index, issues)
        if doc is None:
            continue
        key = (doc.kind, doc.metadata.tenant, doc.metadata.name)
        if key in seen:
            issues.append(
                SpecIssue(
                    source,
                    index,
                    lines.get(("metadata", "name")),
                    "metadata.name",
                    f"{doc.kind} {_ref(doc)!r} is already defined in document {seen[key]}",
                )
            )
            continue
        seen[key] = index
        docs.append(doc)
    if not issues and not docs:
        issues.append(
            SpecIssue(
                source,
                max(index, 1),
                None,
                "",
                "no documents: expected at least one Tenant or Agent",
            )
        )
    if issues:
        raise SpecError(sorted(issues, key=lambda i: (i.document, i.line or 0)))
    return docs


def _ref(doc: Document) -> str:
    if isinstance(doc, Agent):
        return doc.ref
    return doc.metadata.name


def _compose(text: str, source: str, issues: list[SpecIssue]) -> Iterator[tuple[int, Any]]:
    index = 0
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            index += 1
            yield index, node
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        issues.append(SpecIssue(source, index + 1, line, "", f"not valid YAML: {e.problem}"))
    except yaml.YAMLError as e:
        issues.append(SpecIssue(source, index + 1, None, "", f"not valid YAML: {e}"))


_NULL = "tag:yaml.org,2002:null"


class _Converter:
    """Nodes to plain data for one document, recording each path's line as it goes.

    A fresh constructor per document (nothing is kept between loads); anchors and
    aliases are refused, which also stops alias expansion bombs.
    """

    def __init__(self, source: str, doc: int, issues: list[SpecIssue]) -> None:
        self.source = source
        self.doc = doc
        self.issues = issues
        self.lines: dict[Path_, int] = {}
        self._constructor = yaml.constructor.SafeConstructor()
        self._seen: set[int] = set()

    def _issue(self, node: Any, path: Path_, message: str) -> None:
        self.issues.append(
            SpecIssue(self.source, self.doc, node.start_mark.line + 1, _dotted(path), message)
        )

    def _scalar(self, node: Any, path: Path_) -> tuple[bool, Any]:
        try:
            return True, self._constructor.construct_object(node)
        except yaml.YAMLError as e:
            self._issue(node, path, f"not valid YAML: {getattr(e, 'problem', None) or e}")
            return False, None

    def convert(self, node: Any, path: Path_ = ()) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self._seen:
            self._issue(node, path, "anchors and aliases are not supported; write the value out")
            return None
        self._seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self._issue(key_node, path, "keys must be plain strings")
                    continue
                ok, key = self._scalar(key_node, path)
                if not ok:
                    continue
                key = key if isinstance(key, str) else str(key)
                if key in out:
                    self._issue(key_node, (*path, key), "duplicate key")
                    continue
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.convert(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(v, (*path, i)) for i, v in enumerate(node.value)]
        return self._scalar(node, path)[1]


def _dotted(path: typing.Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line(lines: dict[Path_, int], path: Path_) -> int | None:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def _validate(
    data: Any, lines: dict[Path_, int], source: str, doc: int, issues: list[SpecIssue]
) -> Document | None:
    def issue(path: Path_, message: str) -> None:
        issues.append(SpecIssue(source, doc, _line(lines, path), _dotted(path), message))

    if not isinstance(data, dict):
        issue((), "a document must be a mapping with apiVersion, kind, metadata and spec")
        return None
    if data.get("apiVersion") != API_VERSION:
        got = data.get("apiVersion")
        issue(("apiVersion",), f"must be {API_VERSION!r}" + (f", got {got!r}" if got else ""))
        return None
    kind = data.get("kind")
    model = _KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        issue(
            ("kind",), f"must be one of {', '.join(_KINDS)}" + (f", got {kind!r}" if kind else "")
        )
        return None
    try:
        doc_model: Document = model.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, LocatedError):
                loc = (*loc, *cause.loc)
            issue(loc, _message(model, loc, err))
        return None
    for field, why in unsupported(doc_model):
        issue(tuple(field.split(".")), why)
    return doc_model if not any(i.document == doc and i.source == source for i in issues) else None


def _message(model: type[BaseModel], loc: Path_, err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        hint = f"; valid fields here: {', '.join(valid)}" if valid else ""
        return f"unknown field {loc[-1]!r}{hint}"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    given = err.get("input")
    if kind in {
        "literal_error",
        "string_pattern_mismatch",
        "greater_than_equal",
        "less_than_equal",
        "greater_than",
        "less_than",
        "int_parsing",
        "float_parsing",
        "int_type",
        "string_type",
        "bool_type",
        "list_type",
        "dict_type",
        "too_short",
        "model_type",
        "int_from_float",
        "float_type",
        "string_too_long",
    }:
        if kind == "string_pattern_mismatch" and loc and loc[-1] in ("name", "tenant"):
            msg = (
                "must be lowercase letters, digits and '-', 1 to 40 characters, "
                "starting and ending with a letter or digit"
            )
        return f"{msg}, got {given!r}" if not isinstance(given, dict | list) else msg
    return msg


def _fields_at(model: type[BaseModel], loc: Path_) -> list[str]:
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            if typing.get_origin(current) in (list, dict):
                current = typing.get_args(current)[-1]
            continue
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        current = field.annotation
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    if origin is typing.Annotated:
        return typing.get_args(tp)[0]
    return tp
