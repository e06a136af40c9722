"""Configuration: dataclasses with defaults in code, overridden by TOML files and `key=value` pairs.

Every stage has its own dataclass. A TOML file maps onto it key by key (nested tables onto nested
dataclasses); an unknown key, a wrong type or a bad value is a ConfigError naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A numeric config field with its valid range; `from_dict` checks it for every command."""
    return dataclasses.field(default=default, metadata={"range": (ge, gt, le, lt)})


def range_error(key: str, value: Any, ge=None, gt=None, le=None, lt=None) -> str | None:
    """None when `value` lies in the range, else the message naming `key` and the range."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    bad = ((ge is not None and value < ge) or (gt is not None and value <= gt)
           or (le is not None and value > le) or (lt is not None and value >= lt))
    if not bad:
        return None
    parts = [f">= {ge}" if ge is not None else "", f"> {gt}" if gt is not None else "",
             f"<= {le}" if le is not None else "", f"< {lt}" if lt is not None else ""]
    return f"{key}: must be {' and '.join(p for p in parts if p)}, got {value!r}"


def check_ranges(obj: Any, prefix: str = "", recursive: bool = True) -> None:
    """Check every `bounded` field of a (nested) config dataclass."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if "range" in f.metadata:
            err = range_error(prefix + f.name, value, *f.metadata["range"])
            if err:
                raise ConfigError(err)
        if recursive and dataclasses.is_dataclass(value):
            check_ranges(value, prefix=f"{prefix}{f.name}.")


def arg_number(kind: type = int, *, ge: float | None = None, gt: float | None = None,
               le: float | None = None, lt: float | None = None):
    """An argparse `type=` for a numeric command-line option, range-checked like config keys."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        err = range_error("value", value, ge, gt, le, lt)
        if err:
            raise argparse.ArgumentTypeError(err.replace("value: ", ""))
        return value

    parse.__name__ = kind.__name__
    return parse


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and coercing types."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (known keys: {', '.join(sorted(types_))})"
        )
    kwargs = {k: _coerce(v, types_[k], prefix + k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None
    check_ranges(obj, prefix, recursive=False)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs of the same class (for the resume policy)."""
    a = dataclasses.asdict(old) if dataclasses.is_dataclass(old) else old
    b = dataclasses.asdict(new) if dataclasses.is_dataclass(new) else new
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += changed_keys(va, vb, f"{prefix}{k}.")
        elif _norm(va) != _norm(vb):
            out.append(prefix + k)
    return out


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `a.b=value`, where value is read as TOML (so 3, 1e-3, true, "x", [1,2] work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare strings such as paths
    return key, value


def _set_nested(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {dotted!r}: '{p}' is not a table")
    d[parts[-1]] = value


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                section: str | None = None, base: dict | None = None) -> T:
    """Defaults <- `base` (a saved run's config) <- TOML file (optionally one [section]) <- key=value."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, expected a TOML config file")
        raw = path.read_bytes()
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:  # name the line, as the data readers do
            line = raw[:e.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); a config file must "
                              "be UTF-8 TOML") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML ({e})") from None
        if section is not None:
            if section not in data:
                raise ConfigError(f"{path}: missing [{section}] table")
            data = data[section]
    if base is not None:
        data = _merge(base, data)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_nested(data, key, value)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{e}") from None


def dump_toml(obj: Any, _prefix: str = "") -> str:
    """Serialise a (nested) config dataclass as TOML, so a run's config can be re-used as is."""
    d = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict) and v is not None]
    for name, table in d.items():
        if isinstance(table, dict):
            lines += ["", f"[{_prefix}{name}]", dump_toml(table, f"{_prefix}{name}.").strip()]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Path):
        return _toml_value(str(v))
    raise TypeError(f"cannot write {v!r} as TOML")
