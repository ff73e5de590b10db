"""The marl-eval export against the raw-data schema documented in marl-eval's README ("Data Structure for Raw
Experiment data", instadeepai/marl-eval @068d960): id-marl-eval 0.0.4 pins pandas==1.4.4, which our pins exclude,
so the schema is checked here rather than by importing it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_analysis import plot_cli, returns_ending_at, write_run

from perla_jax import Config, analysis
from perla_jax.outputs import marl_eval


def check_marl_eval_schema(document: dict) -> None:
    """marl-eval's documented rules: environment -> task -> algorithm -> run -> step_<i> {step_count: int, metric:
    [numbers]} plus absolute_metrics {metric: [numbers]}; within a task every algorithm has the same runs, every run
    the same steps and metrics."""
    for tasks in document.values():
        for algorithms in tasks.values():
            layouts = set()
            for runs in algorithms.values():
                for run in runs.values():
                    steps = [k for k in run if k != "absolute_metrics"]
                    assert all(k.startswith("step_") for k in steps) and "absolute_metrics" in run
                    for k in steps:
                        assert isinstance(run[k]["step_count"], int)
                        assert all(isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
                                   for m, v in run[k].items() if m != "step_count")
                    assert all(isinstance(v, list) for v in run["absolute_metrics"].values())
                    metrics = tuple(sorted(m for m in run[steps[0]] if m != "step_count"))
                    layouts.add((tuple(sorted(runs)), tuple(steps), metrics))
            assert len(layouts) == 1, layouts


def test_export_follows_the_schema_and_carries_the_numbers(tmp_path):
    final = np.array([1.0, 2.0, 3.0])
    runs = [analysis.load_run(write_run(tmp_path / name, returns_ending_at(final + shift), Config(algo=algo, k=16)))
            for name, algo, shift in (("a", "perla_mappo", 0.0), ("b", "mappo", 10.0))]
    document = marl_eval.export_folders(runs, ["perla", "mappo"], every=5)
    check_marl_eval_schema(document)
    task = document["mpe"]["MPE_simple_spread_v3"]
    assert sorted(task) == ["mappo", "perla"] and sorted(task["perla"]) == ["seed_0", "seed_1", "seed_2"]
    seed1 = task["mappo"]["seed_1"]
    assert [seed1[f"step_{i}"]["step_count"] for i in range(4)] == [320, 640, 960, 1280]  # updates 5, 10, 15, 20
    assert seed1["step_3"]["episode_return"] == [12.0]  # the last update of seed 1: its final value 2 + 10
    # write_run logs 0 for every other metric, so win_rate is finite here and exported (NaN columns are left out).
    assert seed1["absolute_metrics"] == {"episode_return": [12.0], "win_rate": [0.0]}
    json.dumps(document, allow_nan=False)  # strict JSON


def test_runs_with_different_seeds_are_refused(tmp_path):
    a = analysis.load_run(write_run(tmp_path / "a", returns_ending_at(np.ones(3)), Config(algo="mappo")))
    b = analysis.load_run(write_run(tmp_path / "b", returns_ending_at(np.ones(2)), Config(algo="ippo")))
    with pytest.raises(ValueError, match="same seeds and updates"):
        marl_eval.export_folders([a, b], ["a", "b"])
    with pytest.raises(ValueError, match="every=0 is invalid"):
        marl_eval.export_folders([a], ["a"], every=0)


def test_plot_cli_writes_the_export(tmp_path):
    folder = write_run(tmp_path / "a", returns_ending_at(np.array([1.0, 2.0])), Config(algo="mappo"))
    out = tmp_path / "raw.json"
    plot_cli.main([str(folder), "--out", str(tmp_path / "fig.png"), "--marl-eval", str(out), "--reps", "10"])
    check_marl_eval_schema(json.loads(out.read_text()))
