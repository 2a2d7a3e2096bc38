"""`cl3dor ablate --quick` end to end: real preparation, Ray Train + DeepSpeed, Serve, evaluation."""

import re
import subprocess
import sys

import pytest

from cl3dor_ray.ablation.plan import expand_variants, load_ablation_config
from cl3dor_ray.ablation.report import HEADLINE, read_results_csv, summarise

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("abl")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cl3dor_ray.cli",
            "ablate",
            "--config",
            "configs/ablation.yaml",
            "--out",
            str(out),
            "--quick",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return out, run.stdout


def _table(md: str, heading: str) -> dict[str, list[str]]:
    section = md.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_one_row_per_variant_and_seed_with_every_metric(quick):
    out, _ = quick
    acfg = load_ablation_config("configs/ablation.yaml").quick_version()
    names = [v.name for v in expand_variants(acfg)]
    rows = read_results_csv(out / "results.csv")
    assert sorted((r["variant"], int(r["seed"])) for r in rows) == sorted((n, s) for n in names for s in acfg.seeds)
    for r in rows:
        assert r["error"] == "", r
        for key in [m for m, _ in HEADLINE] + [
            "scanqa.em.small_objects",
            "prep_seconds",
            "train_seconds",
            "step_ms.instruction_tuning",
        ]:
            assert isinstance(r[key], float), (r["variant"], key)
        assert 0 <= r["scanqa.em"] <= 1 and r["prep_seconds"] > 0 and r["step_ms.instruction_tuning"] > 0


def test_table_and_differences_are_computed_from_results_csv(quick):
    out, stdout = quick
    rows = read_results_csv(out / "results.csv")
    md = (out / "ablation.md").read_text()
    table = _table(md, "## Mean ± std over seeds")
    diffs = _table(md, "## Differences to the full method")
    for i, (metric, _) in enumerate(HEADLINE):
        stats = summarise(rows, metric)
        for variant, (mean, _, n) in stats.items():
            assert n == 1 and table[variant][1 + i] == f"{mean:.3f}", (variant, metric)
            if variant != "full":
                assert diffs[variant][i].startswith(f"{stats['full'][0] - mean:+.3f} ("), (variant, metric)
    assert "## Mean ± std over seeds" in stdout  # the command prints the table too
    assert table["text-only prior"][1] != "–"  # the no-scene baseline sits under the variants
    probe = _table(md, "## Does it read the room?")
    assert probe["full"][1] == f"{summarise(rows, 'grounding.scene_swap.drop')['full'][0]:.3f}"
    encoder = _table(md, "## The object encoder")
    assert encoder["full"][1] == f"{summarise(rows, 'encoder.accuracy.small_objects')['full'][0]:.3f}"
    assert encoder["box-size prior"][1] != "–" and "no_negatives" not in encoder  # a branch has no encoder of its own
    # the figures that differ between variants even after a few steps: training signal and cost
    signal = _table(md, "## The contrastive stage while training")
    costs = _table(md, "## Cost")
    for r in rows:
        assert signal[r["variant"]][0] == f"{r['train.nll']:.3f}", r["variant"]
        step_keys = sorted(k for k in r if k.startswith("step_ms."))  # one column per stage any variant ran
        assert (
            costs[r["variant"]][step_keys.index("step_ms.instruction_tuning")]
            == f"{r['step_ms.instruction_tuning']:.0f}"
        ), r["variant"]


def test_plots_are_written_and_linked(quick):
    out, _ = quick
    md = (out / "ablation.md").read_text()
    for name in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert {"ablation_bars.png", "ablation_density.png"} <= set(re.findall(r"\]\(([^)]+)\)", md))


def test_branches_train_only_the_contrastive_stage_from_the_reference(quick):
    out, _ = quick
    runs = out / "runs"
    reference_stages = ["encoder_pretraining", "grounding", "instruction_tuning", "object_alignment"]
    assert sorted(p.name for p in (runs / "full" / "seed0" / "stages").iterdir()) == reference_stages
    assert sorted(p.name for p in (runs / "sparse" / "seed0" / "stages").iterdir()) == reference_stages
    branches = [
        v.name for v in expand_variants(load_ablation_config("configs/ablation.yaml").quick_version()) if v.branch
    ]
    assert "no_negatives" in branches  # the supervised baseline, a branch of the full method
    for branch in branches:
        assert [p.name for p in (runs / branch / "seed0" / "stages").iterdir()] == ["instruction_tuning"]
        assert not (runs / branch / "seed0" / "init_model").exists()  # started from full's aligned model
