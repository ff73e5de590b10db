"""Runs that fail loudly and never lose work: the divergence guard (stop, freeze), plain progress lines when
the output is not a terminal, and multi-host runs where only process 0 writes run outputs."""

from __future__ import annotations

import io
import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from programs import load_script

from perla_jax import checkpoints, experiment, recording
from perla_jax.outputs import divergence
from perla_jax.outputs.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
NUM_UPDATES, POISON_SEED, POISON_AT = 4, 1, 2
TINY = (
    "--algo mappo --seeds 2 --num-envs 2 --num-steps 8 --total-timesteps 64 --num-minibatches 2 "
    "--update-epochs 1 --actor-hidden 8 --critic-hidden 8 --chunk-size 1"
).split()


run_cli = load_script("perla_run_cli_reliability", "experiments/run.py")


def _metrics(n=3, seeds=3, bad=()):
    m = {name: np.ones((seeds, n)) for name in divergence.WATCHED_METRICS}
    m["return"] = np.full((seeds, n), np.nan)  # no episode ended: not a divergence
    for seed, u, name, value in bad:
        m[name][seed, u] = value
    return m


def test_find_divergences_names_seed_update_and_quantity():
    finite = {"actor_params": np.array([True, True, False]), "critic_params": np.array([True, True, True])}
    metrics = _metrics(bad=[(1, 2, "critic_loss", np.inf), (1, 1, "entropy", np.nan), (2, 2, "approx_kl", np.nan)])
    found = divergence.find_divergences(metrics, finite, first_update=11)
    assert found == [
        divergence.Divergence(seed=1, update=12, quantities=("entropy",)),
        divergence.Divergence(seed=2, update=13, quantities=("approx_kl", "actor_params")),
    ]
    assert found[0].describe() == "seed 1 diverged at update 12: non-finite entropy"
    assert divergence.find_divergences(metrics, finite, 11, ignore={1, 2}) == []
    healthy = {"actor_params": np.ones(3, bool), "critic_params": np.ones(3, bool)}
    assert divergence.find_divergences(_metrics(), healthy, 1) == []  # NaN returns alone are not a divergence


def test_frozen_rows_are_marked_and_state_restored():
    # Seed 1 diverged at update 12 of the chunk 11-13 and goes back to its state after update 10: its update 11
    # was not kept either. Seed 0 froze in an earlier chunk; seed 2 diverges only in a later one.
    mask = divergence.diverged_mask({0: 5, 1: 12, 2: 14}, num_seeds=4, first_update=11, n=3)
    np.testing.assert_array_equal(mask, [[True] * 3, [True] * 3, [False] * 3, [False] * 3])
    mask = divergence.diverged_mask({1: 12}, num_seeds=2, first_update=11, n=3)
    metrics = {"env_steps": np.array([[10, 20, 30], [10, 10, 10]]), "actor_loss": np.ones((2, 3))}
    marked = divergence.mark_frozen(metrics, mask, first_update=11, batch_size=10)
    np.testing.assert_array_equal(marked["env_steps"], [[10, 20, 30], [110, 120, 130]])
    np.testing.assert_array_equal(np.isnan(marked["actor_loss"]), mask)
    np.testing.assert_array_equal(marked["diverged"], mask)
    new, old = {"w": jnp.zeros((3, 2))}, {"w": jnp.ones((3, 2))}
    np.testing.assert_array_equal(divergence.freeze(new, old, [2])["w"], [[0, 0], [0, 0], [1, 1]])


def _poisoned_programs(original):
    """The driver's programs (perla_jax.experiment), with the chunk function setting seed POISON_SEED's actor parameters to NaN once it
    has done POISON_AT updates: a forced divergence of one seed."""

    def programs(cfg_json, chunk):
        init, run_chunk, finite = original(cfg_json, chunk)

        def poisoned(state):
            state, metrics = run_chunk(state)
            hit = (jnp.arange(state.update.shape[0]) == POISON_SEED) & (state.update >= POISON_AT)
            nan_where_hit = lambda x: jnp.where(hit.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.nan, x)
            params = jax.tree.map(nan_where_hit, state.actor.params)
            return state.replace(actor=state.actor.replace(params=params)), metrics

        return init, jax.jit(poisoned), finite

    return programs


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    run_cli.main([*TINY, "--out", str(out)])
    return recording.read_metrics(out / recording.METRICS_FILE)


def _actor_params(run_dir: Path, step: int):
    cfg = recording.read_config(run_dir)
    init = experiment._programs(json.dumps(cfg.to_dict(), sort_keys=True), 1)[0]
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    manager = checkpoints.open_manager(run_dir, read_only=True)
    try:
        return checkpoints.restore_state(manager, step, jax.eval_shape(init, keys)).actor.params
    finally:
        manager.close()


def test_divergence_stops_the_run_and_keeps_the_finite_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiment, "_programs", _poisoned_programs(experiment._programs))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        run_cli.main([*TINY, "--out", str(out)])
    assert stopped.value.code == divergence.EXIT_CODE
    err = capsys.readouterr().err
    assert f"seed {POISON_SEED} diverged at update {POISON_AT}: non-finite actor_params" in err
    assert "kept checkpoint 1 (finite)" in err and "--on-divergence freeze" in err
    manager = checkpoints.open_manager(out, read_only=True)
    assert checkpoints.steps(manager) == [1]  # the diverged chunk's checkpoint was not written
    manager.close()
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(_actor_params(out, 1)))
    rows = recording.read_metrics(out / recording.METRICS_FILE)
    np.testing.assert_array_equal(rows["diverged"], [[0, 0], [0, 1]])


def test_divergence_freeze_goes_on_with_the_other_seeds(clean_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiment, "_programs", _poisoned_programs(experiment._programs))
    out = tmp_path / "run"
    run_cli.main([*TINY, "--out", str(out), "--on-divergence", "freeze", "--keep-checkpoints", "8"])
    assert f"seed {POISON_SEED} diverged at update {POISON_AT}" in capsys.readouterr().err
    rows = recording.read_metrics(out / recording.METRICS_FILE)
    frozen = np.arange(1, NUM_UPDATES + 1) >= POISON_AT
    np.testing.assert_array_equal(rows["diverged"][POISON_SEED], frozen)
    assert np.isnan(rows["actor_loss"][POISON_SEED, frozen]).all()
    np.testing.assert_array_equal(rows["env_steps"], clean_run["env_steps"])
    # The healthy seed trains as if nothing happened; the frozen one keeps its last finite parameters.
    for name in divergence.WATCHED_METRICS:
        np.testing.assert_allclose(rows[name][0], clean_run[name][0], rtol=1e-5, atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(rows[name][POISON_SEED, ~frozen], clean_run[name][POISON_SEED, ~frozen])
    last, before = _actor_params(out, NUM_UPDATES), _actor_params(out, POISON_AT - 1)
    for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(before)):
        np.testing.assert_array_equal(np.asarray(a)[POISON_SEED], np.asarray(b)[POISON_SEED])
    manager = checkpoints.open_manager(out, read_only=True)
    meta = checkpoints.read_meta(manager, NUM_UPDATES)
    manager.close()
    assert meta["diverged_seeds"] == {str(POISON_SEED): POISON_AT}
    assert all(np.isfinite(np.asarray(x)[POISON_SEED]).all() for x in jax.tree.leaves(last))


def test_freeze_mid_run_marks_the_whole_chunk_and_reports_once(clean_run, tmp_path, monkeypatch, capsys):
    """Chunks of 2 updates: seed POISON_SEED's parameters turn NaN at the end of the first chunk (update 2), so it
    goes back to its initial state, and its update 1 (trained, then discarded) must not be written as trained.
    Frozen, it re-diverges in every later chunk; it is reported once."""
    monkeypatch.setattr(experiment, "_programs", _poisoned_programs(experiment._programs))
    out = tmp_path / "run"
    run_cli.main([*TINY, "--chunk-size", "2", "--out", str(out), "--on-divergence", "freeze"])
    err = capsys.readouterr().err
    assert err.count(f"seed {POISON_SEED} diverged") == 1, err
    assert f"seed {POISON_SEED} frozen at its state after update 0" in err
    rows = recording.read_metrics(out / recording.METRICS_FILE)
    np.testing.assert_array_equal(rows["diverged"], [[0] * NUM_UPDATES, [1] * NUM_UPDATES])
    for name in divergence.WATCHED_METRICS:
        assert np.isnan(rows[name][POISON_SEED]).all(), name
        np.testing.assert_allclose(rows[name][0], clean_run[name][0], rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_array_equal(rows["env_steps"], clean_run["env_steps"])
    cfg = recording.read_config(out)
    init = experiment._programs(json.dumps(cfg.to_dict(), sort_keys=True), 2)[0]
    initial = init(jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)).actor.params
    for a, b in zip(jax.tree.leaves(_actor_params(out, NUM_UPDATES)), jax.tree.leaves(initial)):
        np.testing.assert_array_equal(np.asarray(a)[POISON_SEED], np.asarray(b)[POISON_SEED])


def test_plain_progress_lines_when_not_on_a_terminal():
    stream, now = io.StringIO(), [0.0]
    progress = Progress(total=1000, stream=stream, interval=30.0, clock=lambda: now[0])
    for t in range(10):  # ten updates, 10 s apart: a line at 30 s, 60 s, 90 s, and one at the end
        now[0] = 10.0 * (t + 1)
        progress.update(100, {"steps/s": "10", "return": "-1.5"})
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 4
    assert lines[0] == "env steps 300/1,000 (30%), steps/s 10, return -1.5"
    assert lines[-1].startswith("env steps 1,000/1,000 (100%)")


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(total=1000, stream=stream)
    progress.update(500, {"return": "-1.5"})
    progress.close()
    assert progress.on_terminal and "\r" in stream.getvalue() and "return=-1.5" in stream.getvalue()


def test_only_process_zero_writes_run_outputs(tmp_path, monkeypatch, capsys):
    """A fake second process of a multi-host run: it trains and takes part in checkpointing, but writes no
    config, metrics, evaluations, plots or messages. Only the driver (perla_jax.experiment) sees process index 1:
    faking it for orbax too would make it wait for a primary process that does not exist."""

    class SecondProcess(types.ModuleType):
        def __getattr__(self, name):
            return getattr(jax, name)

        @staticmethod
        def process_index(*args, **kwargs):
            return 1

    monkeypatch.setattr(experiment, "jax", SecondProcess("jax"))
    out = tmp_path / "run"
    run_cli.main([*TINY, "--out", str(out), "--eval-every", "2", "--eval-episodes", "1"])
    captured = capsys.readouterr()
    written = sorted(p.name for p in out.iterdir())
    assert written == ["checkpoints"], written
    assert captured.out == "" and "env steps" not in captured.err
