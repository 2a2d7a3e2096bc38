import re

import pytest

from cl3dor_ray.config import ConfigError, load_config


def test_yaml_then_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("synth:\n  scenes: 3\nprepare:\n  points_per_object: 64\n")
    cfg = load_config(path, ["prepare.points_per_object=2048", "prepare.sparse=true"])
    assert cfg.synth.scenes == 3 and cfg.synth.seed == 0  # untouched keys keep their defaults
    assert cfg.prepare.points_per_object == 2048 and cfg.prepare.sparse is True


def test_shipped_tiny_config_loads():
    cfg = load_config("configs/tiny.yaml")
    assert cfg.prepare.points_per_object > 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("prepare.points_per_objects=3", "unknown key prepare.'points_per_objects'"),
        ("synth.scenes=many", "synth.scenes: expected int, got str"),
        ("prepare.sparse=1", "prepare.sparse: expected true or false"),
        ("synth.scenes=0", "synth.scenes must be >= 1"),
        ("nonsense", "expected key.sub=value"),
        ("model.where_tokens=sum", "model.where_tokens must be one of ['auto', 'differences', 'mixture'], got 'sum'"),
        ("model.grounding.dropout=1.5", "model.grounding.dropout must be in [0, 1), got 1.5"),
        ("train.grounding.box_jitter=-0.1", "box_jitter >= 0"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_a_float_field_takes_what_float_takes():
    # YAML 1.1 reads 1e-3 as a string; a user typing it on the command line means a float
    cfg = load_config("configs/tiny.yaml", ["train.object_alignment.lr=1e-3", "train.instruction_tuning.lam=.5"])
    assert cfg.train.object_alignment.lr == 0.001 and cfg.train.instruction_tuning.lam == 0.5
    with pytest.raises(ConfigError, match="lr"):
        load_config(None, ["train.object_alignment.lr=fast"])
