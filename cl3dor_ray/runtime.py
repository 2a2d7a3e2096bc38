"""Connecting to Ray: an embedded local Ray on 127.0.0.1, or an existing cluster.

Every command goes through `ray_session`, so `cl3dor prepare ...` on a laptop and
`ray job submit -- python jobs/prepare_data.py ...` on a cluster run the same code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path


def prefer_loopback(address: str | None) -> None:
    """Keep an embedded Ray on 127.0.0.1. Call before `import ray`: Ray reads this at import time.

    Without it Ray binds the host's address. It is not set when joining a cluster, whose driver
    must announce its real address.
    """
    if not (address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _local_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Session files in a folder of their own, with a short path: Ray's unix sockets live under it and
    # an AF_UNIX path may not exceed 107 bytes (a path inside a deep checkout can).
    os.environ.setdefault("RAY_TMPDIR", str(Path(tempfile.gettempdir()) / "cl3dor-ray"))


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    quiet: bool = False,
    log_to_driver: bool = True,
    log_dir: str | Path | None = None,
):
    """Join `address` (or $RAY_ADDRESS, as inside `ray job submit`), else start a local Ray.

    A Ray that this process already initialised is reused and left running. `log_to_driver=False`
    keeps the workers' output in Ray's session logs instead of this console. With `log_dir` (and not
    --verbose) the frameworks' own logs go to files there, and the workers' output stays in Ray's
    session logs, linked as LOG_DIR/ray (console.py).
    """
    import ray  # here, not at the top: prefer_loopback() must run before Ray is imported

    from cl3dor_ray import console

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    log_level = logging.ERROR if quiet else logging.WARNING
    if log_dir is not None and not console.verbose():
        log_to_driver = False
        console.quiet_frameworks(Path(log_dir))  # before ray.init, which logs too
    if address:
        ray.init(address=address, logging_level=log_level, log_to_driver=log_to_driver)
    else:
        _local_env()
        Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            _temp_dir=os.environ["RAY_TMPDIR"],
            logging_level=log_level,
            log_to_driver=log_to_driver,
        )
    if log_dir is not None and not console.verbose():
        log_dir = Path(log_dir)
        console.quiet_frameworks(log_dir)
        if not address:
            console.link_ray_session_logs(log_dir)
        console.say(f"framework logs (Ray, Ray Data, Serve, DeepSpeed): {log_dir}/")
    try:
        yield
    finally:
        ray.shutdown()
