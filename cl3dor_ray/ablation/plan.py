"""What an ablation runs: its config (configs/ablation.yaml) and the variants it expands to.

Every variant is the product config (`base`, then the shared `overrides`) plus its own dotted
overrides, so it goes through the same prepare / train / evaluate code as `make demo`.

A variant that differs from the reference only in the contrastive stage (its negatives, the
generator that made them, λ) shares the reference's alignment stages: those stages never read
the negatives, so for the same seed they are the same computation. It is trained from the
reference's aligned model (`branch`), which is both cheaper and a paired comparison.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from cl3dor_ray.config import Config, ConfigError, check_own_preparation, from_dict, load_config, load_tree


@dataclass
class QuickConfig:
    """`--quick`: what replaces the full run's settings in the small version (tests, a first look)."""

    seeds: list[int] = field(default_factory=lambda: [0])
    scenes: int = 10
    val_scenes: int | None = None
    """Validation rooms; None = a fifth."""
    overrides: list[str] = field(default_factory=list)
    """Appended to the shared overrides (fewer steps, a smaller validation set)."""
    points_sweep: list[int] = field(default_factory=lambda: [128])
    lambda_sweep: list[float] = field(default_factory=lambda: [1.0])
    eval_limit: int | None = 60
    """Validation samples evaluated per variant (the first N by sample id)."""
    skip_variants: list[str] = field(default_factory=list)
    """Variants left out of the small version (llm_negatives: its LLM prepares for minutes on 2 CPUs, and
    tests/text/test_llm_negatives.py runs that path)."""


@dataclass
class AblationConfig:
    base: str = "configs/tiny.yaml"
    """The product config every variant starts from (relative to the current folder)."""
    overrides: list[str] = field(default_factory=list)
    """Dotted overrides applied to every variant (steps, workers, ...)."""
    more_overrides: list[str] = field(default_factory=list)
    """Appended to `overrides`: for the command line, e.g. more_overrides=[train.instruction_tuning.steps=600]."""
    scenes: int = 30
    """Synthetic rooms, shared by every variant and seed."""
    val_scenes: int | None = None
    """How many of them are validation rooms (the last ones); None = a fifth. More rooms, more questions:
    the sampling error of ScanQA EM is sqrt(p (1 - p) / n)."""
    synth_seed: int = 0
    """Seed of the synthetic rooms."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Training seeds (model initialisation and data order); each variant runs once per seed."""
    parallel: int = 2
    """Variants trained and evaluated side by side (each with train.workers Ray Train workers)."""
    reference: str = "full"
    """The variant the others are compared with: the full CL3DOR method."""
    variants: dict[str, list[str]] = field(default_factory=lambda: {"full": []})
    """Name -> dotted overrides on top of the shared ones."""
    points_sweep: list[int] = field(default_factory=lambda: [128, 512])
    """Further points-per-object values for the reference (the encoder sees all P points)."""
    lambda_sweep: list[float] = field(default_factory=lambda: [0.3, 1.0])
    """Further odds-ratio weights for the reference."""
    eval_limit: int | None = None
    """Validation samples evaluated per variant; None = all of them."""
    quick: QuickConfig = field(default_factory=QuickConfig)

    def __post_init__(self):
        if self.reference not in self.variants:
            raise ConfigError(f"reference {self.reference!r} is not one of the variants {sorted(self.variants)}")
        if not self.seeds or self.parallel < 1 or self.scenes < 2:
            raise ConfigError("ablation needs at least one seed, parallel >= 1 and scenes >= 2")
        if self.val_scenes is not None and not 1 <= self.val_scenes < self.scenes:
            raise ConfigError(
                f"val_scenes must be in [1, {self.scenes - 1}] for {self.scenes} scenes, got {self.val_scenes}"
            )

    def quick_version(self) -> "AblationConfig":
        q = self.quick
        unknown = sorted(set(q.skip_variants) - set(self.variants) | {self.reference} & set(q.skip_variants))
        if unknown:
            raise ConfigError(f"quick.skip_variants {unknown}: not variants, or the reference")
        variants = {n: o for n, o in self.variants.items() if n not in q.skip_variants}
        return dataclasses.replace(
            self,
            seeds=q.seeds,
            scenes=q.scenes,
            val_scenes=q.val_scenes,
            overrides=self.overrides + q.overrides,
            points_sweep=q.points_sweep,
            lambda_sweep=q.lambda_sweep,
            eval_limit=q.eval_limit,
            variants=variants,
        )


@dataclass
class Variant:
    name: str
    overrides: list[str]
    cfg: Config
    branch: bool = False
    """Shares the reference's alignment stages and trains only the contrastive stage."""

    @property
    def data_key(self) -> str:
        """Variants whose prepare: sections are equal share one prepared folder."""
        p = self.cfg.prepare
        kind = "sparse" if p.sparse else "dense"
        negatives = f"k{p.negatives}-{p.negative_generator}" if p.negatives else "k0"
        return f"{kind}-p{p.points_per_object}-{negatives}"


def load_ablation_config(path: str | Path, overrides: list[str] = ()) -> AblationConfig:
    """configs/ablation.yaml, then dotted overrides (`seeds=[0,1]`, `more_overrides=[...]`)."""
    tree = load_tree(path, overrides)
    try:
        return from_dict(AblationConfig, tree)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _contrastive_only(cfg: Config) -> dict:
    """The config with everything that only the contrastive stage reads blanked out."""
    tree = dataclasses.asdict(cfg)
    for key in ("negatives", "negative_generator", "negative_llm_path", "negative_llm_gpus"):
        tree["prepare"][key] = None
    tree["train"]["instruction_tuning"] = None
    return tree


def expand_variants(acfg: AblationConfig) -> list[Variant]:
    """The named variants and the two sweeps, reference first, each resolved to a product Config."""
    named = dict(acfg.variants)
    for p in acfg.points_sweep:
        named.setdefault(f"points_{p}", [f"prepare.points_per_object={p}", f"model.num_points={p}"])
    for lam in acfg.lambda_sweep:
        named.setdefault(f"lambda_{lam:g}", [f"train.instruction_tuning.lam={lam}"])
    order = [acfg.reference] + [n for n in named if n != acfg.reference]
    shared = acfg.overrides + acfg.more_overrides
    variants = [Variant(n, named[n], load_config(acfg.base, shared + named[n])) for n in order]
    for v in variants:
        check_own_preparation(v.cfg)
    reference = _contrastive_only(variants[0].cfg)
    for v in variants[1:]:
        v.branch = _contrastive_only(v.cfg) == reference
    if not variants[0].cfg.train.instruction_tuning.enabled:
        raise ConfigError("the ablation compares contrastive stages: train.instruction_tuning must be enabled")
    return variants
