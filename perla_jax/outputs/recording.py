"""What a training run leaves on disk: its config, a per-seed metrics CSV and a learning-curve PNG.

Layout of a run folder (default ``runs/<env>-<algo>-k<K>-<YYYYmmdd-HHMMSS>/``)::

    config.json         Config.to_dict(), loadable with read_config
    metrics.csv         columns seed, update, *METRICS, diverged; one row per (update, seed)
    learning_curve.png  mean return over seeds with a 95% confidence band, against env steps
    timing.csv          first_update, updates, seconds, platform: the wall time of each compiled chunk (no
                        compilation) and the devices that ran it (platform_name: "cpu", "NVIDIA H200", ...;
                        "gpu" in files written before that, on 2026-11-27); a resumed run may change it

``seed`` is the index (0..num_seeds-1) of the key split from ``PRNGKey(cfg.seed)``; ``update`` counts
updates done, from 1, so ``env_steps == update * cfg.batch_size``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from perla_jax.config import Config
from perla_jax.types import METRICS

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CURVE_FILE = "learning_curve.png"
TIMING_FILE = "timing.csv"
TIMING_COLUMNS = ("first_update", "updates", "seconds", "platform")
TIMING_HEADER = ",".join(TIMING_COLUMNS)
UNRECORDED = "unrecorded"  # the platform of a chunk timed before timing.csv had the column
# ``diverged`` is 1 on the rows of a seed frozen by the divergence guard (outputs/divergence.py), whose
# metrics are then NaN; 0 elsewhere.
COLUMNS = ("seed", "update", *METRICS, "diverged")
INT_COLUMNS = ("seed", "update", "env_steps", "diverged")
Z95 = 1.96  # two-sided 95% quantile of the standard normal


def default_run_dir(cfg: Config, now: _dt.datetime | None = None, root: str | Path = "runs") -> Path:
    """``<root>/<env>-<algo>[-k<K>]-<YYYYmmdd-HHMMSS>`` for ``now`` (default: the current local time); K only for
    the algorithms that sample joint actions."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    env = f"{cfg.env}-{cfg.map_name}" if cfg.map_name else cfg.env
    k = "" if "k" in cfg.inapplicable() else f"-k{cfg.k}"
    return Path(root) / f"{env}-{cfg.algo}{k}-{stamp}"


def write_config(run_dir: str | Path, cfg: Config) -> Path:
    """Writes ``cfg.to_dict()`` as ``config.json`` in ``run_dir`` and returns the file's path."""
    path = Path(run_dir) / CONFIG_FILE
    path.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_config(run_dir: str | Path) -> Config:
    """The Config stored in ``run_dir/config.json`` (JSON lists come back as the tuples they were)."""
    return Config.from_dict(json.loads((Path(run_dir) / CONFIG_FILE).read_text()))


def read_run_config(run_dir: str | Path, option: str) -> Config:
    """``read_config`` of a folder a user named as ``option``, or ValueError naming it when it holds no run."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise ValueError(f"{option}={str(run_dir)!r} holds no {CONFIG_FILE}: allowed is a folder written by a "
                         "training run")
    return read_config(run_dir)


def metrics_rows(metrics: Mapping[str, np.ndarray], first_update: int) -> list[list]:
    """CSV rows for one chunk of metrics shaped ``[S, n]`` (seed, update); updates are numbered from
    ``first_update``. Rows are ordered by update, then seed. Floats are written with ``repr`` so they
    read back exactly; ``env_steps`` stays an integer. ``metrics["diverged"]`` (``[S, n]`` bool) is optional:
    without it no row is marked."""
    arrays = {name: np.asarray(metrics[name]) for name in METRICS}
    num_seeds, n = arrays[METRICS[0]].shape
    diverged = np.asarray(metrics.get("diverged", np.zeros((num_seeds, n), bool)))
    rows = []
    for u in range(n):
        for s in range(num_seeds):
            values = [_cell(name, arrays[name][s, u]) for name in METRICS]
            rows.append([s, first_update + u, *values, int(diverged[s, u])])
    return rows


def _cell(name: str, value) -> int | str:
    return int(value) if name in INT_COLUMNS else repr(float(value))


def append_metrics(path: str | Path, metrics: Mapping[str, np.ndarray], first_update: int) -> int:
    """Appends one chunk of ``[S, n]`` metrics to the CSV at ``path`` (writing the header if the file is
    new or empty) and returns the number of rows written. The file is flushed and synced before returning,
    so rows of finished chunks survive an interrupted run."""
    path = Path(path)
    fresh = not path.exists() or path.stat().st_size == 0
    if not fresh:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != COLUMNS:
            raise ValueError(f"{path} has columns {header}, expected {list(COLUMNS)}")
    rows = metrics_rows(metrics, first_update)
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if fresh:
            writer.writerow(COLUMNS)
        writer.writerows(rows)
        # On disk before the chunk's checkpoint is saved, so a crash cannot leave a checkpoint covering rows
        # the CSV lost (resume drops rows beyond the checkpoint, but cannot recreate missing ones).
        f.flush()
        os.fsync(f.fileno())
    return len(rows)


def platform_name(device_kind: str, device_count: int) -> str:
    """What timed a chunk, as timing.csv records it: JAX's ``device_kind`` ("cpu", "NVIDIA H100 80GB HBM3"), led by
    the device count where the seeds were sharded over several. The kind, not just the backend, because an H100's
    and an H200's speeds must not share a column; commas become spaces so the CSV row keeps four fields."""
    kind = " ".join(device_kind.replace(",", " ").split()) or UNRECORDED
    return kind if device_count == 1 else f"{device_count} x {kind}"


def append_timing(run_dir: str | Path, first_update: int, updates: int, seconds: float, platform: str) -> None:
    """Appends one compiled chunk's wall time and the devices that ran it (``platform_name``) to the run's
    timing.csv (header on a new file). A file from before the platform column gets the column once, its old rows
    marked UNRECORDED; otherwise only the header line is read, as this runs after every chunk."""
    path = Path(run_dir) / TIMING_FILE
    header = ""
    if path.is_file():
        with path.open() as f:
            header = f.readline().rstrip("\n")
    if header and header != TIMING_HEADER:
        rows = [",".join(row[c] for c in TIMING_COLUMNS) for row in read_timing(run_dir)]
        atomic_write_text(path, "\n".join([TIMING_HEADER, *rows]) + "\n")
    with path.open("a") as f:
        f.write(("" if header else TIMING_HEADER + "\n") + f"{first_update},{updates},{seconds!r},{platform}\n")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``: readers see
    the old file or the new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_timing(run_dir: str | Path) -> list[dict[str, str]]:
    """The rows of the run's timing.csv as dicts keyed by TIMING_COLUMNS ([] without the file)."""
    path = Path(run_dir) / TIMING_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{**row, "platform": row.get("platform") or UNRECORDED} for row in csv.DictReader(f)]


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """The CSV at ``path`` as arrays ``[S, U]`` per column (``U`` = updates written for every seed;
    a trailing update some seeds lack is dropped). ``seed`` and ``update`` come back as ints. A metric
    column the file lacks (written before that metric existed) comes back as NaN."""
    with Path(path).open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        # one numeric conversion for the whole file: a 2e6-step run has ~8,000 rows of 17 columns
        values = np.array([row for row in reader if row], dtype=np.float64).reshape(-1, max(len(header), 1))
    if not header or not len(values):
        raise ValueError(f"{path} holds no metrics rows")
    lacking = [name for name in INT_COLUMNS if name not in header]
    if lacking:
        raise ValueError(f"{path} has no {', '.join(lacking)} column: not a perla_jax metrics file")
    column = {name: i for i, name in enumerate(header)}
    row_of: dict[int, dict[int, int]] = {}  # seed -> update -> row; a later row wins
    for i, (s, u) in enumerate(values[:, [column["seed"], column["update"]]].astype(np.int64).tolist()):
        row_of.setdefault(s, {})[u] = i
    seeds = sorted(row_of)
    updates = sorted(set.intersection(*(set(row_of[s]) for s in seeds)))
    rows = np.array([[row_of[s][u] for u in updates] for s in seeds], dtype=np.int64).reshape(len(seeds), -1)
    return {name: values[rows, column[name]].astype(np.int64 if name in INT_COLUMNS else np.float64)
            if name in column else np.full(rows.shape, np.nan) for name in COLUMNS}


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, 95% half-width and count along ``axis`` with NaNs ignored.

    The half-width is the normal approximation ``1.96 * std / sqrt(n)`` with the sample standard
    deviation (ddof=1) over the ``n`` finite values; it is NaN where ``n < 2`` and the mean is NaN
    where ``n == 0``.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    n = finite.sum(axis=axis)
    filled = np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=axis) / n
        dev = np.where(finite, values - np.expand_dims(mean, axis), 0.0)
        std = np.sqrt((dev**2).sum(axis=axis) / (n - 1))
        half = np.where(n >= 2, Z95 * std / np.sqrt(n), np.nan)
    return mean, half, n


def last_finite(values: np.ndarray) -> np.ndarray:
    """Per row of ``[S, U]``, the last finite value (NaN for a row without one)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape[0], np.nan)
    for s, row in enumerate(values):
        idx = np.flatnonzero(np.isfinite(row))
        if idx.size:
            out[s] = row[idx[-1]]
    return out


def plot_learning_curve(run_dir: str | Path, cfg: Config | None = None) -> Path:
    """Draws ``learning_curve.png`` in ``run_dir`` from its ``metrics.csv``: the mean return over seeds
    (NaN returns ignored) with a shaded band of mean ± 1.96·std/sqrt(S) (see ``mean_ci``), against env
    steps. Uses matplotlib's Agg canvas directly, so no display or pyplot state is involved."""

    run_dir = Path(run_dir)
    cfg = cfg or read_config(run_dir)
    m = read_metrics(run_dir / METRICS_FILE)
    steps = m["env_steps"][0]
    mean, half, _ = mean_ci(m["return"], axis=0)
    num_seeds = m["return"].shape[0]

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, mean, marker="o" if steps.size < 20 else None, label="mean return")
    if num_seeds > 1:
        ax.fill_between(steps, mean - half, mean + half, alpha=0.25, label="95% CI (normal approx.)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{cfg.env}{' ' + cfg.map_name if cfg.map_name else ''} | {cfg.algo} | K={cfg.k} | {num_seeds} seed{'s' if num_seeds != 1 else ''}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    path = run_dir / CURVE_FILE
    fig.savefig(path)
    return path


def format_mean_ci(mean: float, half: float) -> str:
    """``"m ± h"``, or just ``"m"`` when the half-width is undefined (fewer than two seeds)."""
    return f"{mean:.3f}" if not math.isfinite(half) else f"{mean:.3f} ± {half:.3f}"
