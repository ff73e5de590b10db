"""Runs the studies behind BENCHMARKS.md (``experiments/studies.py``) and writes their tables and figures.

    python experiments/suite.py --budget paper --write BENCHMARKS.md            # every study
    python experiments/suite.py --study defaults-credit8 --budget smoke         # the tests' path
    python experiments/suite.py --study scaling-mpe --budget paper --workers 4  # 4 runs at a time on one GPU

Each run is a run.py run folder ``OUT/<budget>/<algo>-<hash of its Config>``, trained by ``run.py --resume``,
so an interrupted suite picks up from each run's last checkpoint and skips the runs already finished: nothing
that was written is lost, and a Config that two studies share is trained once. Child output goes to ``run.log``
in the run folder. ``--archive docs/bench/runs`` keeps each finished run's metrics, timing and log (no
checkpoints) in the repository, so a study can be finished over several machines or sessions and its tables
written again from what is committed.

Per run the table gives, over common seeds (seed i of every run uses the same key):
final score (the return, or the win rate where the study says so; mean of the last 10% of updates) as mean and
IQM with 95% stratified-bootstrap CIs (rliable), the paired difference from the study's baseline (at the same N
in a scaling study) with a 95% t-interval, rliable's probability of improvement over it with its 95%
stratified-bootstrap CI, the final return where the score is another metric, where the study has a threshold the
updates to reach it, the mean return over all updates (learning speed), the mean over updates and seeds of
``pg_var`` and ``pg_snr`` (on the advantages the PPO loss uses), the critic's explained variance ``critic_ev`` and
``others_share`` (the share of the TD errors' variance the others' actions explain) over the end of the learning
phase (the ``LEARNING_END`` updates before the study's threshold; all updates without one) beside what the exact
critic would give where it is known (the credit games), training steps/s of the median compiled chunk, and how
many launches each run took.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable

import jax
import numpy as np

from perla_jax import Config, analysis, recording
from perla_jax.config import LEGACY_VALUES
from perla_jax.envs.credit import credit_others_share, pairs_others_share
from perla_jax.experiment import RESUME_HINT
if __package__ in (None, ""):  # `python experiments/suite.py`: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import reporting, sections  # noqa: E402
from experiments.studies import AXIS_SUFFIX, BUDGETS, STUDIES, Study, axis_value  # noqa: E402
from experiments.suite_figures import plot_against_axis  # noqa: E402

RUN_PY = Path(__file__).with_name("run.py")
FIGURES = Path("docs/figures")
WALL_FILE = "suite_wall_s.txt"  # seconds each launch of the run took, one line per launch
# What ``--archive`` keeps of a finished run: all a table needs (no checkpoints), small enough to commit, so a
# study can be finished over sessions whose run folders do not survive and its tables regenerated later.
ARCHIVED = (recording.CONFIG_FILE, recording.METRICS_FILE, recording.TIMING_FILE, "run.log", WALL_FILE)
# run.py's exit statuses when a signal stopped it after a checkpoint (128 + the signal's number)
# Fields that change memory and float rounding, not what a run computes: hashed at the value the folders were first
# named with, so a run is found again whatever they are set to.
HASHED_AS = {"critic_time_chunk": 32}
STOPPED_EXIT = {128 + signal.SIGTERM: "SIGTERM", 128 + signal.SIGINT: "SIGINT"}


def section_name(name: str, budget: str) -> str:
    """The marker name of a section in the written markdown: ``name`` for the paper budget, ``name-<budget>``
    otherwise, so a study's table at a smaller budget stays beside its paper-budget one instead of replacing it."""
    return name if budget == "paper" else f"{name}-{budget}"


def ensure_folder(folder: Path, cfg: Config) -> bool:
    """Creates ``folder`` with ``cfg``'s config.json, or checks the one there; True when the run is finished."""
    if (folder / recording.CONFIG_FILE).is_file():
        stored = recording.read_config(folder)
        if {**stored.to_dict(), **HASHED_AS} != {**cfg.to_dict(), **HASHED_AS}:
            raise SystemExit(f"{folder} holds another config ({recording.CONFIG_FILE}): remove it or choose "
                             f"another --out; stored {stored.to_dict()} != wanted {cfg.to_dict()}")
        metrics = folder / recording.METRICS_FILE
        return metrics.is_file() and metrics.stat().st_size > 0 and \
            recording.read_metrics(metrics)["update"].shape[1] == cfg.num_updates
    folder.mkdir(parents=True, exist_ok=True)
    recording.write_config(folder, cfg)
    return False


def train(folder: Path, label: str) -> None:
    """One run.py child (resuming from the folder's last checkpoint), its output drained into run.log."""
    start = time.time()
    with (folder / "run.log").open("ab") as log:
        code = subprocess.run([sys.executable, str(RUN_PY), "--resume", str(folder), "--keep-checkpoints", "1"],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    with (folder / WALL_FILE).open("a") as f:
        f.write(f"{time.time() - start:.1f}\n")
    if code in STOPPED_EXIT:  # run.py saved the last chunk's checkpoint and logged its resume hint
        raise SystemExit(f"run {label!r} stopped by {STOPPED_EXIT[code]} after its last checkpoint; the same suite "
                         f"command resumes it (see {folder / 'run.log'})")
    if code != 0:
        raise SystemExit(f"run {label!r} failed with exit status {code}; see {folder / 'run.log'}")


def run_folder(out: Path, budget: str, cfg: Config) -> Path:
    """``OUT/smoke/...`` or (cpu and paper budgets) ``OUT/paper/<algo>-<first 10 hex digits of the SHA-256 of the
    Config's JSON>``: named by the Config alone, so studies that share a Config under different labels share its run."""
    # A field added later is left out at the value runs had before it existed, so their folders keep their names.
    fields = {name: value for name, value in cfg.to_dict().items() if LEGACY_VALUES.get(name, object()) != value}
    fields.update(HASHED_AS)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    # cpu and paper runs share one folder: a Config names its run, whichever budget asked for it
    return out / ("smoke" if budget == "smoke" else "paper") / f"{cfg.algo}-{digest}"


def copy_run_files(source: Path, target: Path) -> None:
    """Copies the ``ARCHIVED`` files of run folder ``source`` into ``target``, each written whole (a copy cut
    short leaves the previous file, never half of one)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVED:
        if (source / name).is_file():
            partial = target / f"{name}.partial"
            shutil.copyfile(source / name, partial)
            os.replace(partial, target / name)


def run_study(study: Study, budget: str, out: Path, workers: int = 1, archive: Path | None = None) -> dict[str, Path]:
    """Trains every run of ``study`` not yet finished, ``workers`` run.py children at a time (more than one pays
    where one run leaves a GPU idle); returns label -> run folder. With ``archive``, a finished run found there
    and not in ``out`` is restored instead of trained, and every finished run is archived (``ARCHIVED`` files)."""
    configs = study.configs(budget)
    folders = {label: run_folder(out, budget, cfg) for label, cfg in configs.items()}
    archived = {label: archive / folder.relative_to(out) for label, folder in folders.items()} if archive else {}
    restored = {label for label, kept in archived.items()
                if (kept / recording.METRICS_FILE).is_file() and not (folders[label] / recording.CONFIG_FILE).exists()}
    for label in restored:
        copy_run_files(archived[label], folders[label])
    todo = [label for label, cfg in configs.items() if not ensure_folder(folders[label], cfg)]

    def train_one(label: str) -> None:
        print(f"[{study.name}] training {label}", file=sys.stderr, flush=True)
        train(folders[label], label)
        if archive:
            copy_run_files(folders[label], archived[label])

    train_in_parallel(todo, train_one, workers)
    for label in set(archived) - set(todo) - restored:  # finished before this launch, outside the archive
        copy_run_files(folders[label], archived[label])
    return folders


def train_in_parallel(labels: list[str], train_one: Callable[[str], None], workers: int) -> None:
    """Calls ``train_one`` on each label in order, at most ``workers`` at a time. After the first failure (or stop)
    no new run starts; the running ones end on their own, then that failure is raised."""
    queue, running, failure = list(labels), set(), None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while queue or running:
            while queue and len(running) < workers:
                running.add(pool.submit(train_one, queue.pop(0)))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            failure = failure or next((f.exception() for f in done if f.exception() is not None), None)
            if failure is not None:
                queue.clear()
    if failure is not None:
        raise failure


def launch_record(folder: Path) -> tuple[list[float], int]:
    """The wall seconds of each launch of a run the suite timed, and how many launches the run took (more than
    one: it was resumed). A launch interrupted before the suite could time it (the suite itself stopped) still
    counts: run.py ends the log of every interrupted launch with its resume hint."""
    path = folder / WALL_FILE
    timed = [float(x) for x in path.read_text().split()] if path.is_file() else []
    log = folder / "run.log"
    interrupted = log.read_text(errors="replace").count(RESUME_HINT) if log.is_file() else 0
    return timed, max(len(timed), interrupted + 1)


LEARNING_END = 10  # updates before the threshold over which critic_ev and others_share are read


def learning_phase(run: analysis.Run, threshold: float | None) -> np.ndarray:
    """``[S, U]`` true at the last ``LEARNING_END`` updates before each seed's return first reaches ``threshold`` (the
    run's last ones for a seed that never does); every update where the study has none. After the threshold every
    agent nearly always succeeds, the critic's targets stop varying, and ratios of variances such as critic_ev and
    others_share say nothing; at the start the critic has not learned yet."""
    returns = run.metrics["return"]
    if threshold is None:
        return np.ones(returns.shape, bool)
    reached = np.nan_to_num(returns, nan=-np.inf) >= threshold
    end = np.where(reached.any(axis=1), reached.argmax(axis=1), returns.shape[1])  # [S] first update reaching it
    updates = np.arange(returns.shape[1])
    return (updates[None] < end[:, None]) & (updates[None] >= end[:, None] - LEARNING_END)


def phase_mean_cell(run: analysis.Run, metric: str, phase: np.ndarray | None = None) -> str:
    """Mean over the updates of ``phase`` (default all) and seeds; "-" where the metric is NaN throughout (V-critics'
    others_share) or was not recorded yet."""
    values = run.metrics.get(metric)
    if values is None:
        return "-"
    values = values[phase] if phase is not None else values
    return f"{np.nanmean(values):.3f}" if np.isfinite(values).any() else "-"


def share_cell(run: analysis.Run, phase: np.ndarray | None = None) -> str:
    """others_share (the perla-signal metric), as ``phase_mean_cell``."""
    return phase_mean_cell(run, "others_share", phase)


# env -> (closed-form others_share of its exact critic, each agent's success probability from the team return)
EXACT_SHARES = {"credit": (credit_others_share, lambda r: r), "credit_pairs": (pairs_others_share, np.sqrt)}


def exact_share_cell(run: analysis.Run, phase: np.ndarray) -> str:
    """What others_share would be with the exact critic (credit games, Q-critics), at every update of ``phase``,
    each agent's success probability read off the team return (all agents alike), then averaged."""
    cfg = run.cfg
    if not cfg.uses_q_critic or cfg.env not in EXACT_SHARES:
        return "-"
    closed_form, success = EXACT_SHARES[cfg.env]
    n, noise = int(cfg.env_kwargs.get("num_agents", 8)), float(cfg.env_kwargs.get("reward_noise", 0.0))
    probabilities = np.clip(success(run.metrics["return"][phase]), 1e-3, 1 - 1e-3)
    return f"{np.mean([closed_form(n, cfg.k, float(p), noise) for p in probabilities]):.3f}"


def wall_cell(folder: Path) -> str:
    """Wall minutes over the launches the suite timed; "not timed" when it timed none (its process was stopped
    while the run's last launch finished)."""
    timed, launches = launch_record(folder)
    untimed = f", {launches - len(timed)} untimed" if launches > len(timed) else ""
    return (f"{sum(timed) / 60:.1f}" if timed else "not timed") + (
        f" (resumed, {launches} launches{untimed})" if launches > 1 else "")


def threshold_cell(run: analysis.Run, threshold: float) -> str:
    """Updates to reach ``threshold``: mean and 95% t-interval over the seeds that reach it, and how many do."""
    updates = analysis.updates_to_threshold(run.metrics["return"], threshold)
    mean, half, reached = analysis.t_interval(updates)
    return (f"{mean:.1f} ± {half:.1f}" if reached > 1 else f"{mean:.1f}") + f" ({reached}/{updates.size})"


def speed_cell(folder: Path, cfg: Config, timed_on: str) -> str:
    """Training steps/s on the study's platform ``timed_on``, then those on any other platform that timed the run
    (a run resumed on another machine)."""
    speeds = reporting.steps_per_second_by_platform(folder, cfg)
    speed = speeds.pop(timed_on, math.nan)
    others = [f"{name}: {value:,.0f}" for name, value in speeds.items()]
    return ("-" if math.isnan(speed) else f"{speed:,.0f}") + (f" ({'; '.join(others)})" if others else "")


def study_rows(study: Study, folders: dict[str, Path]) -> list[str]:
    """The markdown table of one study: final ``study.score`` (return, or win rate on SMAX) with its paired
    difference and probability of improvement, then the return where the score is another metric."""
    timed_on = reporting.main_platform(folders.values())
    runs = {label: analysis.load_run(folder) for label, folder in folders.items()}
    finals = {label: analysis.final_scores(run.metrics[study.score]) for label, run in runs.items()}
    returns = finals if study.score == "return" else {
        label: analysis.final_scores(run.metrics["return"]) for label, run in runs.items()}
    ci_rows = analysis.final_table(list(runs.values()), metric=study.score)
    reach = [f"updates to return >= {study.threshold:g} (seeds reaching)"] if study.threshold is not None else []
    phase_name = (f"{LEARNING_END} updates before {study.threshold:g}" if study.threshold is not None
                  else "all updates")
    scaled = ["final return x N (JaxMARL)"] if study.jaxmarl_return else []
    also_return = ["final return: mean"] if study.score != "return" else []
    header = ["run", f"final {study.score}: mean [95% CI]", "IQM [95% CI]", *scaled,
              f"minus {study.baseline} (paired, 95% CI)", f"P(> {study.baseline}) [95% CI]", *also_return, *reach,
              "mean return over training", "pg_var", "pg_snr", "critic_sample_var (final)",
              f"critic_ev ({phase_name})", f"others_share ({phase_name})", "exact critic's others_share",
              f"train steps/s ({timed_on})", "wall min (all launches)"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (label, run), ci in zip(runs.items(), ci_rows):
        baseline = study.baseline_for(label)
        diff, half, pairs = analysis.paired_difference(finals[label], finals[baseline])
        sample_var = np.nanmean(analysis.final_scores(run.metrics["critic_sample_var"]))
        phase = learning_phase(run, study.threshold)
        paired = "-" if label == baseline else f"{diff:+.3f} ± {half:.3f} ({pairs} seeds)" + (
            f" vs {baseline}" if baseline != study.baseline else "")
        p, (low, high) = analysis.probability_of_improvement(finals[label], finals[baseline])
        improvement = "-" if label == baseline else f"{p:.2f} [{low:.2f}, {high:.2f}]"
        final_return = np.nanmean(returns[label])
        cells = [label, f"{ci.mean:.3f} [{ci.mean_ci[0]:.3f}, {ci.mean_ci[1]:.3f}]",
                 f"{ci.iqm:.3f} [{ci.iqm_ci[0]:.3f}, {ci.iqm_ci[1]:.3f}]",
                 *([f"{final_return * analysis.num_agents(run.cfg):.2f}"] if scaled else []), paired, improvement,
                 *([f"{final_return:.3f}"] if also_return else []),
                 *([threshold_cell(run, study.threshold)] if reach else []),
                 f"{np.nanmean(run.metrics['return']):.3f}", f"{np.nanmean(run.metrics['pg_var']):.3g}",
                 f"{np.nanmean(run.metrics['pg_snr']):.3g}", f"{sample_var:.2g}",
                 phase_mean_cell(run, "critic_ev", phase), share_cell(run, phase), exact_share_cell(run, phase),
                 speed_cell(folders[label], run.cfg, timed_on), wall_cell(folders[label])]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def report(study: Study, budget: str, folders: dict[str, Path], argv: list[str], figures: Path) -> str:
    cfg = next(iter(study.configs(budget).values()))
    figure = figures / f"{study.name}-{budget}.png"
    analysis.plot_runs([analysis.load_run(f) for f in folders.values()], figure, metric=study.score,
                       labels=list(folders))
    extra = []
    if study.against:
        axis = AXIS_SUFFIX[study.against].strip(" =")  # K or N
        axis_figure = plot_against_axis(study, folders, figures / f"{study.name}-{budget}-{axis.lower()}.png")
        extra = [f"Final return, pg_var and cost against {axis}: "
                 f"[{axis_figure.name}]({axis_figure.as_posix()}).  "]
    now = datetime.datetime.now(datetime.timezone.utc)
    return "\n".join([
        f"**{study.title}.** {cfg.total_timesteps:,} env steps per seed "
        f"({cfg.num_updates} updates of {cfg.num_envs} envs x {cfg.num_steps} steps), {cfg.num_seeds} common "
        f"seeds, budget `{budget}`. {study.settings_sentence()}",
        "",
        *study_rows(study, folders),
        "",
        f"Learning curves: [{figure.name}]({figure.as_posix()}).  ",
        *extra,
        f"Command: `python experiments/suite.py {' '.join(argv)}`  ",
        f"Date: {now:%Y-%m-%d %H:%M} UTC; table written on: {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__} on {jax.default_backend()}; chunks timed on: {trained_on(folders.values())}.",
    ])


def trained_on(folders: Iterable[Path]) -> str:
    """Each platform that timed the runs' chunks, with the share of their updates it timed."""
    counts = reporting.timed_updates(folders)
    total = sum(counts.values())
    return ", ".join(f"{name} ({count / total:.0%} of updates)" for name, count in counts.items()) or "-"


def signal_section(done: list[tuple[Study, dict[str, Path]]], budget: str) -> str:
    """One table over the agent-scaling studies: per environment and N, how much of the TD errors' variance the
    others' immediate actions explain (others_share), whether the Q-critic keeps its dependence on them
    (critic_sample_var) and PERLA's pg_var relative to the V-critic twin's at the same N."""
    rows = ["| study | N | run | others_share | critic_sample_var (final) | pg_var / twin's pg_var |",
            "|---|---|---|---|---|---|"]
    for study, folders in done:
        runs = {label: analysis.load_run(folder) for label, folder in folders.items()}
        for label, run in runs.items():
            if not run.cfg.uses_q_critic:
                continue
            # the V-critic twin at the same N: perla_mappo N=8 and perla_mappo mlp N=8 -> mappo N=8
            twin = label.split(" ", 1)[0].replace("perla_", "", 1) + " N=" + label.rsplit(" N=", 1)[1]
            ratio = np.nanmean(run.metrics["pg_var"]) / np.nanmean(runs[twin].metrics["pg_var"])
            sample_var = np.nanmean(analysis.final_scores(run.metrics["critic_sample_var"]))
            rows.append(f"| {study.name} | {axis_value(run.cfg, 'num_agents')} | {label} | {share_cell(run)} "
                        f"| {sample_var:.2g} | {ratio:.2f} |")
    return "\n".join([f"**Where PERLA can matter: the perla-signal metric per environment** (budget `{budget}`; means "
                      "over updates and seeds).", "", *rows])


def main(argv: list[str] | None = None) -> dict[str, str]:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", action="append", choices=tuple(STUDIES), help="study to run (repeatable; default all)")
    p.add_argument("--budget", choices=BUDGETS, required=True, help="smoke: 2 tiny updates; paper: the tables")
    p.add_argument("--out", type=Path, default=Path("runs/suite"), help="root of the run folders")
    p.add_argument("--figures", type=Path, default=FIGURES, help="folder of the learning-curve figures")
    p.add_argument("--write", type=Path, default=None, help="markdown file whose study sections are replaced")
    p.add_argument("--archive", type=Path, default=None,
                   help="folder that keeps finished runs' metrics, timing and logs (no checkpoints), e.g. "
                        "docs/bench/runs: runs found there are not trained again")
    p.add_argument("--workers", type=int, default=1,
                   help="run.py children training at a time (a GPU that one small run leaves idle; default 1)")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers={args.workers} is invalid: allowed are integers >= 1")
    studies = [STUDIES[name] for name in (args.study or STUDIES)]
    for study in studies:  # every Config is validated before anything trains
        study.configs(args.budget)
    bodies, scaling = {}, []
    for study in studies:
        folders = run_study(study, args.budget, args.out, args.workers, args.archive)
        body = report(study, args.budget, folders, argv, args.figures)
        if study.against == "num_agents":
            scaling.append((study, folders))
        if args.write:
            sections.write_marked_section(args.write, section_name(study.name, args.budget), body)
        (args.out / args.budget).mkdir(parents=True, exist_ok=True)
        (args.out / args.budget / f"{study.name}.md").write_text(body + "\n")
        print(body, flush=True)
        bodies[study.name] = body
    if scaling:  # one section per budget: a table does not mix budgets
        # one scaling study alone gets a section of its own, so it cannot replace a table drawn from several
        name = section_name("perla-signal" if len(scaling) > 1 else f"perla-signal-{scaling[0][0].name}", args.budget)
        bodies[name] = signal_section(scaling, args.budget)
        print(bodies[name], flush=True)
        if args.write:
            sections.write_marked_section(args.write, name, bodies[name])
    (args.out / "suite.json").write_text(json.dumps({"argv": argv, "studies": list(bodies)}) + "\n")
    return bodies


if __name__ == "__main__":
    main()
