"""Runs in the JSON layout of marl-eval (PyPI ``id-marl-eval``; the raw-data format Mava and BenchMARL write), so a
user can aggregate and plot our runs with theirs.

The layout (marl-eval's README, "Data Structure for Raw Experiment data"):
``{environment: {task: {algorithm: {run: {"step_<i>": {"step_count": int, metric: [values]}, ...,
"absolute_metrics": {metric: [values]}}}}}}``. Every algorithm of a task must have the same runs and logging steps.

What we put there: one marl-eval run per seed (``"seed_<s>"``); one logging step per ``every`` updates holding the
update's team ``return`` (our training metric: the mean over the episodes that ended in that update, so a
one-element list, as marl-eval allows for metrics computed over several episodes) as ``episode_return``, and
``win_rate`` where the env reports wins; ``absolute_metrics`` holds the seed's final performance (mean of the last
10% of updates, ``analysis.FINAL_PERFORMANCE``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from perla_jax.envs.registry import env_family, resolve_env_name
from perla_jax.outputs.analysis import Run, final_scores

METRIC_NAMES = {"return": "episode_return", "win_rate": "win_rate"}  # ours -> marl-eval's (Mava's) names


def task_of(run: Run) -> tuple[str, str]:
    """(environment, task) of a run from its config: the env family and the env (with its map for SMAX)."""
    if run.cfg is None:
        raise ValueError(f"{run.path} has no config.json: the environment and task are unknown")
    family = env_family(run.cfg.env).name
    return family, run.cfg.map_name or resolve_env_name(run.cfg.env)


def export_folders(runs: list[Run], labels: list[str], every: int = 1) -> dict[str, Any]:
    """All runs in one marl-eval document, grouped by ``task_of``."""
    grouped: dict[tuple[str, str], dict[str, Run]] = {}
    for run, label in zip(runs, labels, strict=True):
        grouped.setdefault(task_of(run), {})[label] = run
    out: dict[str, Any] = {}
    for (environment, task), members in grouped.items():
        out.setdefault(environment, {}).update(export_runs(members, environment, task, every)[environment])
    return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # JSON has no NaN


def export_runs(
    runs: Mapping[str, Run], environment: str, task: str, every: int = 1
) -> dict[str, Any]:
    """``{environment: {task: {label: {seed_<s>: ...}}}}`` for ``runs`` (label -> Run); ValueError where the runs
    differ in seeds or logged updates (marl-eval needs them equal) or ``every`` is not a positive integer."""
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} is invalid: allowed is an integer >= 1")
    shapes = {label: run.metrics["return"].shape for label, run in runs.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"marl-eval needs every algorithm with the same seeds and updates; got [S, U] {shapes}")
    task_data = {}
    for label, run in runs.items():
        metrics = {ours: run.metrics[ours] for ours in METRIC_NAMES if np.isfinite(run.metrics[ours]).any()}
        finals = {ours: final_scores(values) for ours, values in metrics.items()}
        steps = run.metrics["env_steps"]
        seeds = {}
        for s in range(run.num_seeds):
            logged = {
                f"step_{i}": {"step_count": int(steps[s, u]),
                              **{METRIC_NAMES[ours]: [_finite_or_none(v[s, u])] for ours, v in metrics.items()}}
                for i, u in enumerate(range(every - 1, steps.shape[1], every))
            }
            logged["absolute_metrics"] = {METRIC_NAMES[ours]: [_finite_or_none(f[s])] for ours, f in finals.items()}
            seeds[f"seed_{int(run.metrics['seed'][s, 0])}"] = logged
        task_data[label] = seeds
    return {environment: {task: task_data}}
