"""What a person sees while a long job runs.

    one line when a stage starts and when it ends
    one live bar per training stage and per evaluation: step/total, loss, samples/s, ETA
    the frameworks' own logs (Ray, Ray Data, Ray Train, Serve, DeepSpeed, transformers) in files,
    whose folder is printed once

Training workers run in other processes, so the driver draws their bar by following the
metrics.jsonl that rank 0 writes (train/loop.py), not from the workers' prints: those stay in the
workers' log files, once, instead of reaching the console once per rank.

`--verbose` (or CL3DOR_VERBOSE=1) brings the full stream back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

VERBOSE_ENV = "CL3DOR_VERBOSE"
# the driver-side loggers of the frameworks: their console handlers are replaced by one file
FRAMEWORK_LOGGERS = (
    "ray",
    "ray.data",
    "ray.train",
    "ray.tune",
    "ray.serve",
    "deepspeed",
    "DeepSpeed",
    "transformers",
    "torch.distributed",
    "py.warnings",
)
BAR_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_log_path: Path | None = None  # where quiet_frameworks sends the frameworks' records, once called


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def set_verbose(on: bool) -> None:
    if on:
        os.environ[VERBOSE_ENV] = "1"


def say(line: str) -> None:
    """A line for the person at the console (stage start and end, where results are)."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def quiet_frameworks(log_dir: Path | None = None) -> Path | None:
    """Send the frameworks' driver-side log records to LOG_DIR/driver.log; returns that path, or None
    when verbose. Call after `ray.init` (Ray sets its handlers up then); without LOG_DIR it applies
    again to the last folder (for a framework imported since, which adds its own console handler)."""
    global _log_path
    if verbose() or (log_dir is None and _log_path is None):
        return None
    path = _log_path if log_dir is None else log_dir / "driver.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    _log_path = path
    try:
        import ray.serve  # noqa: F401 (Serve adds its console handler on import: take it away now)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Writing model shards", "Loading weights"
    except ImportError:
        pass
    handler = None  # one per log file, shared by every logger, opened only when a logger lacks it
    for name in FRAMEWORK_LOGGERS:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
        if not any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in logger.handlers):
            if handler is None:
                handler = logging.FileHandler(path, encoding="utf-8")
                handler.setLevel(logging.INFO)  # Ray Data logs every scheduler decision at DEBUG
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
        logger.propagate = False
    logging.captureWarnings(True)  # the frameworks' own deprecation warnings, into the same file
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # a bar per operator, redrawn from worker processes
        ctx.print_on_execution_start = False
    except ImportError:
        pass
    return path


@contextlib.contextmanager
def captured():
    """Everything written to this process's stdout and stderr (file descriptors 1 and 2, so a child
    process's output too) goes to the log file meanwhile; nothing changes when verbose or unset."""
    if _log_path is None or verbose():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(_log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def link_ray_session_logs(log_dir: Path) -> Path | None:
    """LOG_DIR/ray -> this machine's Ray session logs (workers, Serve, Ray Data), for an embedded Ray
    (its session folder must keep a short path, so it cannot live in the run folder itself)."""
    import ray

    try:
        session = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except AttributeError:
        return None
    link = log_dir / "ray"
    log_dir.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(session, target_is_directory=True)
    return link


def bar(desc: str, total: int, unit: str = "step", initial: int = 0) -> tqdm:
    """A live bar on stderr; in verbose mode too (it is the one line per stage that matters)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        bar_format=BAR_FORMAT,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=True,
    )


def _row(line: str) -> dict | None:
    """A metrics.jsonl row, or None for a line that is not one (a rewrite caught mid-line)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


@contextlib.contextmanager
def follow_training(metrics_path: Path, stages: list[tuple[str, int, int]], done, started=None, finished=None):
    """One bar per training stage, in turn, fed by the rows rank 0 appends to metrics.jsonl while the stages
    run in one Ray Train job. `stages`: (name, total steps, step it resumes at), in the order they run;
    `done(name)`: whether the stage has finished, which closes its bar and opens the next one;
    `started(name, total, start)` and `finished(name, seconds)` are called as each bar opens and closes.
    Yields {name: bar} for the bars opened so far."""
    bars: dict[str, tqdm] = {}
    stop = threading.Event()
    # where this job's rows start, read before its workers can write any (in the thread it could miss them)
    begin = metrics_path.stat().st_size if metrics_path.exists() else 0

    def follow():
        offset, latest, i, opened = begin, {}, 0, 0.0
        while True:
            last_pass = stop.wait(0.5)
            if metrics_path.exists():
                if metrics_path.stat().st_size < offset:
                    # rewritten shorter (a restarted worker drops the rows past its checkpoint): start again
                    # from the top; a bar only moves forward, so rows seen before change nothing
                    offset = 0
                with open(metrics_path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                offset += len(complete)
                for line in complete.decode("utf-8", errors="replace").splitlines():
                    row = _row(line)
                    if row is not None and "loss" in row and "step" in row:
                        latest[row.get("stage")] = row
            while i < len(stages):
                name, total, start = stages[i]
                if name not in bars:
                    if started:
                        started(name, total, start)
                    bars[name], opened = bar(f"[{name}]", total, initial=start), time.perf_counter()
                if (row := latest.get(name)) is not None:
                    bars[name].update(max(0, row["step"] - bars[name].n))
                    bars[name].set_postfix_str(
                        f"loss {row['loss']:.4f}, {row.get('samples_per_s', 0):.1f} samples/s", refresh=False
                    )
                if not done(name):
                    break
                bars[name].close()
                if finished:
                    finished(name, time.perf_counter() - opened)
                i += 1
            if last_pass:
                if i < len(stages) and stages[i][0] in bars:
                    bars[stages[i][0]].close()
                return

    thread = threading.Thread(target=follow, name="progress-training", daemon=True)
    thread.start()
    try:
        yield bars
    finally:
        stop.set()
        thread.join()
