"""The experiments/run.py CLI end to end (one tiny compiled run) and the recording helpers it uses."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from programs import load_script

from perla_jax import METRICS, Config, command, recording
from perla_jax.cli import option_name
from perla_jax.command import build_train_parser
from perla_jax.experiment import choose_chunk_size, run_experiment
from perla_jax.run_evaluation import evaluate_run

ROOT = Path(__file__).resolve().parents[1]
# mappo compiles in about half the time of perla_mappo; the trainers themselves are tested elsewhere.
TINY = (
    "--algo mappo --seeds 2 --num-envs 2 --num-steps 32 --total-timesteps 128 --num-minibatches 2 "
    "--update-epochs 1 --actor-hidden 8,8 --critic-hidden 8,8 --eval-every 1 --eval-episodes 2"
).split()
TINY_CFG = dict(
    algo="mappo", num_seeds=2, num_envs=2, num_steps=32, total_timesteps=128, num_minibatches=2,
    update_epochs=1, actor_hidden=(8, 8), critic_hidden=(8, 8), eval_every=1, eval_episodes=2,
)


cli = load_script("perla_run_cli", "experiments/run.py")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny training run shared by the end-to-end checks (it is the only compilation here)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    returned = cli.main([*TINY, "--out", str(out), "--log", "tensorboard"])
    return returned, out


def test_run_writes_config_that_round_trips(tiny_run):
    returned, out = tiny_run
    assert returned == out
    assert recording.read_config(out) == Config(**TINY_CFG)


def test_the_console_command_and_the_api_write_what_run_py_writes(tiny_run, tmp_path):
    """``perla-jax train`` (perla_jax.command.main) and ``run_experiment`` give the same run folder as run.py: the same
    config.json and metrics.csv, byte for byte (same config and seeds; the compiled programs are shared)."""
    _, reference = tiny_run
    command_out = tmp_path / "command"
    assert command.main(["train", *TINY, "--out", str(command_out)]) == 0
    api_out = run_experiment(Config(**TINY_CFG), out=tmp_path / "api")
    for out in (command_out, api_out):
        for name in ("config.json", "metrics.csv"):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), (out, name)


def test_console_command_names_its_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        command.main(["trian"])
    assert exc.value.code == 2 and "command 'trian' is unknown: allowed are train, eval, plot" in capsys.readouterr().err


def test_eval_and_plot_commands_read_the_run_folder(tiny_run, tmp_path, capsys):
    """``perla-jax eval`` writes the eval.json that ``evaluate_run`` returns (same episodes, same numbers);
    ``perla-jax plot`` draws the figure and prints the final-return table of the run."""
    _, run_dir = tiny_run
    assert command.main(["eval", str(run_dir), "--episodes", "2", "--stochastic"]) == 0
    written = json.loads((run_dir / "eval.json").read_text())
    assert written == evaluate_run(run_dir, episodes=2, mode="stochastic", say=lambda _: None)
    assert written["mode"] == "stochastic" and written["episodes_per_seed"] == 2
    assert command.main(["plot", str(run_dir), "--out", str(tmp_path / "fig.png"), "--reps", "50"]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 0 and "Final return" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--episodes", "0"], "episodes=0 is invalid: allowed is an integer >= 1"),
    (["--render", "-1"], "render=-1 is invalid: allowed is an integer >= 0"),
    (["--checkpoint", "999"], "checkpoint=999 does not exist: allowed are"),
])
def test_eval_refusals_name_the_value(tiny_run, argv, message, capsys):
    _, run_dir = tiny_run
    with pytest.raises(SystemExit) as exc:
        command.main(["eval", str(run_dir), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_eval_of_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no config.json: allowed is a folder written by a training run"):
        evaluate_run(tmp_path)


def test_the_installed_console_script_runs():
    """pyproject's [project.scripts] entry: ``perla-jax train --help`` lists the Config options."""
    script = shutil.which("perla-jax")
    assert script, "perla-jax is not on PATH: install the package (pip install -e .)"
    result = subprocess.run([script, "train", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage: perla-jax train" in result.stdout and "--k K" in result.stdout


def test_run_py_is_a_thin_wrapper():
    assert len((ROOT / "experiments" / "run.py").read_text().splitlines()) <= 80


def test_run_writes_one_metrics_row_per_seed_and_update(tiny_run):
    _, out = tiny_run
    cfg = Config(**TINY_CFG)
    with (out / "metrics.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == ("seed", "update", *METRICS, "diverged")
        rows = list(reader)
    assert len(rows) == cfg.num_seeds * cfg.num_updates == 4
    assert sorted((int(r["seed"]), int(r["update"])) for r in rows) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for r in rows:
        assert int(r["env_steps"]) == int(r["update"]) * cfg.batch_size
        for name in ("actor_loss", "critic_loss", "entropy", "approx_kl", "clip_frac", "critic_sample_var"):
            assert math.isfinite(float(r[name])), (name, r)
        # 32-step rollouts are longer than an MPE episode, so every update ends one.
        assert math.isfinite(float(r["return"]))


def test_run_logs_each_seed_to_its_own_tensorboard_series(tiny_run):
    """--log tensorboard: one event folder per seed whose return values are that seed's CSV column."""
    from test_loggers import read_scalars

    _, out = tiny_run
    metrics = recording.read_metrics(out / "metrics.csv")
    for seed in (0, 1):
        scalars = read_scalars(out / "tb" / f"seed_{seed}")
        steps, values = zip(*scalars["return"])
        assert list(steps) == [Config(**TINY_CFG).batch_size * u for u in (1, 2)]
        np.testing.assert_allclose(values, metrics["return"][seed], rtol=1e-6)


def test_periodic_evaluation_matches_evaluating_the_checkpoint(tiny_run):
    """eval.csv holds one row per seed after every update; the last rows equal a greedy evaluation of the
    final checkpoint with the same key."""
    from perla_jax import checkpoints, make_trainer
    from perla_jax.evaluation import make_evaluator

    _, out = tiny_run
    cfg = Config(**TINY_CFG)
    with (out / "eval.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["update"]), int(r["seed"])) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [int(r["env_steps"]) for r in rows] == [cfg.batch_size] * 2 + [2 * cfg.batch_size] * 2
    trainer = make_trainer(cfg)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    manager = checkpoints.open_manager(out, read_only=True)
    try:
        state = checkpoints.restore_state(manager, 2, jax.eval_shape(jax.vmap(trainer.init), keys))
    finally:
        manager.close()
    evaluate = make_evaluator(trainer.env, trainer.agents, cfg.eval_episodes, "greedy")
    episodes = evaluate(state.actor.params, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 2))
    expected = np.asarray(episodes.team_return, np.float64).mean(axis=1)
    np.testing.assert_array_equal([float(r["team_return"]) for r in rows[2:]], expected)
    np.testing.assert_array_equal([float(r["length"]) for r in rows], 26.0)
    assert all(np.isnan(float(r["win_rate"])) for r in rows)  # MPE has no wins


def test_run_draws_a_png_learning_curve(tiny_run):
    _, out = tiny_run
    data = (out / "learning_curve.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 200
    assert len(data) > 5_000  # axes, labels and a curve, not a blank canvas


def test_run_refuses_an_out_folder_that_already_has_metrics(tiny_run, capsys):
    _, out = tiny_run
    with pytest.raises(SystemExit) as exc:
        cli.main([*TINY, "--out", str(out)])
    assert exc.value.code == 2
    assert "already holds metrics.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, field",
    [
        (["--k", "0"], "k=0"),
        (["--env", "nope"], "env='nope'"),
        (["--num-minibatches", "3"], "num_minibatches=3"),
        (["--total-timesteps", "1e1"], "total_timesteps=10"),
        (["--actor-hidden", "8,x"], "--actor-hidden"),
        (["--env-kwargs", "[1]"], "--env-kwargs"),
        (["--chunk-size", "3"], "chunk_size=3"),
        (["--log", "tensorbored"], "tensorbored"),
    ],
)
def test_bad_values_exit_2_naming_the_field_before_writing(args, field, tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        cli.main([*TINY, *args, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and field in err, err
    assert not out.exists()


def test_option_parsing():
    args = build_train_parser(prog="run.py").parse_args(["--total-timesteps", "2e6", "--no-anneal-lr", "--env-kwargs", '{"a": 1}'])
    assert args.total_timesteps == 2_000_000 and isinstance(args.total_timesteps, int)
    assert args.anneal_lr is False and args.env_kwargs == {"a": 1}
    defaults = build_train_parser(prog="run.py").parse_args([])
    assert defaults.actor_hidden == (64, 64) and defaults.env_kwargs == {} and defaults.num_seeds == 1


def test_help_lists_every_config_field(monkeypatch, capsys):
    # In this process (run.py as a script runs in test_checkpoint's subprocesses; the installed command above)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for field in dataclasses.fields(Config):
        assert option_name(field.name) in out, field.name
    assert "--seeds" in out and "(default: 64,64)" in out
    assert "--out" in out and "--chunk-size" in out


@pytest.mark.parametrize(
    "num_updates, expected", [(1, 1), (2, 1), (49, 1), (100, 2), (97, 1), (120, 2), (150, 3), (1000, 20), (1536, 24)]
)
def test_chunk_size_divides_and_gives_about_fifty_calls(num_updates, expected):
    chunk = choose_chunk_size(num_updates)
    assert chunk == expected
    assert num_updates % chunk == 0 and chunk <= max(1, num_updates // 50)


@pytest.mark.parametrize("num_updates, every, expected", [(100, 1, 2), (100, 4, 4), (120, 4, 4), (1000, 8, 8),
                                                           (100, 3, 100), (7, 2, 7)])
def test_chunk_size_is_a_multiple_of_pg_spread_every(num_updates, every, expected):
    """So the spread falls on the same updates of every chunk; a run that P does not divide is one chunk."""
    assert choose_chunk_size(num_updates, multiple_of=every) == expected


def test_a_chunk_size_off_the_spread_schedule_is_refused(tmp_path):
    cfg = Config(num_envs=2, num_steps=8, total_timesteps=16 * 8, pg_spread_every=4)
    with pytest.raises(ValueError, match="chunk_size=2 is invalid with pg_spread_every=4: allowed are divisors of "
                                         "num_updates=8 that are multiples of 4, and num_updates itself"):
        run_experiment(cfg, out=tmp_path / "run", chunk_size=2)
    assert not (tmp_path / "run").exists()


def test_append_metrics_across_two_chunks_is_exact(tmp_path):
    path = tmp_path / "metrics.csv"
    rng = np.random.default_rng(0)

    def chunk(first: int, n: int) -> dict[str, np.ndarray]:
        m = {name: rng.normal(size=(2, n)).astype(np.float32) for name in METRICS}
        m["env_steps"] = np.array([[(first + u) * 64 for u in range(n)]] * 2, dtype=np.int32)
        m["return"][1, 0] = np.nan  # no episode ended for seed 1 in this update
        return m

    first, second = chunk(1, 2), chunk(3, 3)
    assert recording.append_metrics(path, first, first_update=1) == 4
    assert recording.append_metrics(path, second, first_update=3) == 6

    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    assert tuple(lines[0]) == recording.COLUMNS and len(lines) == 1 + 10
    assert [(int(r[0]), int(r[1])) for r in lines[1:5]] == [(0, 1), (1, 1), (0, 2), (1, 2)]

    back = recording.read_metrics(path)
    assert back["update"].tolist() == [[1, 2, 3, 4, 5]] * 2
    for name in METRICS:
        expected = np.concatenate([first[name], second[name]], axis=1).astype(np.float64)
        np.testing.assert_array_equal(back[name], expected)  # exact: floats are written with repr

    with pytest.raises(ValueError, match="columns"):
        bad = tmp_path / "other.csv"
        bad.write_text("a,b\n")
        recording.append_metrics(bad, first, first_update=1)


def test_mean_ci_ignores_nan():
    values = np.array([[1.0, np.nan], [3.0, 2.0], [np.nan, np.nan]]).T  # [S=2, U=3]
    mean, half, n = recording.mean_ci(values, axis=0)
    np.testing.assert_allclose(mean[:2], [1.0, 2.5])
    assert math.isnan(mean[2]) and n.tolist() == [1, 2, 0]
    assert math.isnan(half[0]) and half[1] == pytest.approx(1.96 * np.std([3.0, 2.0], ddof=1) / np.sqrt(2))
    np.testing.assert_array_equal(recording.last_finite(values), [3.0, 2.0])


def test_default_run_dir_name():
    import datetime

    cfg = Config(**TINY_CFG)
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert recording.default_run_dir(cfg, now=now) == Path("runs") / "mpe-mappo-20260102-030405"  # no K: it has none
    perla = cfg.replace(algo="perla_ippo", k=2)
    assert recording.default_run_dir(perla, now=now) == Path("runs") / "mpe-perla_ippo-k2-20260102-030405"


@pytest.mark.parametrize("option, value", [("--k", "16"), ("--advantage", "perla_cv"), ("--critic-rank", "16"),
                                           ("--critic-target", "joint")])
def test_an_option_the_algorithm_never_reads_is_refused_even_at_its_default(option, value, capsys):
    """``--algo mappo --k 16`` would train MAPPO and say nothing: refused before anything compiles."""
    with pytest.raises(SystemExit):
        cli.main(["--algo", "mappo", option, value, "--out", "unused"])
    err = capsys.readouterr().err
    assert f"{option} " in err and value in err and "does nothing with algo='mappo'" in err and "perla_mappo" in err
