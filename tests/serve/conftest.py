"""The deployed app, shared by the API tests and the browser test."""

import pytest

from cl3dor_ray.config import ServeConfig
from tests.helpers import free_port

TOKEN = "s3cret-token"


@pytest.fixture(scope="package")
def app(local_ray, trained_model_dir, prepared_dir):
    from ray import serve

    from cl3dor_ray.serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = ServeConfig(
        api_token=TOKEN,
        max_batch_size=4,
        max_points_per_object=500,
        max_objects=3,
        max_question_chars=80,
        max_new_tokens=48,
        max_body_bytes=200_000,
        max_total_points=1000,
        max_bytes_in_flight=1_000_000,
    )
    handle = serve.run(build_app(str(trained_model_dir), str(prepared_dir), cfg), name="cl3dor", route_prefix="/")
    yield f"http://127.0.0.1:{port}", handle
    serve.shutdown()
