"""YAML files and dotted command-line overrides into a validated :class:`~rema.config.Config`, and back."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from pathlib import Path

import yaml

from .checks import ConfigError
from .sections import Config


def _coerce(value, tp, key: str):
    """Convert a YAML/CLI value to the field's annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        lists = [a for a in inner if typing.get_origin(a) is list]
        if isinstance(value, (list, tuple)) and lists:  # `str | list[str]`: a YAML list is the list form
            return _coerce(value, lists[0], key)
        return _coerce(value, inner[0], key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping such as {{name: 0.5}}, got {value!r}")
        return {str(k): _coerce(v, args[1] if args else str, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        elif isinstance(value, dict):
            raise ConfigError(f"{key}: expected a list, got a mapping {value!r}")
        elif not isinstance(value, (list, tuple)):
            value = [value]  # `data.levels=3`: one item
        return [_coerce(v, args[0] if args else str, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float):
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (tp is int and not number.is_integer()):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
        return tp(number)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads off/no/false (on/yes/true) as booleans
            return "on" if value else "off"
        return str(value)
    return value


def _squash(text) -> str:
    """A library's message on one line."""
    return " ".join(str(text).split())


def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        tp = _type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown(key: str, valid: list[str]) -> ConfigError:
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if not near:  # also match on the last component, e.g. `clip` -> algo.clip_eps
        leaf = key.rsplit(".", 1)[-1]
        near = [k for k in valid if leaf in k.rsplit(".", 1)[-1]][:3]
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return ConfigError(f"unknown config key {key!r}{hint} (see `rema train --help-config`)")


def _toggles(cls, prefix: str = "") -> list[str]:
    """Keys of nested sections that have an ``enabled`` field: ``train.health=false`` is short for
    ``train.health.enabled=false``."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = _type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            if prefix and "enabled" in {g.name for g in dataclasses.fields(tp)}:
                keys.append(prefix + f.name)
            keys += _toggles(tp, prefix + f.name + ".")
    return keys


def _as_toggle(value, existing=None):
    """A section given as a scalar (``train.health=false``): its mapping with ``enabled`` set."""
    if isinstance(value, dict):
        return value
    return {**(existing if isinstance(existing, dict) else {}), "enabled": value}


def _set(tree: dict, dotted: str, value, valid: list[str]) -> None:
    toggles = _toggles(Config)
    if dotted not in valid and dotted not in toggles:
        raise _unknown(dotted, valid)
    *path, key = dotted.split(".")
    node = tree
    for depth, part in enumerate(path):  # nested sections (train.health.patience): mappings inside mappings
        here = ".".join(path[:depth + 1])
        if here in toggles and part in node and not isinstance(node[part], dict):
            node[part] = _as_toggle(node[part])  # `health: false` in the file, then a nested override
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{here}: expected a mapping of fields, got {node!r}")
    node[key] = _as_toggle(value, node.get(key)) if dotted in toggles else value


def _build(cls, data: dict, prefix: str = ""):
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (data or {}).items():
        key = str(key)  # YAML reads `1:` or `true:` as a number or a boolean
        if key not in names:
            raise _unknown(prefix + key, _all_keys(Config))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if prefix and not isinstance(value, dict) and prefix + key in _toggles(Config):
                value = _as_toggle(value)
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key}: expected a mapping of fields, got {value!r}")
            kwargs[key] = _build(tp, value, prefix + key + ".")
        else:
            kwargs[key] = _coerce(value, tp, prefix + key)
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a YAML file (or defaults) plus ``section.key=value`` overrides, validated."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: invalid YAML ({_squash(getattr(err, 'problem', None) or err)})") from None
        except (UnicodeDecodeError, IsADirectoryError) as err:
            raise ConfigError(f"{path}: not a YAML text file ({err})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        tree.pop("description", None)  # free text for humans
    valid = _all_keys(Config)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value, e.g. algo.clip_eps=0.1")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            why = _squash(getattr(err, "problem", None) or err)
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({why}); quote it, e.g. "
                              "key='a: b'") from None
        _set(tree, key.strip(), value, valid)
    return _build(Config, tree)


def field_docs(cls) -> dict[str, str]:
    """Field name -> docstring (the string literal right after the field in the class body)."""
    src = textwrap.dedent(inspect.getsource(cls))
    body = ast.parse(src).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def describe_config(cfg: Config | None = None) -> str:
    """Every key with its current value and documentation (for ``--help-config``); a nested section
    (``train.health``) is listed after its parent, under its own heading."""
    cfg = cfg or Config()
    lines: list[str] = []
    pending = [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(Config)]
    while pending:
        name, section = pending.pop(0)
        docs = field_docs(type(section))
        lines.append(f"[{name}]")
        for sf in dataclasses.fields(section):
            value = getattr(section, sf.name)
            if dataclasses.is_dataclass(value):
                pending.insert(0, (f"{name}.{sf.name}", value))
                value = f"[{name}.{sf.name}] below"
            else:
                value = repr(value)
            lines.append(f"  {name}.{sf.name} = {value}")
            lines.append(f"      {docs.get(sf.name, '')}")
    return "\n".join(lines)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
