"""Typed configs: dataclasses loaded from configs/*.yaml, with dotted command-line overrides.

    cfg = load_config("configs/tiny.yaml", ["prepare.points_per_object=2048"])

Every default lives here. Unknown keys and wrong types fail at once, naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


@dataclass
class SynthConfig:
    scenes: int = 12
    """Number of synthetic rooms to generate."""
    seed: int = 0
    """Seed of the generator; the same seed gives byte-identical scans."""

    def __post_init__(self):
        if self.scenes < 1:
            raise ConfigError(f"synth.scenes must be >= 1, got {self.scenes}")


@dataclass
class PrepareConfig:
    points_per_object: int = 1024
    """Points per object (P). LEO uses 1024."""
    negatives: int = 4
    """Hard negative answers per sample (K); 0 gives plain supervised data."""
    sparse: bool = False
    """Use LEO's sparse baseline (scan vertices) instead of dense surface sampling."""
    workers: int = 2
    """Ray Data workers (tasks for densification, actors for negatives)."""
    seed: int = 0
    """Seed of surface sampling and negatives; results are a function of (seed, scene or sample)."""
    negative_generator: str = "rule"
    """Name of the NegativeGenerator (text/negatives.py GENERATORS)."""

    def __post_init__(self):
        if self.points_per_object < 1:
            raise ConfigError(f"prepare.points_per_object must be >= 1, got {self.points_per_object}")
        if self.negatives < 0:
            raise ConfigError(f"prepare.negatives must be >= 0, got {self.negatives}")
        if self.workers < 1:
            raise ConfigError(f"prepare.workers must be >= 1, got {self.workers}")


@dataclass
class Config:
    synth: SynthConfig = field(default_factory=SynthConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)


def _coerce(value, annotation, key: str):
    """Check `value` against a (simple) type annotation, converting int -> float where natural."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _coerce(value, option, key)
                except ConfigError:
                    pass
        raise ConfigError(f"{key}: {value!r} is not a {annotation}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1] or (typing.Any,)
        return origin(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {annotation.__name__} fields, got {value!r}")
        return _build(annotation, value, key)
    if annotation is typing.Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]!r}; expected one of {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    tree[leaf] = value


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file, then `key.sub=value` overrides (values parsed as YAML)."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    try:
        return _build(Config, tree)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
