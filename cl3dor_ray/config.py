"""Typed configs: dataclasses loaded from configs/*.yaml, with dotted command-line overrides.

    cfg = load_config("configs/tiny.yaml", ["prepare.points_per_object=2048"])

Every default lives here. Unknown keys and wrong types fail at once, naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


WHERE_TOKENS = ("auto", "differences", "mixture")  # ModelConfig.where_tokens


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
    """Name of the NegativeGenerator (text/negatives.py GENERATORS): rule, random or llm."""
    negative_llm_path: str = ".cache/models/SmolLM2-135M-Instruct"
    """Local Hugging Face LM folder the `llm` generator runs (`make smollm2` builds this one); any larger
    instruct model's folder on a GPU cluster."""
    negative_llm_gpus: float = 0.0
    """GPUs per `llm` negatives actor; 0 runs the LLM on CPUs."""
    node_resource: str | None = None
    """Custom Ray resource that preparation tasks require (cluster.yaml gives CPU nodes "prep"); None = any node."""

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
        if self.path and not os.path.isabs(self.path):  # Ray workers need not share the driver's directory
            self.path = os.path.abspath(self.path)
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
class GroundingConfig:
    enabled: bool = True
    """Ground each question in the scene: a head scores every object's relevance, and the relevant ones
    become the first object tokens, marked (see model/grounding.py). False gives LEO's plain object order."""
    width: int = 128
    """Width of the grounding head (its text encoder and object decoder)."""
    text_layers: int = 1
    """Transformer layers over the question's tokens."""
    layers: int = 2
    """Decoder layers: objects attend to each other and to the question."""
    heads: int = 4
    """Attention heads of both."""
    max_question_tokens: int = 96
    """Question tokens the head reads (the rest are cut off)."""
    max_focus: int = 8
    """Most focus tokens per question, the most relevant first, whatever the head scores: a weak head that
    picks half the room must not make every prompt as long as the scene (counts in the data go to 6)."""
    dropout: float = 0.0
    """Dropout in the head while it trains (its input features, attention and feed-forward blocks)."""
    nearest: bool = True
    """A softmin over candidate objects' distances to the anchor, for "what is next to the table?"
    (model/grounding.py). Model folders saved before it existed load with False."""
    nearest_none: bool = True
    """The nearest softmin has a "none" option, so a question that names no anchor has no nearest object.
    Model folders saved before it existed load with False."""
    answer_hop: bool = True
    """A second softmin, taught outright, says which candidate a two-hop question asks for ("what is on the
    nightstand?"), and its pick is relevant (model/grounding.py). Model folders saved before it existed load
    with False."""
    subject_match: bool = True
    """The category and colour a question names for its subject, read from its words and matched to the object
    classifier's beliefs, pick the object it names, and that pick is relevant (model/grounding.py; needs the
    classifier). Model folders saved before it existed load with False."""
    match_sure: float = 0.8
    """The subject match's pick is relevant only where its share is at least this (model/grounding.py)."""

    def __post_init__(self):
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.grounding.dropout must be in [0, 1), got {self.dropout}")
        if self.width % self.heads:
            raise ConfigError("model.grounding.width must divide by model.grounding.heads")
        if self.max_focus < 1:
            raise ConfigError(f"model.grounding.max_focus must be >= 1, got {self.max_focus}")
        if not 0 <= self.match_sure <= 1:
            raise ConfigError(f"model.grounding.match_sure must be in [0, 1], got {self.match_sure}")


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
    """Layers of the spatial transformer that relates the objects of a scene (LEO: 3); 0 = none. On the
    laptop recipes it made the object tokens harder to read: colour EM 0.18 with it, 0.83 without,
    after 300 steps (issue 12); the grounding head relates objects on its own."""
    spatial_heads: int = 4
    """Heads of the spatial transformer."""
    object_words: bool = True
    """Add to each object token the object classifier's predicted category and colour, as the LM's own
    word embeddings (a from-scratch LM learned to read colours from them reliably; without, only in some runs)."""
    where_words: bool = True
    """Add to each focus object's where token its relation to its reference object (left, right, front,
    behind, above, below, near, far) as the LM's own word embeddings, weighted by the geometry
    (model/focus.py): without, the tiny LM did not learn "which way should I turn?" (issue 22)."""
    where_tokens: str = "auto"
    """How the where words enter the where token: "differences", each pair of opposite words as the
    difference of their embeddings (focus.where_axes), or "mixture", the words' embeddings weighted by how
    much each holds. "auto": a mixture for a pretrained LM (model.lm.path), differences for one built from
    config. Measured (docs/results.md): the tiny LM learned "which way to turn" in every seed only with
    differences (its "left" and "right" embeddings can grow alike); frozen SmolLM2 read a mixture of its
    own words (0.917) and not their differences (0.556)."""
    view_heading_deg: float = 90.0
    """The heading a question without a pose is read from, in degrees counter-clockwise from +x: its boxes
    are turned so that this heading is +x and its left +y, as a situated question's are turned to the
    agent's. 90 faces +y, the synthetic rooms' back wall ("facing the back wall, which side ...")."""
    object_token_rms: float | None = None
    """RMS of each object token fed to the LM; None = the RMS of the LM's word embeddings."""
    point_encoder_weights: str | None = None
    """Pretrained point-encoder weights to start from: a .safetensors file or a .pth state dict
    (read with weights_only=True); keys may carry a "point_encoder." prefix."""
    lm: LMConfig = field(default_factory=LMConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    object_labels: list[str] = field(default_factory=list)
    """Categories the object classifier predicts; filled from the prepared data when a run starts."""
    object_colors: list[str] = field(default_factory=list)
    """Colour words the object classifier predicts; filled from the prepared data when a run starts."""

    def __post_init__(self):
        if self.where_tokens not in WHERE_TOKENS:
            raise ConfigError(f"model.where_tokens must be one of {list(WHERE_TOKENS)}, got {self.where_tokens!r}")
        if len(self.sa1) != 2 or len(self.sa2) != 2 or len(self.point_widths) != 3:
            raise ConfigError("model.sa1 and model.sa2 take [centres, neighbours]; model.point_widths takes 3 widths")
        if self.spatial_layers < 0 or (self.spatial_layers and self.point_widths[2] % self.spatial_heads):
            raise ConfigError(
                "model.spatial_layers must be >= 0, and model.point_widths[2] divide by model.spatial_heads"
            )


TASKS = ("qa", "caption", "existence", "sqa")


@dataclass
class PretrainStageConfig:
    """A stage that trains one part of the scene encoder on its own (no LM): `encoder_pretraining`
    (the point encoder classifies objects) or `grounding` (the grounding head finds a question's objects)."""

    enabled: bool = True
    """Run this stage."""
    steps: int = 300
    """Optimizer steps."""
    lr: float = 2e-3
    """Peak learning rate (warmup, then cosine decay to a tenth)."""
    warmup_steps: int = 10
    """Linear warmup steps."""
    batch_size: int = 32
    """Objects (encoder_pretraining) or questions (grounding) per worker and step."""
    box_jitter: float = 0.0
    """grounding only: each object's box centre moves by this much (metres, std per axis) and its size by
    this share, drawn anew at every step, so that the head cannot learn its training rooms by their exact
    coordinates."""

    def __post_init__(self):
        if self.steps < 1 or self.lr <= 0 or self.batch_size < 1 or self.warmup_steps < 0 or self.box_jitter < 0:
            raise ConfigError(
                "pretraining stage needs steps >= 1, lr > 0, batch_size >= 1, warmup_steps >= 0, box_jitter >= 0"
            )


@dataclass
class Trainable:
    point_encoder: str = "freeze"
    """"train" or "freeze"."""
    spatial: str = "train"
    """The spatial transformer and location encoder: "train" or "freeze"."""
    projector: str = "train"
    """"train" or "freeze"."""
    lm: str = "lora"
    """"train", "freeze" or "lora"."""

    def __post_init__(self):
        for part in ("point_encoder", "spatial", "projector"):
            if getattr(self, part) not in ("train", "freeze"):
                raise ConfigError(f"trainable.{part} must be 'train' or 'freeze', got {getattr(self, part)!r}")
        if self.lm not in ("train", "freeze", "lora"):
            raise ConfigError(f"trainable.lm must be 'train', 'freeze' or 'lora', got {self.lm!r}")


@dataclass
class StageConfig:
    enabled: bool = True
    """Run this stage; a disabled stage is skipped and the next starts from the previous weights."""
    steps: int = 100
    """Optimizer steps."""
    lr: float = 1e-4
    """Peak learning rate (after warmup, then cosine decay to lr * min_lr_ratio)."""
    warmup_steps: int = 10
    """Linear warmup steps."""
    min_lr_ratio: float = 0.1
    """End of the cosine decay, as a fraction of lr."""
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """Sample tasks this stage trains on: qa, caption, existence, sqa (SQA3D)."""
    contrastive: bool = False
    """Score the hard negatives beside the gold answer and add the odds-ratio term (the contrastive stage)."""
    lam: float = 0.1
    """Weight lambda of the odds-ratio term (ORPO/TRL default 0.1); 0 is supervised fine-tuning."""
    teacher_forcing: float = 0.5
    """Share of the questions whose focus objects are the annotated ones (as LEO trains); the rest get the
    grounding head's own, as at inference. All teacher-forced, the LM learned that the number of focus
    objects tells the kind of answer, and answered "4" to "above or below?" wherever the head named more
    objects than the annotation; with none, it learned to distrust the focus where the head is weak
    (relations then hardly changed with the room). Half and half kept both (issue 22). Captions always
    name their object."""
    trainable: Trainable = field(default_factory=Trainable)

    def __post_init__(self):
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise ConfigError(f"stage teacher_forcing must be a share in [0, 1], got {self.teacher_forcing}")
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise ConfigError(f"stage tasks {unknown or '[]'} invalid; expected a non-empty subset of {list(TASKS)}")
        if self.steps < 1 or self.lr <= 0 or self.warmup_steps < 0 or self.lam < 0:
            raise ConfigError("stage needs steps >= 1, lr > 0, warmup_steps >= 0 and lam >= 0")


def _stage(**kw) -> Callable[[], StageConfig]:
    return lambda: StageConfig(**kw)


@dataclass
class TrainConfig:
    workers: int = 2
    """Ray Train workers (one process each; one GPU each when use_gpu)."""
    use_gpu: bool = False
    """GPUs, NCCL and bf16; otherwise CPUs, gloo and fp32."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage: 1, 2 or 3."""
    batch_size: int = 4
    """Micro-batch per worker."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    grad_clip: float = 1.0
    """Gradient-norm clipping."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    eval_every: int = 25
    """Validation loss and answer exact match every N steps (and at the end of a stage)."""
    eval_samples: int = 16
    """Size of the fixed validation subset."""
    pair_samples: int = 64
    """Training samples with hard negatives on which a contrastive stage measures, at its start and its end,
    the share of (gold, negative) pairs it ranks right: how much the odds ratio has to learn, and learned."""
    checkpoint_every: int = 25
    """Checkpoint every N steps (and at the end of a stage)."""
    num_to_keep: int = 2
    """Checkpoints kept per stage."""
    max_failures: int = 2
    """Worker failures Ray Train recovers from (restarting from the last checkpoint)."""
    log_every: int = 5
    """Console and metrics.jsonl every N steps."""
    seed: int = 0
    """Seed of model initialisation and data order."""
    fail_at_step: int | None = None
    """Test only: a worker kills its own process once at this step of the contrastive stage."""
    encoder_pretraining: PretrainStageConfig = field(default_factory=PretrainStageConfig)
    grounding: PretrainStageConfig = field(default_factory=lambda: PretrainStageConfig(steps=1500, lr=1e-3))
    object_alignment: StageConfig = field(
        default_factory=_stage(
            tasks=["caption"],
            trainable=Trainable(point_encoder="train", spatial="train", projector="train", lm="freeze"),
        )
    )
    # the paper's recipe: the alignment stages teach descriptions, the questions are learned in instruction
    # tuning, where the odds ratio acts from its first step
    scene_alignment: StageConfig = field(
        default_factory=_stage(tasks=["caption"], trainable=Trainable(point_encoder="freeze", lm="lora"))
    )
    instruction_tuning: StageConfig = field(
        default_factory=_stage(
            tasks=["qa", "caption", "existence", "sqa"],
            contrastive=True,
            trainable=Trainable(point_encoder="freeze", lm="lora"),
        )
    )

    def __post_init__(self):
        if self.zero_stage not in (1, 2, 3):
            raise ConfigError(f"train.zero_stage must be 1, 2 or 3, got {self.zero_stage}")
        if self.workers < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("train.workers, train.batch_size and train.grad_accum must be >= 1")

    @property
    def stages(self) -> list[tuple[str, PretrainStageConfig | StageConfig]]:
        """Every stage in order: the two pretraining stages, then the three LM stages."""
        return [(name, getattr(self, name)) for name in STAGES]


PRETRAIN_STAGES = ("encoder_pretraining", "grounding")
LM_STAGES = ("object_alignment", "scene_alignment", "instruction_tuning")
STAGES = PRETRAIN_STAGES + LM_STAGES


@dataclass
class ServeConfig:
    max_batch_size: int = 8
    """Requests the model deployment batches together (1 turns batching off)."""
    batch_wait_timeout_s: float = 0.01
    """How long a batch waits to fill."""
    max_question_chars: int = 500
    """Longest question or instruction accepted."""
    max_candidates: int = 16
    """Most candidate answers one /v1/score request may rank."""
    max_candidate_chars: int = 300
    """Longest candidate answer accepted."""
    max_objects: int = 100
    """Most uploaded objects per request."""
    max_points_per_object: int = 20000
    """Most points per uploaded object."""
    max_new_tokens: int = 64
    """Upper bound of a request's max_new_tokens."""
    default_new_tokens: int = 24
    """max_new_tokens when a request gives none."""
    api_token: str | None = None
    """Bearer token required on every endpoint but /healthz; $CL3DOR_API_TOKEN overrides; None = open."""
    prefix_cache_mb: float = 256.0
    """Scene prefix cache per model replica (serve/prefix_cache.py), in MiB; 0 turns it off."""
    max_body_bytes: int = 8_000_000
    """Largest request body accepted (413 beyond), checked before the body is read into Python."""
    max_drain_bytes: int = 64_000_000
    """How much of a refused body (413, 503) is read and dropped before the answer, so an ordinary HTTP client
    sees the status and its message rather than a reset connection; past it the connection is closed."""
    max_total_points: int = 200_000
    """Most uploaded points in one request, all objects together (422 beyond)."""
    max_in_flight: int = 64
    """Requests one ingress replica holds at once; past it a request gets 503 with Retry-After."""
    max_bytes_in_flight: int = 48_000_000
    """Request bodies one ingress replica holds at once, in bytes: a few large uploads at a time, the rest
    503 with Retry-After (a parsed point costs ~50x its JSON bytes in Python on the way to the model)."""

    def __post_init__(self):
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ConfigError("serve.max_batch_size must be >= 1 and serve.batch_wait_timeout_s >= 0")
        if self.prefix_cache_mb < 0 or min(self.max_body_bytes, self.max_total_points, self.max_in_flight) < 1:
            raise ConfigError(
                "serve.prefix_cache_mb must be >= 0, and max_body_bytes, max_total_points and max_in_flight >= 1"
            )
        if self.max_bytes_in_flight < self.max_body_bytes:
            raise ConfigError(
                f"serve.max_bytes_in_flight ({self.max_bytes_in_flight}) must be at least "
                f"serve.max_body_bytes ({self.max_body_bytes}), or the largest request never fits"
            )


@dataclass
class Config:
    synth: SynthConfig = field(default_factory=SynthConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


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
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(annotation) or (typing.Any, typing.Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
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
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; float() does not
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _build(cls, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]!r}; expected one of {sorted(fields)}")
    kwargs = {}
    for k, v in values.items():
        f = fields[k]
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict) and f.default_factory is not dataclasses.MISSING:
            # a partial section overrides its own defaults (e.g. one stage's steps), not the class's
            v = _merge(dataclasses.asdict(f.default_factory()), v)
        kwargs[k] = _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k)
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


def check_own_preparation(cfg: Config) -> None:
    """For a run that prepares its own data (the demo, each ablation variant): the model reads at most
    the points each object is prepared with. (`cl3dor train` checks a prepared folder's manifest.)"""
    if cfg.model.num_points > cfg.prepare.points_per_object:
        raise ConfigError(
            f"model.num_points = {cfg.model.num_points} exceeds prepare.points_per_object = "
            f"{cfg.prepare.points_per_object}; expected model.num_points <= prepare.points_per_object"
        )


def load_tree(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> dict:
    """The YAML file as a dict, then `key.sub=value` overrides (values parsed as YAML)."""
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
    return tree


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file, then `key.sub=value` overrides (values parsed as YAML)."""
    tree = load_tree(path, overrides)
    try:
        return _build(Config, tree)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
