"""Comparing finished runs: learning curves with bootstrap bands, and final-performance tables.

Final performance of one seed = the mean of its finite values of the metric over the last
``fraction`` (default 10%) of its updates, at least one update (FINAL_PERFORMANCE below). Across seeds
the table reports the mean and the interquartile mean (IQM, the 25%-trimmed mean; Agarwal et al. 2021)
with 95% stratified-bootstrap confidence intervals from rliable. With one task per run the strata are
trivial, so this is the percentile bootstrap over seeds.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats  # a dependency of jax itself

from perla_jax.config import Config
from perla_jax.envs.registry import make_env
from perla_jax.outputs import recording
from perla_jax.types import METRICS

PLOTTABLE = tuple(m for m in METRICS if m != "env_steps")
FINAL_FRACTION = 0.1
FINAL_PERFORMANCE = (
    "final performance of a seed = mean of its finite values over the last {pct:g}% of its updates "
    "(at least one update); a seed with no finite value there is left out (the seeds column shows kept/total)"
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run folder's metrics (``[S, U]`` per column of metrics.csv) and its config, if present."""

    path: Path
    metrics: dict[str, np.ndarray]
    cfg: Config | None

    @property
    def num_seeds(self) -> int:
        return self.metrics["seed"].shape[0]

    @property
    def label(self) -> str:
        """``perla_mappo K=16`` (K only for the marginalised critics), else the folder name."""
        if self.cfg is None:
            return self.path.name
        return f"{self.cfg.algo} K={self.cfg.k}" if self.cfg.uses_q_critic else self.cfg.algo


@dataclasses.dataclass(frozen=True)
class FinalRow:
    label: str
    seeds: int  # seeds with a final score
    seeds_total: int
    mean: float
    mean_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]


def load_run(path: str | Path) -> Run:
    """Reads ``path/metrics.csv`` (and ``config.json`` when present). A missing folder, missing CSV or a
    CSV without rows raises an error naming the path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {str(path)!r} does not exist")
    csv_path = path / recording.METRICS_FILE
    if not csv_path.is_file():
        raise FileNotFoundError(f"run folder {str(path)!r} has no {recording.METRICS_FILE} (not a run folder?)")
    if csv_path.stat().st_size == 0:
        raise ValueError(f"{csv_path} is empty: the run recorded no updates")
    metrics = recording.read_metrics(csv_path)  # ValueError naming the file when it has no rows
    cfg = recording.read_config(path) if (path / recording.CONFIG_FILE).is_file() else None
    return Run(path, metrics, cfg)


def num_agents(cfg: Config) -> int:
    """The number of agents of ``cfg``'s environment."""
    return make_env(cfg.env, cfg.env_kwargs, cfg.map_name).num_agents


def in_jaxmarl_convention(run: Run) -> Run:
    """``run`` with its ``return`` in JaxMARL's MPE convention: N times our team return (its ``MPELogWrapper``
    multiplies every reward by the number of agents). ValueError for a run without config.json (N unknown)."""
    if run.cfg is None:
        raise ValueError(f"{run.path} has no {recording.CONFIG_FILE}: its number of agents, which JaxMARL's return "
                         "convention multiplies by, is unknown")
    return dataclasses.replace(run, metrics={**run.metrics, "return": run.metrics["return"] * num_agents(run.cfg)})


def labels_for(runs: Sequence[Run]) -> list[str]:
    """Each run's label, with the folder name appended where two runs would share one."""
    plain = [r.label for r in runs]
    return [f"{lab} ({r.path.name})" if plain.count(lab) > 1 else lab for lab, r in zip(plain, runs)]


def check_metric(metric: str) -> None:
    if metric not in PLOTTABLE:
        raise ValueError(f"metric={metric!r} is invalid: allowed are {', '.join(PLOTTABLE)}")


def final_scores(values: np.ndarray, fraction: float = FINAL_FRACTION) -> np.ndarray:
    """Per seed of ``[S, U]``: the mean of the finite values over the last ``ceil(fraction * U)``
    updates (NaN for a seed without any there)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} is invalid: allowed is a number in (0, 1]")
    values = np.asarray(values, dtype=np.float64)
    window = values[:, -max(1, math.ceil(fraction * values.shape[1])) :]
    finite = np.isfinite(window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, window, 0.0).sum(axis=1) / finite.sum(axis=1)


def final_table(
    runs: Sequence[Run], metric: str = "return", fraction: float = FINAL_FRACTION, reps: int = 2000, seed: int = 0
) -> list[FinalRow]:
    """Mean and IQM over seeds of each run's final performance, with 95% stratified-bootstrap CIs
    (rliable, ``reps`` resamples, seeded so the table is reproducible)."""
    from rliable import metrics as rly_metrics

    check_metric(metric)
    rows = []
    for run, label in zip(runs, labels_for(runs)):
        scores = final_scores(run.metrics[metric], fraction)
        kept = scores[np.isfinite(scores)]
        if kept.size == 0:
            raise ValueError(f"{run.path}: no seed has a finite {metric} in its last {fraction:.0%} of updates")
        aggregate = lambda x: np.array([rly_metrics.aggregate_mean(x), interquartile_mean(x)])
        # rliable 1.2's StratifiedBootstrap draws its indices from NumPy's global RNG (np.random.choice),
        # ignoring random_state; seed that, and restore it so callers' global streams are untouched.
        point, interval = _seeded_interval_estimates({label: kept[:, None]}, aggregate, reps, seed)
        (mean, iqm), ci = point[label], interval[label]
        rows.append(
            FinalRow(label, kept.size, scores.size, float(mean), tuple(map(float, ci[:, 0])), float(iqm),
                     tuple(map(float, ci[:, 1])))
        )
    return rows


def interquartile_mean(scores: np.ndarray) -> np.float64:
    """The mean of the middle half of all ``scores``: rliable's ``aggregate_iqm`` (SciPy's 25% trimmed mean over
    every value) bit for bit, without SciPy's per-call argument handling, which cost most of a suite table's time
    (the bootstrap calls it ``reps`` times per row). Non-finite scores are the caller's to drop."""
    flat = np.ravel(np.asarray(scores, dtype=np.float64))
    cut = int(0.25 * flat.size)
    return np.mean(np.partition(flat, (cut, flat.size - cut - 1))[cut : flat.size - cut])


def _seeded_interval_estimates(scores: dict, aggregate, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable's stratified-bootstrap point estimates and 95% CIs, reproducible for a given ``seed``."""
    from rliable import library as rly

    # rliable 1.2's StratifiedBootstrap draws its indices from NumPy's global RNG (np.random.choice),
    # ignoring random_state; seed that, and restore it so callers' global streams are untouched.
    numpy_rng_state = np.random.get_state()
    try:
        np.random.seed(seed)
        with warnings.catch_warnings():
            # arch deprecates RandomState in favour of Generator; rliable 1.2 still passes one.
            warnings.simplefilter("ignore", FutureWarning)
            return rly.get_interval_estimates(scores, aggregate, reps=reps, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(numpy_rng_state)


def probability_of_improvement(
    x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """rliable's probability of improvement P(X > Y) of per-seed scores ``x`` over ``y`` (ties count one half)
    with its 95% stratified-bootstrap CI; seeds with a non-finite score are left out."""
    x, y = (np.asarray(v, dtype=np.float64) for v in (x, y))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    point, interval = _seeded_interval_estimates({"x": (x[:, None], y[:, None])}, pairwise_improvement, reps, seed)
    low, high = np.ravel(interval["x"])
    return float(point["x"]), (float(low), float(high))


def pairwise_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """``rliable.metrics.probability_of_improvement`` of ``[runs_x, tasks]`` over ``[runs_y, tasks]``, the same
    number bit for bit (tested), by counting pairs: per task, the share of (x, y) pairs with x > y, ties one half,
    averaged over tasks (identical scores give exactly one half, rliable's special case, with no branch: their
    pairs above and below are equally many). rliable gets it from scipy's Mann-Whitney U, about 1 ms a call; the
    bootstrap calls it once per resample (2000 per table cell), which was most of the time a suite table took to
    build."""
    greater = (scores_x[:, None, :] > scores_y[None, :, :]).sum(axis=(0, 1))
    ties = (scores_x[:, None, :] == scores_y[None, :, :]).sum(axis=(0, 1))
    return np.mean((greater + 0.5 * ties) / (scores_x.shape[0] * scores_y.shape[0]))


def format_table(rows: Sequence[FinalRow], metric: str = "return") -> str:
    """A fixed-width text table, one line per run."""
    header = ("run", "seeds", f"mean {metric}", "95% CI", f"IQM {metric}", "95% CI")
    lines = [
        (r.label, f"{r.seeds}/{r.seeds_total}", f"{r.mean:.3f}", f"[{r.mean_ci[0]:.3f}, {r.mean_ci[1]:.3f}]",
         f"{r.iqm:.3f}", f"[{r.iqm_ci[0]:.3f}, {r.iqm_ci[1]:.3f}]")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, lines)])


def bootstrap_curve(
    values: np.ndarray, reps: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds of ``[S, U]`` at each update (NaNs ignored) and a percentile-bootstrap band
    over seeds. A resample is a multinomial count per seed, so all updates share the resampled seeds
    and the cost is ``reps x U``, not ``reps x S x U``. Where fewer than two seeds are finite, the
    band collapses to the mean (NaN where none is)."""
    values = np.asarray(values, dtype=np.float64)
    num_seeds = values.shape[0]
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    counts = np.random.default_rng(seed).multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=reps)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / finite.sum(axis=0)
        boot = (counts @ filled) / (counts @ finite)  # [reps, U]; NaN where a resample drew no finite seed
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        lo, hi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    thin = finite.sum(axis=0) < 2
    return mean, np.where(thin, mean, lo), np.where(thin, mean, hi)


def plot_runs(
    runs: Sequence[Run], out: str | Path, metric: str = "return", reps: int = 1000, seed: int = 0,
    labels: Sequence[str] | None = None,
) -> Path:
    """Overlays the runs' mean ``metric`` over seeds with 95% bootstrap bands, against env steps, and
    writes the figure to ``out`` (format from its suffix). ``labels`` default to ``labels_for(runs)``."""

    check_metric(metric)
    labels = labels_for(runs) if labels is None else labels
    fig = Figure(figsize=(7.5 if len(runs) <= 6 else 10.0, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(runs) > 10:  # the default cycle repeats after 10 colours
        ax.set_prop_cycle(color=matplotlib.colormaps["tab20"].colors[: len(runs)])
    for run, label in zip(runs, labels, strict=True):
        steps = run.metrics["env_steps"][0]
        mean, lo, hi = bootstrap_curve(run.metrics[metric], reps=reps, seed=seed)
        (line,) = ax.plot(steps, mean, label=f"{label} ({run.num_seeds} seeds)")
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over seeds, 95% bootstrap CI")
    ax.grid(alpha=0.3)
    if len(runs) <= 6:
        ax.legend(loc="best")
    else:  # many runs: beside the axes, so no curve is hidden
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def paired_difference(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float, int]:
    """Mean of ``x - y`` over the seeds where both are finite (common seeds, paired) and the half-width
    of its t-interval; returns ``(mean, half_width, pairs)`` (half-width NaN with fewer than 2 pairs)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired runs need the same seeds: shapes {x.shape} and {y.shape} differ")
    return t_interval((x - y)[np.isfinite(x) & np.isfinite(y)], level)


def t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float, int]:
    """``(mean, half-width of the t-interval, n)`` over the finite values of ``x`` (NaN where too few)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, 0
    if x.size < 2:
        return float(x.mean()), math.nan, 1
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half), int(x.size)


def updates_to_threshold(values: np.ndarray, threshold: float) -> np.ndarray:
    """Per seed of ``values [S, U]``, the first update (counted from 1) whose value is at least ``threshold``;
    NaN for a seed that never reaches it."""
    values = np.asarray(values, dtype=np.float64)
    reached = values >= threshold
    first = np.argmax(reached, axis=1) + 1.0
    return np.where(reached.any(axis=1), first, np.nan)
