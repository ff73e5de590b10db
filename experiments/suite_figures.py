"""The suite's figures beside the learning curves: each study's final return, pg_var and a cost (training
steps/s against K, updates to the study's threshold against N) against the study's axis."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments import reporting
from experiments.studies import AXIS_SUFFIX, Study, axis_value
from perla_jax import analysis

AXIS_NAMES = {"k": "K (joint-action samples)", "num_agents": "N (agents)"}


def panels(study: Study, timed_on: str) -> list[tuple[str, Callable[[Path, analysis.Run], np.ndarray], bool]]:
    """(y label, per-seed values of a run folder, log y) of each panel; speeds are those on platform ``timed_on``."""
    chosen = [
        ("final return", lambda folder, run: analysis.final_scores(run.metrics["return"]), False),
        ("pg_var (mean over updates)", lambda folder, run: np.nanmean(run.metrics["pg_var"], axis=1), True),
    ]
    if study.threshold is not None:  # seeds that never reach it count as the last update (censored)
        chosen.append((f"updates to return >= {study.threshold:g}", lambda folder, run: np.nan_to_num(
            analysis.updates_to_threshold(run.metrics["return"], study.threshold), nan=run.metrics["return"].shape[1]),
            False))
    elif study.against == "k":  # one number per run, no interval, all on the platform that timed most updates
        chosen.append((f"training env steps/s, median chunk\non {timed_on}", lambda folder, run: np.array(
            [reporting.training_steps_per_second(folder, run.cfg, timed_on)]), True))
    return chosen


def plot_against_axis(study: Study, folders: dict[str, Path], out: Path) -> Path:
    """One panel per entry of ``panels``, mean and 95% t-interval over seeds against the study's axis (log 2),
    one line per run family (the label before its K=/N= suffix); runs without the suffix (mappo in a K sweep)
    as dashed horizontal lines with their interval as a band."""
    chosen = panels(study, reporting.main_platform(folders.values()))
    fig = Figure(figsize=(5.0 * len(chosen), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(chosen))
    suffix = AXIS_SUFFIX[study.against]
    families: dict[str, list[tuple[int, Path, analysis.Run]]] = {}
    flat: dict[str, tuple[Path, analysis.Run]] = {}
    for label, folder in folders.items():
        run = analysis.load_run(folder)
        if suffix in label:
            families.setdefault(label.rsplit(suffix, 1)[0], []).append((axis_value(run.cfg, study.against), folder, run))
        else:
            flat[label] = (folder, run)
    for ax, (name, per_seed, log) in zip(axes, chosen):
        plotted = []  # every mean drawn on this panel
        for label, (folder, run) in flat.items():
            mean, half, _ = analysis.t_interval(per_seed(folder, run))
            plotted.append(mean)
            line = ax.axhline(mean, linestyle="--", color="black", label=f"{label} (no {suffix.strip(' =')})")
            if np.isfinite(half):
                ax.axhspan(mean - half, mean + half, color=line.get_color(), alpha=0.1)
        for family, members in families.items():
            members.sort(key=lambda m: m[0])
            stats = [analysis.t_interval(per_seed(folder, run)) for _, folder, run in members]
            mean, half = np.array([s[0] for s in stats]), np.nan_to_num(np.array([s[1] for s in stats]))
            ax.errorbar([m[0] for m in members], mean, yerr=half, marker="o", capsize=3, label=family)
            plotted.extend(mean)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(AXIS_NAMES[study.against])
        ax.set_ylabel(name)
        if log and any(np.isfinite(v) and v > 0 for v in plotted):  # runs recorded before timing.csv: all NaN
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{study.title}: mean over seeds, 95% t-interval")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
