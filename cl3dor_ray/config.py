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
class LMConfig:
    path: str | None = None
    """Local folder of a pretrained causal LM (e.g. OPT-1.3B, Vicuna-7B); None builds one from the fields below."""
    arch: str = "llama"
    """Architecture of an LM built from config: "llama" or "qwen2"."""
    hidden_size: int = 128
    """Hidden size of an LM built from config."""
    intermediate_size: int = 256
    """MLP width of an LM built from config."""
    num_layers: int = 2
    """Decoder layers of an LM built from config."""
    num_heads: int = 4
    """Attention heads of an LM built from config."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention) of an LM built from config."""
    max_positions: int = 512
    """Longest sequence (object tokens + prompt + answer) an LM built from config handles."""
    vocab_size: int = 2000
    """Size of the BPE tokenizer trained from the corpus when the LM folder has none."""

    def __post_init__(self):
        if self.arch not in ("llama", "qwen2"):
            raise ConfigError(f"model.lm.arch must be 'llama' or 'qwen2', got {self.arch!r}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ConfigError("model.lm: hidden_size must divide by num_heads, and num_heads by num_kv_heads")


@dataclass
class LoraConfig:
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA path."""
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Names of the LM's linear layers that get adapters."""


@dataclass
class ModelConfig:
    num_points: int = 256
    """Points per object fed to the point encoder (a fixed subset of the prepared P)."""
    max_objects: int = 60
    """Object tokens per scene, relevant objects first (LEO uses up to 60)."""
    sa1: list[int] = field(default_factory=lambda: [64, 16])
    """First set abstraction: [centres, neighbours]."""
    sa2: list[int] = field(default_factory=lambda: [16, 16])
    """Second set abstraction: [centres, neighbours]."""
    point_widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    """Feature widths of the two set abstractions and the global feature."""
    spatial_layers: int = 2
    """Layers of the spatial transformer that relates the objects of a scene."""
    spatial_heads: int = 4
    """Heads of the spatial transformer."""
    lm: LMConfig = field(default_factory=LMConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self):
        if len(self.sa1) != 2 or len(self.sa2) != 2 or len(self.point_widths) != 3:
            raise ConfigError("model.sa1 and model.sa2 take [centres, neighbours]; model.point_widths takes 3 widths")
        if self.point_widths[2] % self.spatial_heads:
            raise ConfigError("model.point_widths[2] must divide by model.spatial_heads")


@dataclass
class Config:
    synth: SynthConfig = field(default_factory=SynthConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


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


def from_dict(cls, values: dict, prefix: str = ""):
    """A config dataclass from a plain dict (e.g. one saved with a model), with the same checks."""
    return _build(cls, values, prefix)


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
