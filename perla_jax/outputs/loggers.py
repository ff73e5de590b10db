"""Optional experiment loggers (TensorBoard, Weights & Biases) fed once per compiled chunk.

The CSV in the run folder (``perla_jax.outputs.recording``) is always written and stays the record of a run;
these loggers are for watching runs live. Each seed is its own run/series so that curves are never
averaged or interleaved behind the researcher's back:

- ``tensorboard``: ``RUN_DIR/tb/seed_<s>/`` holds one event file per seed (tensorboardX; no TensorFlow).
  ``tensorboard --logdir RUN_DIR/tb`` shows the seeds as separate runs.
- ``wandb``: one wandb run per seed, named ``<run folder>/seed_<s>`` and grouped by the run folder's
  name, so the wandb UI can show each seed or their mean per group.

The x axis is ``env_steps`` (transitions summed over the parallel environments, as in metrics.csv).
A metric that is not finite at an update (``return`` when no episode ended) is not logged there,
rather than logged as NaN, which both tools draw as a gap or break the axis range on.
Packages are imported only when their logger is asked for.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence

import numpy as np

from perla_jax.config import Config
from perla_jax.types import METRICS

LOGGERS = ("tensorboard", "wandb")
TB_DIR = "tb"
STEP = "env_steps"


class Logger(Protocol):
    def log_chunk(self, metrics: Mapping[str, np.ndarray], first_update: int) -> None: ...

    def close(self) -> None: ...


def parse_kinds(kinds: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` (or a list of names) -> ``("tensorboard", "wandb")``; ``None``, ``""``
    or ``"none"`` -> ``()``. Duplicates are dropped; an unknown name raises ValueError naming it."""
    if kinds is None:
        return ()
    parts = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    names: list[str] = []
    for part in (p.strip().lower() for p in parts):
        if part in ("", "none"):
            continue
        if part not in LOGGERS:
            raise ValueError(f"logger {part!r} is unknown: allowed are {', '.join(LOGGERS)} (comma-separated) or none")
        if part not in names:
            names.append(part)
    return tuple(names)


def make_loggers(
    kinds: str | Sequence[str] | None, run_dir: str | Path, cfg: Config, wandb_project: str | None = None
) -> "MultiLogger":
    """The loggers named in ``kinds`` for the run in ``run_dir``, behind one ``log_chunk``/``close``.

    ``wandb_project`` defaults to the ``WANDB_PROJECT`` environment variable, else ``"perla_jax"``.
    With no kinds the result logs nothing, so callers need no branch.
    """
    names = parse_kinds(kinds)  # before any import or folder, so a typo fails fast
    run_dir = Path(run_dir)
    loggers: list[Logger] = []
    try:
        for name in names:
            if name == "tensorboard":
                loggers.append(TensorBoardLogger(run_dir, cfg))
            else:
                loggers.append(WandbLogger(run_dir, cfg, wandb_project))
    except BaseException:
        for logger in loggers:
            logger.close()
        raise
    return MultiLogger(loggers)


class MultiLogger:
    def __init__(self, loggers: Iterable[Logger]):
        self.loggers = list(loggers)

    def log_chunk(self, metrics: Mapping[str, np.ndarray], first_update: int) -> None:
        for logger in self.loggers:
            logger.log_chunk(metrics, first_update)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def chunk_records(metrics: Mapping[str, np.ndarray], first_update: int, num_seeds: int):
    """Yields ``(seed, env_steps, {name: value})`` for every seed and update of a ``[S, n]`` chunk,
    in update order, leaving out non-finite values and the step itself; ``update`` (numbered from
    ``first_update``, as in metrics.csv) is one of the values, to map env steps back to rows."""
    arrays = {name: np.asarray(metrics[name]) for name in METRICS}
    shape = arrays[STEP].shape
    if len(shape) != 2 or shape[0] != num_seeds:
        raise ValueError(f"metrics[{STEP!r}] has shape {shape}: expected [num_seeds={num_seeds}, updates]")
    for u in range(shape[1]):
        for s in range(num_seeds):
            values = {"update": float(first_update + u)}
            for name in METRICS:
                value = float(arrays[name][s, u])
                if name != STEP and math.isfinite(value):
                    values[name] = value
            yield s, int(arrays[STEP][s, u]), values


class TensorBoardLogger:
    """One tensorboardX ``SummaryWriter`` per seed under ``RUN_DIR/tb/seed_<s>``."""

    def __init__(self, run_dir: Path, cfg: Config):
        from tensorboardX import SummaryWriter

        self.num_seeds = cfg.num_seeds
        self.writers = [SummaryWriter(logdir=str(run_dir / TB_DIR / f"seed_{s}")) for s in range(cfg.num_seeds)]

    def log_chunk(self, metrics: Mapping[str, np.ndarray], first_update: int) -> None:
        for s, step, values in chunk_records(metrics, first_update, self.num_seeds):
            for name, value in values.items():
                self.writers[s].add_scalar(name, value, global_step=step)
        for writer in self.writers:
            writer.flush()  # a chunk is minutes of training: make it visible now, not at close

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class WandbLogger:
    """One wandb run per seed, grouped by the run folder's name; the config (plus the seed index) is
    attached to each run so runs can be filtered by algo/K in the UI."""

    def __init__(self, run_dir: Path, cfg: Config, project: str | None = None):
        import wandb

        self.num_seeds = cfg.num_seeds
        group = run_dir.resolve().name
        project = project or os.environ.get("WANDB_PROJECT", "perla_jax")
        self.runs = []
        for s in range(cfg.num_seeds):
            run = wandb.init(
                project=project,
                group=group,
                name=f"{group}/seed_{s}",
                config={**cfg.to_dict(), "seed_index": s, "run_dir": str(run_dir)},
                dir=str(run_dir),
                # Several live runs in one process: without this, each init would finish the previous.
                reinit="create_new",
            )
            run.define_metric(STEP)
            run.define_metric("*", step_metric=STEP)
            self.runs.append(run)

    def log_chunk(self, metrics: Mapping[str, np.ndarray], first_update: int) -> None:
        for s, step, values in chunk_records(metrics, first_update, self.num_seeds):
            self.runs[s].log({STEP: step, **values})

    def close(self) -> None:
        for run in self.runs:
            run.finish()
