"""What the study suite reports across run folders: training speeds from their timing.csv files, by the platform
that timed them. A single run's files (config.json, metrics.csv, timing.csv) are written and read by
``perla_jax.outputs.recording``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np

from perla_jax import Config
from perla_jax.outputs.recording import UNRECORDED, read_timing


def timed_updates(run_dirs: Iterable[str | Path]) -> dict[str, int]:
    """platform -> how many updates of these runs together their timing.csv files timed there."""
    counts: dict[str, int] = {}
    for run_dir in run_dirs:
        for row in read_timing(run_dir):
            counts[row["platform"]] = counts.get(row["platform"], 0) + int(row["updates"])
    return counts


def main_platform(run_dirs: Iterable[str | Path]) -> str:
    """The platform that timed most updates of these runs together: the one a table of them compares (UNRECORDED
    when none has timing.csv)."""
    counts = timed_updates(run_dirs)
    return max(counts, key=counts.__getitem__) if counts else UNRECORDED


def _chunk_rates(run_dir: str | Path, cfg: Config) -> list[tuple[str, float]]:
    """(platform, env steps per second of training, all seeds together) of each chunk in the run's timing.csv."""
    return [(r["platform"], int(r["updates"]) * cfg.batch_size * cfg.num_seeds / float(r["seconds"]))
            for r in read_timing(run_dir)]


def training_steps_per_second(run_dir: str | Path, cfg: Config, platform: str | None = None) -> float:
    """Env steps per second of training (all seeds together) in the median compiled chunk of the run's
    timing.csv, over the chunks run on ``platform`` (None: every chunk): compilation excluded, and a chunk
    slowed by another process on the machine does not count. NaN without such chunks (or without timing.csv:
    runs recorded before it existed)."""
    rates = [rate for name, rate in _chunk_rates(run_dir, cfg) if platform is None or name == platform]
    return float(np.median(rates)) if rates else math.nan


def steps_per_second_by_platform(run_dir: str | Path, cfg: Config) -> dict[str, float]:
    """platform -> ``training_steps_per_second`` on it, for each platform that timed a chunk of the run (in the
    order they first appear), from one read of timing.csv."""
    by_platform: dict[str, list[float]] = {}
    for name, rate in _chunk_rates(run_dir, cfg):
        by_platform.setdefault(name, []).append(rate)
    return {name: float(np.median(rates)) for name, rates in by_platform.items()}
