"""experiments/suite.py: every study's Configs validate at both budgets, and a two-run study runs end to end at the
smoke budget through run.py children, writes its table and figures, and skips finished runs when run again."""

from __future__ import annotations

import time

import numpy as np
import pytest

from experiments import reporting, studies, suite
from perla_jax import analysis, recording
from perla_jax.types import METRICS


@pytest.mark.parametrize("budget", studies.BUDGETS)
def test_every_study_validates_and_keeps_fields_apart_from_the_budget(budget):
    for study in studies.STUDIES.values():
        configs = study.configs(budget)
        assert all(study.baseline_for(label) in configs for label in configs), study.name
        if budget == "paper":
            assert all(cfg.num_seeds >= 8 for cfg in configs.values()), study.name
        # Runs of a study share every field but those their label names, so their seeds are common.
        assert len({(cfg.seed, cfg.num_seeds, cfg.total_timesteps, cfg.env) for cfg in configs.values()}) == 1


def test_unknown_budget_is_refused():
    with pytest.raises(ValueError, match="budget='huge' is invalid: allowed are smoke, cpu, paper"):
        next(iter(studies.STUDIES.values())).configs("huge")


def test_a_tables_sentence_names_every_setting_a_label_could_hide():
    # A run that leaves a default (k-smax2s3z's td advantage against perla_cv) must be named in its table; the
    # SMAX maps' studies run every algorithm at its defaults, so their tables name no setting.
    for map_name in ("3m", "2s3z", "3s5z"):
        assert studies.STUDIES[f"smax-{map_name}"].settings_sentence() == (
            "Hyperparameters identical except the algorithm.")
    assert "perla_mappo td: advantage=td" in studies.STUDIES["k-smax2s3z"].settings_sentence()
    # Compared with the study's common settings, not Config's defaults: observe is the default time limit, but
    # the SMAX preset's is terminal. The axis (K here) is in the label already and is not repeated.
    assert "mappo observe: time_limit=observe" in studies.STUDIES["timelimit-smax3m"].settings_sentence()
    assert studies.STUDIES["k-smax2s3z"].distinct_settings() == {"perla_mappo td": {"advantage": "td"},
                                                                 "perla_mappo K=1": {"k": 1}}
    assert studies.STUDIES["k-mpe9"].settings_sentence() == (
        "Hyperparameters identical except the algorithm and the K the run label names.")
    plain = studies.Study("x", "x", common=dict(env="mpe"), runs={"mappo": {"algo": "mappo"}}, paper={})
    assert plain.settings_sentence() == "Hyperparameters identical except the algorithm."


def test_wall_cell_says_when_a_run_was_resumed(tmp_path):
    assert suite.wall_cell(tmp_path) == "not timed"
    (tmp_path / suite.WALL_FILE).write_text("60.0\n30.0\n")
    assert suite.wall_cell(tmp_path) == "1.5 (resumed, 2 launches)"
    (tmp_path / suite.WALL_FILE).write_text("90.0\n")
    assert suite.wall_cell(tmp_path) == "1.5"
    # a launch stopped by a signal before the suite could time it: run.py's resume hint still counts it
    (tmp_path / "run.log").write_text("env steps 1/2\n\nstopped (SIGTERM) after 1/2 updates, checkpoint 1 saved; "
                                      f"{suite.RESUME_HINT} {tmp_path}\n")
    assert suite.wall_cell(tmp_path) == "1.5 (resumed, 2 launches, 1 untimed)"


@pytest.mark.parametrize("code, message", [
    (143, "run 'x' stopped by SIGTERM after its last checkpoint; the same suite command resumes it"),
    (130, "run 'x' stopped by SIGINT after its last checkpoint"),
    (1, "run 'x' failed with exit status 1"),
])
def test_a_stopped_child_is_reported_as_resumable_and_a_failed_one_as_failed(tmp_path, monkeypatch, code, message):
    monkeypatch.setattr(suite.subprocess, "run", lambda *a, **k: suite.subprocess.CompletedProcess(a, code))
    with pytest.raises(SystemExit, match=message):
        suite.train(tmp_path, "x")
    assert (tmp_path / suite.WALL_FILE).read_text().count("\n") == 1  # the launch is timed either way


@pytest.mark.parametrize("workers", [1, 2])
def test_after_a_failed_run_no_new_run_starts(workers):
    started = []

    def train_one(label):
        started.append(label)
        if label == "b":
            raise SystemExit("run 'b' stopped by SIGTERM")
        time.sleep(0.05)  # a run takes a while; b fails at once

    with pytest.raises(SystemExit, match="run 'b' stopped"):
        suite.train_in_parallel(["a", "b", "c", "d", "e"], train_one, workers)
    # one worker: a, then b fails; two: a and b start together, and c may start when a ends before b fails
    assert set(started[:2]) == {"a", "b"} and set(started) <= ({"a", "b"} if workers == 1 else {"a", "b", "c"})
    started.clear()
    suite.train_in_parallel(["a", "c", "d"], train_one, workers)
    assert sorted(started) == ["a", "c", "d"]


def test_workers_below_one_are_refused(capsys):
    with pytest.raises(SystemExit):
        suite.main(["--budget", "smoke", "--workers", "0"])
    assert "--workers=0 is invalid: allowed are integers >= 1" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_smoke_study_runs_end_to_end_pairs_each_n_with_its_baseline_and_resumes_without_retraining(tmp_path, monkeypatch):
    runs = {f"{algo} N={n}": dict(algo=algo, env_kwargs={"num_agents": n}) for n in (2, 3)
            for algo in ("mappo", "perla_mappo")}
    tiny = studies.Study("tiny-n", "Tiny credit game against N", common=dict(env="credit"), runs=runs,
                         paper=dict(total_timesteps=64, num_seeds=8), against="num_agents", threshold=0.3,
                         jaxmarl_return=True)
    monkeypatch.setitem(suite.STUDIES, "tiny-n", tiny)
    common = ["--study", "tiny-n", "--budget", "smoke", "--figures", str(tmp_path / "figs"), "--archive",
              str(tmp_path / "archive")]
    argv = common + ["--out", str(tmp_path / "runs"), "--write", str(tmp_path / "BENCH.md")]
    body = suite.main(argv + ["--workers", "2"])["tiny-n"]  # 4 runs, 2 children at a time
    header, *rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(runs)
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = {row.split(" | ")[0].lstrip("| "): [c.strip() for c in row.strip("|").split("|")] for row in rows}
    paired = columns.index("minus mappo (paired, 95% CI)")
    assert cells["mappo N=3"][paired] == "-" and cells["perla_mappo N=3"][paired].endswith("vs mappo N=3")
    assert "(2 seeds) vs mappo N=2" in cells["perla_mappo N=2"][paired]  # the smoke budget's 2 seeds
    # x N: the JaxMARL convention, N times the mean final return
    mean = float(cells["mappo N=3"][columns.index("final return: mean [95% CI]")].split()[0])
    assert float(cells["mappo N=3"][columns.index("final return x N (JaxMARL)")]) == pytest.approx(3 * mean, abs=0.01)
    reach = cells["mappo N=2"][columns.index("updates to return >= 0.3 (seeds reaching)")]
    assert reach.endswith("/2)")
    assert all(cells[label][columns.index("train steps/s (cpu)")] != "-" for label in runs)  # every run has timing.csv
    assert "chunks timed on: cpu (100% of updates)" in body
    assert (tmp_path / "figs" / "tiny-n-smoke.png").stat().st_size > 0
    assert (tmp_path / "figs" / "tiny-n-smoke-n.png").stat().st_size > 0
    assert "<!-- tiny-n-smoke:start -->" in (tmp_path / "BENCH.md").read_text()  # a paper table would be "tiny-n"
    assert (tmp_path / "runs" / "smoke" / "tiny-n.md").read_text().strip() == body.strip()
    folders = sorted(f for f in (tmp_path / "runs" / "smoke").iterdir() if f.is_dir())
    assert len(folders) == 4 and all((f / "metrics.csv").is_file() for f in folders)
    logs = {f: (f / "run.log").read_bytes() for f in folders}
    # everything finished: only the tables again, no child writes to a log; the signal table is its own section
    signal = suite.main(argv)["perla-signal-tiny-n-smoke"]
    assert {f: (f / "run.log").read_bytes() for f in folders} == logs
    assert all(len((f / suite.WALL_FILE).read_text().split()) == 1 for f in folders)
    signal_rows = [line for line in signal.splitlines() if line.startswith("| tiny-n")]
    assert [row.split(" | ")[1:3] for row in signal_rows] == [["2", "perla_mappo N=2"], ["3", "perla_mappo N=3"]]
    # The archive keeps what the table needs, no checkpoints; a new --out (a later session) restores the finished
    # runs from it instead of training them, and the table is the same.
    archived = sorted(f for f in (tmp_path / "archive" / "smoke").iterdir())
    assert [f.name for f in archived] == [f.name for f in folders]
    assert {p.name for p in archived[0].iterdir()} == {"config.json", "metrics.csv", "timing.csv", "run.log",
                                                         suite.WALL_FILE}
    monkeypatch.setattr(suite, "train", lambda folder, label: pytest.fail(f"{label} was trained again"))
    again = suite.main(common + ["--out", str(tmp_path / "later")])["tiny-n"]
    assert [line for line in again.splitlines() if line.startswith("| ")] == [header, *rows]


def test_steps_per_second_are_told_apart_by_the_platform_that_timed_them(tmp_path):
    """A run resumed on another machine: its table cell compares the study's main platform and names the other;
    a timing.csv from before the platform column keeps its rows, marked unrecorded."""
    cfg = studies.STUDIES["k-mpe6"].configs("smoke")["mappo"]
    steps = cfg.batch_size * cfg.num_seeds  # env steps of one update, all seeds
    resumed, cpu_only = tmp_path / "resumed", tmp_path / "cpu_only"
    resumed.mkdir(), cpu_only.mkdir()
    (resumed / recording.TIMING_FILE).write_text("first_update,updates,seconds\n1,4,2.0\n")  # old format
    recording.append_timing(resumed, 5, 4, 0.5, "gpu")
    for first, seconds in ((9, 1.0), (13, 3.0), (17, 2.0)):
        recording.append_timing(resumed, first, 4, seconds, "cpu")
        recording.append_timing(cpu_only, first, 4, seconds / 2, "cpu")
    assert [r["platform"] for r in recording.read_timing(resumed)] == ["unrecorded", "gpu", "cpu", "cpu", "cpu"]
    assert reporting.timed_updates([resumed]) == {"unrecorded": 4, "gpu": 4, "cpu": 12}
    assert reporting.main_platform([resumed, cpu_only]) == "cpu"
    assert reporting.training_steps_per_second(resumed, cfg, "cpu") == pytest.approx(4 * steps / 2.0)  # median
    assert reporting.training_steps_per_second(resumed, cfg, "gpu") == pytest.approx(4 * steps / 0.5)
    assert reporting.training_steps_per_second(resumed, cfg) == pytest.approx(4 * steps / 2.0)  # all five chunks
    assert reporting.steps_per_second_by_platform(resumed, cfg) == pytest.approx(
        {"unrecorded": 2 * steps, "gpu": 8 * steps, "cpu": 4 * steps / 2.0})
    assert suite.speed_cell(cpu_only, cfg, "cpu") == f"{4 * steps:,.0f}"
    assert suite.speed_cell(resumed, cfg, "cpu") == (
        f"{2 * steps:,.0f} (unrecorded: {2 * steps:,.0f}; gpu: {8 * steps:,.0f})")
    assert suite.trained_on([resumed, cpu_only]) == (
        "unrecorded (12% of updates), gpu (12% of updates), cpu (75% of updates)")
    assert recording.platform_name("NVIDIA H200", 1) == "NVIDIA H200"
    assert recording.platform_name("cpu", 4) == "4 x cpu"
    assert recording.platform_name("TPU v5, lite", 1) == "TPU v5 lite"  # no comma to split timing.csv's row


def test_updates_to_threshold_counts_from_one_and_marks_seeds_that_never_reach():
    values = np.array([[0.1, 0.5, 0.95, 0.8], [0.9, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_array_equal(analysis.updates_to_threshold(values, 0.9), [3.0, 1.0, np.nan])


def test_a_win_rate_study_compares_final_win_rates_and_still_reports_the_return(tmp_path):
    """Synthetic run folders with known metrics: the table's score columns are the win rate's exact final means
    (last 10% of 20 updates = the last 2) and the paired difference of those; the return gets its own column."""
    study = studies.Study("wins", "Synthetic SMAX", common=dict(env="smax", map_name="3m"),
                          runs={"mappo": dict(algo="mappo"), "ippo": dict(algo="ippo")},
                          paper=dict(total_timesteps=64, num_seeds=8), score="win_rate")
    seeds, updates = 3, 20
    win_levels = {"mappo": np.array([0.2, 0.4, 0.6]), "ippo": np.array([0.3, 0.5, 0.7])}
    folders = {}
    for label, cfg in study.configs("smoke").items():
        folder = tmp_path / label
        folder.mkdir()
        recording.write_config(folder, cfg)
        metrics = {name: np.full((seeds, updates), 0.5) for name in METRICS}
        metrics["env_steps"] = np.tile(np.arange(1, updates + 1) * 16, (seeds, 1))
        metrics["win_rate"] = np.zeros((seeds, updates))
        metrics["win_rate"][:, -2:] = win_levels[label][:, None]  # only the final 10% count
        metrics["return"] = np.full((seeds, updates), 2.0 if label == "mappo" else 3.0)
        recording.append_metrics(folder / recording.METRICS_FILE, metrics, first_update=1)
        folders[label] = folder
    header, _, *rows = suite.study_rows(study, folders)
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = {row.split(" | ")[0].lstrip("| "): [c.strip() for c in row.strip("|").split("|")] for row in rows}
    mean = columns.index("final win_rate: mean [95% CI]")
    assert cells["mappo"][mean].startswith("0.400 ") and cells["ippo"][mean].startswith("0.500 ")
    assert cells["ippo"][columns.index("minus mappo (paired, 95% CI)")].startswith("+0.100 ± 0.000 (3 seeds)")
    assert cells["ippo"][columns.index("P(> mappo) [95% CI]")].startswith("0.67")  # 6 of 9 pairs, no ties
    assert [cells[label][columns.index("final return: mean")] for label in ("mappo", "ippo")] == ["2.000", "3.000"]


def _run_with_returns(returns, **config):
    from perla_jax import Config

    returns = np.asarray(returns, dtype=float)
    metrics = {"return": returns, "critic_ev": np.arange(returns.size, dtype=float).reshape(returns.shape)}
    return analysis.Run(None, metrics, Config(**config))


def test_learning_phase_is_the_updates_just_before_the_threshold():
    # seed 0 reaches 0.9 at update 12, seed 1 at update 3, seed 2 never (its last updates count)
    returns = np.zeros((3, 20))
    returns[0, 12:] = 0.95
    returns[1, 3:] = 0.95
    run = _run_with_returns(returns, env="credit")
    phase = suite.learning_phase(run, 0.9)
    assert [list(np.flatnonzero(row)) for row in phase] == [list(range(2, 12)), [0, 1, 2], list(range(10, 20))]
    assert suite.learning_phase(run, None).all()
    # the cell averages critic_ev over exactly those updates
    want = np.mean(run.metrics["critic_ev"][phase])
    assert suite.phase_mean_cell(run, "critic_ev", phase) == f"{want:.3f}"
    assert suite.phase_mean_cell(run, "not_recorded", phase) == "-"


def test_exact_share_cell_reads_the_success_probability_off_the_return():
    from perla_jax.envs.credit import credit_others_share, pairs_others_share

    phase = np.ones((1, 2), bool)
    credit = _run_with_returns([[0.5, 0.5]], env="credit", env_kwargs={"num_agents": 8}, k=16)
    assert suite.exact_share_cell(credit, phase) == f"{credit_others_share(8, 16, 0.5):.3f}" == "0.881"
    # pairs: the return is p^2 for each pair, so p = sqrt(return)
    pairs = _run_with_returns([[0.25, 0.64]], env="credit_pairs", env_kwargs={"num_agents": 4}, k=4)
    want = np.mean([pairs_others_share(4, 4, 0.5), pairs_others_share(4, 4, 0.8)])
    assert suite.exact_share_cell(pairs, phase) == f"{want:.3f}"
    assert suite.exact_share_cell(_run_with_returns([[0.5, 0.5]], env="credit", algo="mappo"), phase) == "-"
    assert suite.exact_share_cell(_run_with_returns([[0.5, 0.5]], env="mpe"), phase) == "-"


def test_run_folder_is_named_by_what_the_run_computes(tmp_path):
    """The folder is the SHA-256 of the Config's JSON without fields at their pre-existing values; the time chunk
    (memory and rounding only) is hashed at 32 whatever it is set to, so the runs named before its default changed
    are found again; a field that changes the run changes the folder."""
    import hashlib
    import json

    from perla_jax import Config
    from perla_jax.config import LEGACY_VALUES

    cfg = Config(algo="perla_mappo", env="credit")
    fields = {k: v for k, v in cfg.to_dict().items() if LEGACY_VALUES.get(k, object()) != v}
    fields["critic_time_chunk"] = 32
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    assert suite.run_folder(tmp_path, "cpu", cfg) == tmp_path / "paper" / f"perla_mappo-{digest}"
    assert suite.run_folder(tmp_path, "paper", cfg.replace(critic_time_chunk=7)) == suite.run_folder(tmp_path, "cpu", cfg)
    assert suite.run_folder(tmp_path, "cpu", cfg.replace(k=4)) != suite.run_folder(tmp_path, "cpu", cfg)
    assert suite.run_folder(tmp_path, "smoke", cfg).parent == tmp_path / "smoke"
    # a folder written with another chunk is the same run; another K is not
    folder = suite.run_folder(tmp_path, "cpu", cfg)
    assert suite.ensure_folder(folder, cfg.replace(critic_time_chunk=32)) is False
    assert suite.ensure_folder(folder, cfg) is False
    with pytest.raises(SystemExit, match="holds another config"):
        suite.ensure_folder(folder, cfg.replace(k=4))
