"""Final-performance tables and overlay plots from synthetic run folders (no training)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from rliable import metrics as rly_metrics

from perla_jax import METRICS, Config, analysis, recording

ROOT = Path(__file__).resolve().parents[1]
UPDATES = 20  # the last 10% is the last 2 updates


def _load_plot_cli():
    spec = importlib.util.spec_from_file_location("perla_plot_cli", ROOT / "experiments" / "plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plot_cli = _load_plot_cli()


def write_run(folder: Path, returns: np.ndarray, cfg: Config | None) -> Path:
    """A run folder whose ``return`` is ``returns [S, U]``, written in two chunks as run.py does."""
    folder.mkdir(parents=True)
    num_seeds, updates = returns.shape
    if cfg is not None:
        recording.write_config(folder, cfg.replace(num_seeds=num_seeds))
    m = {name: np.zeros((num_seeds, updates)) for name in METRICS}
    m["env_steps"] = np.tile(np.arange(1, updates + 1) * 64, (num_seeds, 1))
    m["return"] = returns
    half = updates // 2
    for lo, hi in ((0, half), (half, updates)):
        recording.append_metrics(folder / recording.METRICS_FILE, {k: v[:, lo:hi] for k, v in m.items()}, lo + 1)
    return folder


def returns_ending_at(final: np.ndarray, updates: int = UPDATES) -> np.ndarray:
    """Curves rising linearly to flat final values: the last 10% of every seed equals ``final[s]``."""
    ramp = np.linspace(0.0, 1.0, updates - 2)[None, :] * final[:, None]
    return np.concatenate([ramp, np.repeat(final[:, None], 2, axis=1)], axis=1)


FINAL_8 = np.array([-30.0, -3.0, 1.0, 2.0, 4.0, 8.0, 9.0, 40.0])  # skewed on both ends


@pytest.fixture
def runs(tmp_path):
    perla = write_run(tmp_path / "a", returns_ending_at(FINAL_8), Config(algo="perla_mappo", k=16))
    mappo = write_run(tmp_path / "b", returns_ending_at(np.array([1.0, 2.0, 3.0])), Config(algo="mappo"))
    bare = write_run(tmp_path / "bare-run", returns_ending_at(np.array([5.0, 6.0, 7.0, 8.0, 9.0])), None)
    return perla, mappo, bare


def test_final_scores_use_the_finite_tail():
    values = np.array([[0.0] * 18 + [1.0, 3.0], [0.0] * 18 + [np.nan, 5.0], [0.0] * 18 + [np.nan, np.nan]])
    np.testing.assert_array_equal(analysis.final_scores(values)[:2], [2.0, 5.0])
    assert np.isnan(analysis.final_scores(values)[2])
    np.testing.assert_array_equal(analysis.final_scores(values[:, -3:], fraction=0.1), [3.0, 5.0, np.nan])
    with pytest.raises(ValueError, match=r"fraction=0 is invalid"):
        analysis.final_scores(values, fraction=0)


def test_table_mean_iqm_and_cis(runs):
    rows = analysis.final_table([analysis.load_run(r) for r in runs], reps=500)
    assert [r.label for r in rows] == ["perla_mappo K=16", "mappo", "bare-run"]
    assert [(r.seeds, r.seeds_total) for r in rows] == [(8, 8), (3, 3), (5, 5)]
    perla = rows[0]
    # 8 seeds: the 25% trim drops exactly two from each end, so the IQM is the mean of the middle four.
    assert perla.iqm == pytest.approx(scipy.stats.trim_mean(FINAL_8, 0.25)) == pytest.approx(3.75)
    assert perla.mean == pytest.approx(np.mean(FINAL_8))
    assert perla.iqm != pytest.approx(perla.mean)  # the check can tell the two apart
    for r in rows:
        assert r.mean_ci[0] <= r.mean <= r.mean_ci[1] and r.iqm_ci[0] <= r.iqm <= r.iqm_ci[1]
        assert r.mean_ci[0] < r.mean_ci[1]  # seeds differ, so the interval has width
    assert rows[1].mean == pytest.approx(2.0) and rows[2].iqm == pytest.approx(scipy.stats.trim_mean([5, 6, 7, 8, 9], 0.25))
    # Seeded: the same call gives the same intervals.
    again = analysis.final_table([analysis.load_run(runs[0])], reps=500)
    assert again[0] == perla


def test_bootstrap_curve_band_contains_mean_and_handles_nan():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(6, 30))
    values[0, 3] = np.nan
    values[1:, 5] = np.nan  # one finite seed: band collapses to it
    values[:, 7] = np.nan
    mean, lo, hi = analysis.bootstrap_curve(values, reps=400)
    np.testing.assert_allclose(mean[3], np.mean(values[1:, 3]))
    assert mean[5] == values[0, 5] == lo[5] == hi[5]
    assert np.isnan(mean[7]) and np.isnan(lo[7])
    ok = np.isfinite(mean)
    assert np.all(lo[ok] <= mean[ok] + 1e-12) and np.all(mean[ok] <= hi[ok] + 1e-12)
    assert np.all((hi - lo)[ok & (np.arange(30) != 5)] > 0)


def test_cli_prints_table_and_writes_png(runs, tmp_path, capsys):
    out = tmp_path / "figs" / "cmp.png"
    rows = plot_cli.main([*map(str, runs), "--out", str(out), "--reps", "300"])
    text = capsys.readouterr().out
    assert "last 10% of its updates" in text
    for r in rows:
        assert r.label in text and f"{r.mean:.3f}" in text and f"{r.iqm:.3f}" in text
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_duplicate_labels_get_the_folder_name(runs, tmp_path):
    twin = write_run(tmp_path / "c", returns_ending_at(np.array([0.0, 1.0])), Config(algo="mappo"))
    labels = analysis.labels_for([analysis.load_run(p) for p in (runs[1], twin)])
    assert labels == ["mappo (b)", "mappo (c)"]


def test_missing_or_empty_run_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' does not exist"):
        analysis.load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no metrics.csv"):
        analysis.load_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.csv").write_text("")
    with pytest.raises(ValueError, match=r"metrics.csv is empty"):
        analysis.load_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.csv").write_text(",".join(recording.COLUMNS) + "\n")
    with pytest.raises(ValueError, match=r"holds no metrics rows"):
        analysis.load_run(tmp_path / "empty")
    with pytest.raises(SystemExit) as exc:
        plot_cli.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_unknown_metric_is_refused(runs):
    with pytest.raises(ValueError, match=r"metric='reward' is invalid: allowed are return, "):
        analysis.final_table([analysis.load_run(runs[0])], metric="reward")


def test_a_metric_column_added_later_reads_as_nan(tmp_path):
    # A run written before others_share existed still loads; the missing metric is NaN, the others are read.
    columns = [c for c in recording.COLUMNS if c != "others_share"]
    rows = [{c: (s if c == "seed" else u if c == "update" else 0.5) for c in columns} for u in (1, 2) for s in (0, 1)]
    path = tmp_path / "metrics.csv"
    path.write_text(",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows))
    metrics = recording.read_metrics(path)
    assert np.all(np.isnan(metrics["others_share"])) and metrics["others_share"].shape == (2, 2)
    np.testing.assert_array_equal(metrics["return"], 0.5)


def test_metrics_rows_keep_the_updates_every_seed_has_and_the_later_of_two_equal_rows(tmp_path):
    # Seed 1 lacks update 3 (a run stopped mid-chunk); seed 0's update 2 was written twice (the later row counts).
    rows = [(0, 1, 1.0), (1, 1, 2.0), (0, 2, 3.0), (1, 2, 4.0), (0, 2, 5.0), (0, 3, 6.0)]
    ret = recording.COLUMNS.index("return")
    lines = [[str(s), str(u)] + ["0"] * (len(recording.COLUMNS) - 2) for s, u, _ in rows]
    for line, (_, _, value) in zip(lines, rows):
        line[ret] = str(value)
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(",".join(line) for line in [list(recording.COLUMNS), *lines]) + "\n")
    metrics = recording.read_metrics(path)
    assert metrics["update"].tolist() == [[1, 2], [1, 2]] and metrics["seed"].dtype == np.int64
    assert metrics["return"].tolist() == [[1.0, 5.0], [2.0, 4.0]]
    (tmp_path / "other.csv").write_text("step,return\n1,0.5\n")
    with pytest.raises(ValueError, match="has no seed, update"):
        recording.read_metrics(tmp_path / "other.csv")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 33])
def test_interquartile_mean_is_rliables_bit_for_bit(n):
    rng = np.random.default_rng(n)
    for scores in (rng.normal(size=(n, 1)), rng.integers(0, 3, (n, 1)) / 4, rng.normal(size=(n, 2)) * 1e3):
        assert analysis.interquartile_mean(scores) == rly_metrics.aggregate_iqm(scores)


def test_paired_difference_by_hand():
    x, y = np.array([1.0, 2.0, 4.0, np.nan]), np.array([0.0, 1.0, 1.0, 5.0])
    mean, half, pairs = analysis.paired_difference(x, y)  # differences 1, 1, 3 over the 3 common finite seeds
    assert pairs == 3 and mean == pytest.approx(5 / 3)
    assert half == pytest.approx(scipy.stats.t.ppf(0.975, 2) * np.std([1, 1, 3], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="same seeds"):
        analysis.paired_difference(x, y[:3])


def test_probability_of_improvement_matches_counting_pairs():
    # P(X > Y) over all pairs, ties one half: [1, 2, 3] vs [0.5, 2.5] wins 1 + 1 + 2 of 6 pairs
    p, (low, high) = analysis.probability_of_improvement(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.5]))
    assert p == pytest.approx(4 / 6) and 0.0 <= low <= p <= high <= 1.0
    p, ci = analysis.probability_of_improvement(np.arange(8.0) + 10, np.arange(8.0))
    assert p == 1.0 and ci == (1.0, 1.0)  # every resample still has X above Y
    assert analysis.probability_of_improvement(np.arange(8.0), np.arange(8.0))[0] == 0.5  # ties: one half
    assert analysis.probability_of_improvement(np.array([1.0, np.nan, 3.0]), np.array([2.0]))[0] == 0.5


@pytest.mark.parametrize("runs_x,runs_y,tasks", [(8, 8, 1), (3, 5, 1), (8, 8, 3), (6, 4, 2)])
def test_pairwise_improvement_is_rliables_number_bit_for_bit(runs_x, runs_y, tasks):
    rng = np.random.default_rng(runs_x * 100 + runs_y * 10 + tasks)
    for _ in range(50):
        # few distinct values, so ties across and within the two sets are common
        x, y = rng.integers(0, 4, (runs_x, tasks)) / 2, rng.integers(0, 4, (runs_y, tasks)) / 2
        assert analysis.pairwise_improvement(x, y) == rly_metrics.probability_of_improvement(x, y)
        assert analysis.pairwise_improvement(x, x) == rly_metrics.probability_of_improvement(x, x) == 0.5
    x = rng.normal(size=(runs_x, tasks))
    y = rng.normal(size=(runs_y, tasks))
    assert analysis.pairwise_improvement(x, y) == rly_metrics.probability_of_improvement(x, y)


def test_jaxmarl_return_convention_multiplies_by_the_number_of_agents(runs, tmp_path, capsys):
    spread6 = write_run(tmp_path / "six", returns_ending_at(np.array([-2.0, -4.0])),
                        Config(algo="mappo", env_kwargs={"num_agents": 6, "num_landmarks": 6}))
    team = plot_cli.main([str(runs[1]), str(spread6), "--out", str(tmp_path / "t.png"), "--reps", "100"])
    jaxmarl = plot_cli.main([str(runs[1]), str(spread6), "--out", str(tmp_path / "j.png"), "--reps", "100",
                             "--return-convention", "jaxmarl"])
    assert [j.mean for j in jaxmarl] == pytest.approx([3 * team[0].mean, 6 * team[1].mean])  # MPE default: 3 agents
    with pytest.raises(SystemExit):  # a run without config.json: N unknown
        plot_cli.main([str(runs[2]), "--out", str(tmp_path / "x.png"), "--return-convention", "jaxmarl"])
    assert "number of agents" in capsys.readouterr().err
