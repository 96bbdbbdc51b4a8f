"""One config system for every stage: YAML files with ``base:`` inheritance, ``--set key=value``
overrides checked against the stage's pydantic model, and one formatter for validation errors.

Train, evaluate, judge and pipeline configs all go through :func:`load_model` (a file plus
overrides) or :func:`validate` (a mapping), so an unknown key, a bad value or broken YAML reads
the same everywhere: one :class:`~pspo_eval.errors.PspoError` that names the field path, the
reason and, for a misspelt key, the closest real one.

A :class:`Schema` is the root model plus the key hints of its stage (names people reach for that
the schema spells differently, and keys whose meaning changed when they were renamed).

This module imports neither torch nor transformers: the CLI reads configs cheaply.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pspo_eval.errors import PspoError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Schema:
    """A config's root model and the hints its unknown-key errors give."""

    root: type[BaseModel]
    synonyms: dict[str, str] = field(default_factory=dict)  # "lr" -> "learning_rate"
    renamed: dict[str, str] = field(default_factory=dict)  # old key -> what to write now


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``5e-7`` as a float (YAML 1.1 insists on ``5.0e-7``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text to Python values; a syntax error names the line and column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PspoError(f"{source}: invalid YAML{where}: {problem}", "fix the file's syntax") from None


def read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping, merged over the file its ``base:`` key names (relative to itself), recursively."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise PspoError(f"config inheritance loops: {chain}", "remove one of the `base:` keys")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PspoError(f"cannot read config {path}: {exc.strerror or exc}") from None
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PspoError(f"{path}: a config must be a YAML mapping (key: value), not a {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise PspoError(f"{path}: `base` must be a path to another YAML file (got {base!r})")
    base_path = (path.parent / base).expanduser()
    if not base_path.is_file():
        raise PspoError(
            f"{path}: base config '{base}' not found (looked for {base_path})",
            "`base` is relative to the file that names it",
        )
    return deep_merge(read_with_bases(base_path, (*seen, path)), data)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge key by key; lists and scalars are replaced whole."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``Model`` / ``Model | None``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = model_class(arg)
            if found is not None:
                return found
    return None


def list_item_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a ``list[Model]`` field's items, if any."""
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (None,)
        return model_class(item)
    return None


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable dotted path of a model (``objective.alpha``, ``rollout.vllm.mode``, …)."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        sub = model_class(info.annotation)
        if sub is not None:
            paths.extend(field_paths(sub, f"{path}."))
    return paths


def unknown_key(schema: Schema, path: str, key: str, options: list[str]) -> PspoError:
    """The error for a key the schema does not have, with the closest real key(s) as the hint."""
    full = f"{path}.{key}" if path else key
    if key in schema.renamed:
        return PspoError(f"unknown config key '{full}'", schema.renamed[key])
    everywhere = field_paths(schema.root)
    near = difflib.get_close_matches(key, options, n=3, cutoff=0.6)
    synonym = schema.synonyms.get(key)
    if synonym is not None:
        near = [synonym] if synonym in options else []
        if not near:  # the synonym lives in another section
            found = [p for p in everywhere if p.rsplit(".", 1)[-1] == synonym][:3]
            if found:
                return PspoError(f"unknown config key '{full}'", f"did you mean {' or '.join(found)}?")
    if not near:  # maybe the key exists elsewhere in the tree (e.g. 'alpha' -> 'objective.alpha')
        near = [p for p in everywhere if p.rsplit(".", 1)[-1] == key][:3]
        near = near or difflib.get_close_matches(full, everywhere, n=3, cutoff=0.6)
    else:
        near = [f"{path}.{n}" if path else n for n in near]
    hint = f"did you mean {' or '.join(near)}?" if near else f"valid keys here: {', '.join(options)}"
    return PspoError(f"unknown config key '{full}'", hint)


def check_keys(data: Any, schema: Schema, model: type[BaseModel] | None = None, path: str = "") -> None:
    """Reject keys the schema does not have, naming close matches (before pydantic's plainer message)."""
    model = model or schema.root
    if not isinstance(data, dict) or model.model_config.get("extra") == "allow":
        return
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            raise unknown_key(schema, path, str(key), list(fields))
        here = f"{path}.{key}" if path else str(key)
        annotation = fields[key].annotation
        sub = model_class(annotation)
        if sub is not None:
            check_keys(value, schema, sub, here)
        item = list_item_model(annotation)
        if item is not None and isinstance(value, list):
            for i, element in enumerate(value):
                check_keys(element, schema, item, f"{here}.{i}")


def _split_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise PspoError(
            f"override '{text}' has no '='", "write --set key.sub=value, e.g. --set objective.alpha=0.2"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise PspoError(f"override '{text}' has an empty key", "write --set key.sub=value")
    value = parse_yaml(raw, f"--set {key}") if raw.strip() else None
    return key.split("."), value


def apply_override(data: dict[str, Any], override: str, schema: Schema) -> dict[str, Any]:
    """Apply one ``key.sub=value`` override to a raw config mapping, checking the key against the schema.

    The value is YAML (``5e-7`` is a float, ``null`` None, ``[a, b]`` a list). List items are
    addressed by index (``rewards.0.weight=2``); a whole list is replaced with YAML
    (``rewards=[{name: paper}]``). Free-form mappings (a reward's ``kwargs``) take any key.
    """
    parts, value = _split_override(override)
    _Setter(schema, override).set(data, schema.root, parts, value, "")
    return data


@dataclass
class _Setter:
    schema: Schema
    override: str

    def fail(self, message: str, hint: str | None = None) -> PspoError:
        return PspoError(f"override '{self.override}': {message}", hint)

    def set(self, node: Any, model: type[BaseModel] | None, parts: list[str], value: Any, path: str) -> None:
        """Set ``parts`` below ``node`` (a raw dict or list described by ``model``; None = free-form)."""
        if isinstance(node, list):
            self._in_list(node, model, parts, value, path)
        elif model is None:
            self._in_mapping(node, parts, value, path)
        else:
            self._in_model(node, model, parts, value, path)

    def _in_list(self, node: list, model: type[BaseModel] | None, parts: list[str], value: Any, path: str) -> None:
        part, rest = parts[0], parts[1:]
        if not part.isdigit() or int(part) >= len(node):
            raise self.fail(
                f"'{path}' is a list of {len(node)}; '{part}' is not an index",
                f"use {path}.0.<field>=..., or replace the whole list: {path}=[...]",
            )
        if not rest:
            node[int(part)] = value
            return
        child = node[int(part)]
        if not isinstance(child, dict):
            raise self.fail(f"'{path}.{part}' is not a mapping")
        self.set(child, model, rest, value, f"{path}.{part}")

    def _in_mapping(self, node: dict, parts: list[str], value: Any, path: str) -> None:
        part, rest = parts[0], parts[1:]
        here = f"{path}.{part}" if path else part
        if not rest:
            node[part] = value
            return
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, (dict, list)):
            raise self.fail(f"'{here}' is a single value, it has no '{rest[0]}'")
        self.set(child, None, rest, value, here)

    def _in_model(self, node: dict, model: type[BaseModel], parts: list[str], value: Any, path: str) -> None:
        part, rest = parts[0], parts[1:]
        here = f"{path}.{part}" if path else part
        fields = model.model_fields
        if part not in fields:
            if model.model_config.get("extra") == "allow":
                self._in_mapping(node, parts, value, path)
                return
            raise unknown_key(self.schema, path, part, list(fields))
        if not rest:
            node[part] = value
            return
        annotation = fields[part].annotation
        sub, item = model_class(annotation), list_item_model(annotation)
        child = node.get(part)
        if sub is not None:
            if not isinstance(child, dict):
                child = node[part] = {}
            self.set(child, sub, rest, value, here)
        elif item is not None:
            if child is None:  # still the default list: materialise it so an index can be addressed
                default = fields[part].get_default(call_default_factory=True)
                child = node[part] = [x.model_dump() if isinstance(x, BaseModel) else x for x in default]
            if not isinstance(child, list):
                raise self.fail(f"'{here}' must be a list")
            self.set(child, item, rest, value, here)
        elif typing.get_origin(annotation) is dict:
            if not isinstance(child, dict):
                child = node[part] = {}
            self.set(child, None, rest, value, here)
        else:
            raise self.fail(f"'{here}' is a single value, it has no '{rest[0]}'", f"write --set {here}=<value>")


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as ``field.path: reason`` phrases joined by ``; `` (no URLs, no input dumps)."""
    lines = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        msg = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "missing":
            msg = "required field is missing"
        elif error["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in error and error["type"] != "value_error" and not isinstance(error["input"], (dict, list)):
            msg = f"{msg} (got {error['input']!r})"
        head = msg.split(": ", 1)[0]
        if not loc or (re.fullmatch(r"[\w.]+", head) and head.startswith(loc)):
            lines.append(msg)  # the message already names its field path
        else:
            lines.append(f"{loc}: {msg}")
    return "; ".join(lines)


def format_validation_error(exc: ValidationError, source: str, hint: str | None = None) -> PspoError:
    """The one :class:`PspoError` for an invalid config: ``invalid config SOURCE: field: reason; …``."""
    return PspoError(f"invalid config {source}: {describe_validation_error(exc)}", hint)


def validate(schema: Schema, data: Any, source: str = "(dict)") -> Any:
    """Check the keys (with hints), then validate ``data`` into ``schema.root``; errors as PspoError."""
    if not isinstance(data, dict):
        raise PspoError(f"invalid config {source}: expected a mapping, got {type(data).__name__}")
    check_keys(data, schema)
    try:
        return schema.root.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, source) from None


def load_model(schema: Schema, path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read a YAML file (following ``base:``), apply ``--set`` overrides, validate into the schema's model."""
    data = read_with_bases(path)
    for override in overrides:
        apply_override(data, override, schema)
    source = str(path) + (f" with {len(overrides)} override(s)" if overrides else "")
    return validate(schema, data, source)
