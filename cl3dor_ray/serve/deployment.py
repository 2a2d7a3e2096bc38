"""A model folder deployed as a Serve app on the connected Ray, for the callers that evaluate through it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from cl3dor_ray.serve.client import Cl3dorClient


@contextlib.contextmanager
def deployment(
    model_dir: str | Path, data_dir: str | Path, serve_cfg, name: str = "cl3dor-eval", keep_serve: bool = False
) -> Iterator[Cl3dorClient]:
    """A model folder deployed as the Serve app `name` on the connected Ray, reached through its handle
    (no HTTP): what `cl3dor evaluate --model`, the demo and the ablation evaluate through.

    On exit the app is deleted, and Serve is shut down once no app is left, so a cluster's other apps
    keep running. `keep_serve` leaves Serve up for a caller that deploys several apps at once.
    """
    from ray import serve

    from cl3dor_ray.serve.app import build_app

    handle = serve.run(build_app(str(model_dir), str(data_dir), serve_cfg), name=name, route_prefix=None)
    try:
        yield Cl3dorClient.over_handle(handle=handle)
    finally:
        serve.delete(name)
        if not keep_serve and not serve.status().applications:
            serve.shutdown()
