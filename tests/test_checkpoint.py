"""Checkpoints, ``run.py --resume`` (bit-identical to an uninterrupted run), SIGTERM, and ``evaluate.py`` on
the run folder. One uninterrupted reference run and one stopped run are shared; resumes of the same config
reuse run.py's compiled functions, so only the reference run and the SIGTERM subprocess compile training."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from perla_jax import Config, checkpoints, make_trainer, recording

ROOT = Path(__file__).resolve().parents[1]
RUN_SCRIPT = ROOT / "experiments" / "run.py"
NUM_UPDATES = 16  # chunks of 1: enough checkpoints for SIGTERM to land mid-run
# Recurrent, so that resuming must restore the hidden states and episode-start flags bit for bit too; value
# normalisation, so that its running statistics must be restored as well.
TINY = (
    "--algo mappo --network rnn --value-norm --gamma 0.98 --seeds 2 --num-envs 2 --num-steps 8 --total-timesteps 256 --num-minibatches 2 "
    "--update-epochs 1 --actor-hidden 8,8 --critic-hidden 8,8 --chunk-size 1"
).split()
STOP_AT = 6


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_cli = _load("perla_run_cli_ckpt", RUN_SCRIPT)
eval_cli = _load("perla_evaluate_cli", ROOT / "experiments" / "evaluate.py")


def _final_state(run_dir: Path, step: int | None = None):
    cfg = recording.read_config(run_dir)
    trainer = make_trainer(cfg)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    manager = checkpoints.open_manager(run_dir, read_only=True)
    try:
        step = checkpoints.latest_step(manager) if step is None else step
        return checkpoints.restore_state(manager, step, jax.eval_shape(jax.vmap(trainer.init), keys))
    finally:
        manager.close()


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit for bit: the CSV's bytes, and every leaf of the final training state."""
    assert (run_dir / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    got, want = _final_state(run_dir), _final_state(reference)
    assert int(np.asarray(got.update)[0]) == NUM_UPDATES
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_leaves) == len(want_leaves) > 10
    for a, b in zip(got_leaves, want_leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _steps(run_dir: Path) -> list[int]:
    manager = checkpoints.open_manager(run_dir, read_only=True)
    try:
        return checkpoints.steps(manager)
    finally:
        manager.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    run_cli.main([*TINY, "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def stopped(reference, tmp_path_factory) -> Path:
    """The same config stopped after STOP_AT updates (kept read-only: tests resume copies of it)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert run_cli.main([*TINY, "--out", str(out), "--stop-after", str(STOP_AT), "--keep-every", "4"]) == out
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def test_reference_run_keeps_the_last_two_checkpoints(reference):
    assert _steps(reference) == [NUM_UPDATES - 1, NUM_UPDATES]
    manager = checkpoints.open_manager(reference, read_only=True)
    meta = checkpoints.read_meta(manager, NUM_UPDATES)
    manager.close()
    assert meta["updates_done"] == NUM_UPDATES and meta["chunk_size"] == 1
    assert Config.from_dict(meta["config"]) == recording.read_config(reference)


def test_stop_after_then_resume_is_bit_identical(reference, stopped, tmp_path, capsys):
    assert _steps(stopped) == [4, 5, 6]  # the last two plus every 4th
    assert recording.read_metrics(stopped / "metrics.csv")["update"].shape == (2, STOP_AT)
    run_dir = _copy(stopped, tmp_path)
    # Options equal to the stored config are accepted.
    run_cli.main(["--resume", str(run_dir), "--gamma", "0.98", "--seeds", "2", "--keep-every", "4"])
    _assert_same_run(run_dir, reference)
    assert _steps(run_dir) == [4, 8, 12, 15, 16]
    assert recording.read_config(run_dir) == recording.read_config(reference)


def test_resume_drops_rows_written_after_the_checkpoint(reference, stopped, tmp_path, capsys):
    """A run killed after appending a chunk's rows but before its checkpoint, mid-way through a row."""
    run_dir = _copy(stopped, tmp_path)
    with (reference / "metrics.csv").open(newline="") as f:
        later = [r for r in csv.reader(f) if r[1] == str(STOP_AT + 1)]
    assert len(later) == 2
    later[0][5] = "123.0"  # not what the resumed run will compute
    with (run_dir / "metrics.csv").open("a", newline="") as f:
        csv.writer(f).writerows(later)
        f.write("0,8,12")  # cut short
    run_cli.main(["--resume", str(run_dir)])
    assert "dropped 3 metrics rows written after checkpoint 6" in capsys.readouterr().err
    _assert_same_run(run_dir, reference)


def test_resume_refuses_a_csv_missing_rows_the_checkpoint_covers(stopped, tmp_path, capsys):
    run_dir = _copy(stopped, tmp_path)
    lines = (run_dir / "metrics.csv").read_text().splitlines(keepends=True)
    (run_dir / "metrics.csv").write_text("".join(lines[:3] + lines[4:]))
    with pytest.raises(SystemExit) as exc:
        run_cli.main(["--resume", str(run_dir)])
    assert exc.value.code == 2
    assert "does not match checkpoint 6" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, edit_config, expected",
    [
        (["--gamma", "0.97", "--num-envs", "4"], None, ["gamma: 0.98 != 0.97", "num_envs: 2 != 4", "stored != given"]),
        (["--k", "16"], None, ["--k 16", "does nothing with algo='mappo'"]),
        ([], {"gamma": 0.9}, ["checkpoint 6", "gamma: 0.9 != 0.98"]),
        (["--chunk-size", "2"], None, ["chunk_size=2", "allowed is 1"]),
        (["--out", "elsewhere"], None, ["--out='elsewhere' cannot be combined with --resume"]),
    ],
)
def test_resume_refusals_name_the_fields(stopped, tmp_path, capsys, extra, edit_config, expected):
    run_dir = _copy(stopped, tmp_path)
    if edit_config:
        stored = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**stored, **edit_config}))
    before = (run_dir / "metrics.csv").read_bytes()
    with pytest.raises(SystemExit) as exc:
        run_cli.main(["--resume", str(run_dir), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert (run_dir / "metrics.csv").read_bytes() == before and _steps(run_dir) == [4, 5, 6]


def test_resume_of_a_folder_without_config_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli.main(["--resume", str(tmp_path / "nothing")])
    assert "holds no config.json" in capsys.readouterr().err


def test_sigterm_stops_after_a_checkpoint_and_resume_matches(reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # The child's output goes to files, never to pipes nobody reads: a full pipe would block the child (XLA:CPU
    # logs kilobytes per persistent-cache load on some CPUs, enough to fill a 64 KiB pipe before a checkpoint).
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out_path.open("w") as out, err_path.open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, str(RUN_SCRIPT), *TINY, "--out", str(run_dir)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=errors, text=True,
        )
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "1").is_dir():  # orbax renames a checkpoint into place when complete
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    err = err_path.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"--resume {run_dir}" in err and "SIGTERM" in err
    done = _steps(run_dir)[-1]
    assert 1 <= done < NUM_UPDATES, f"the run finished ({done} updates) before SIGTERM arrived"
    assert recording.read_metrics(run_dir / "metrics.csv")["update"].shape == (2, done)
    run_cli.main(["--resume", str(run_dir)])
    _assert_same_run(run_dir, reference)


def _start_child(run_dir: Path, tmp_path: Path, *extra: str):
    """run.py on TINY in a child process whose output goes to files (never to pipes nobody reads)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out, err = (tmp_path / "stdout.txt").open("w"), (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(RUN_SCRIPT), *TINY, *extra], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=out, stderr=err,
    )
    out.close(), err.close()  # the child holds its own descriptors
    return proc


def _half_written(run_dir: Path) -> bool:
    """A checkpoint being written: orbax writes into a temporary folder and renames it when complete."""
    folder = run_dir / "checkpoints"
    try:
        return any("tmp" in name for name in os.listdir(folder))
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("when", ["mid_checkpoint_write", "random_moment"])
def test_sigkill_then_resume_is_bit_identical_with_no_row_lost_or_repeated(reference, tmp_path, when, capsys):
    """SIGKILL (the OOM killer, a pre-empted node) gives no chance to clean up: the resume must still equal an
    uninterrupted run bit for bit, metrics.csv included (so no row is missing or duplicated)."""
    run_dir = tmp_path / "run"
    proc = _start_child(run_dir, tmp_path, "--out", str(run_dir))
    deadline = time.monotonic() + 300
    rng = np.random.default_rng(0)
    delay = rng.uniform(0.0, 0.5)
    killed_at = None
    try:
        while killed_at is None:
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no kill point within 300 s"
            started = (run_dir / "checkpoints" / "2").is_dir()
            if when == "mid_checkpoint_write" and started and _half_written(run_dir):
                killed_at = "while a checkpoint was half-written"
            elif when == "random_moment" and started:
                time.sleep(delay)
                killed_at = f"{delay:.3f} s after checkpoint 2"
            else:
                time.sleep(0.0005)
        proc.kill()
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = _steps(run_dir)[-1]
    assert 2 <= done < NUM_UPDATES, f"killed {killed_at}, but the run had finished"
    run_cli.main(["--resume", str(run_dir)])
    _assert_same_run(run_dir, reference)
    rows = recording.read_metrics(run_dir / "metrics.csv")
    assert rows["update"].shape == (2, NUM_UPDATES) and (rows["update"] == np.arange(1, NUM_UPDATES + 1)).all()


@pytest.fixture(scope="module")
def evaluated(reference):
    return eval_cli.main([str(reference), "--episodes", "3", "--render", "2"])


def test_evaluate_writes_eval_json_with_ci_over_seeds(reference, evaluated):
    assert json.loads((reference / "eval.json").read_text()) == evaluated
    assert evaluated["checkpoint"] == NUM_UPDATES and evaluated["mode"] == "greedy"
    assert evaluated["episodes_per_seed"] == 3 and evaluated["num_seeds"] == 2
    ret = evaluated["metrics"]["team_return"]
    per_seed = np.array(ret["per_seed"])
    assert per_seed.shape == (2,) and np.all(per_seed < 0)  # MPE spread rewards are negative distances
    assert ret["mean"] == pytest.approx(per_seed.mean())
    assert ret["ci95"] == pytest.approx(1.96 * per_seed.std(ddof=1) / np.sqrt(2))
    assert evaluated["metrics"]["length"]["per_seed"] == [26.0, 26.0]


def test_render_writes_a_gif_of_the_episodes(reference, evaluated):
    gif = Image.open(reference / f"episodes-{NUM_UPDATES}-greedy.gif")
    assert gif.n_frames == 2 * 26
    frames = []
    for i in (0, 13, 25, 26):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB")))
    assert len(np.unique(frames[0].reshape(-1, 3), axis=0)) > 3  # entities drawn, not a blank canvas
    assert not np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])
    # Below the step label the entities are drawn: the second episode starts from another reset. (Within an
    # episode a greedy policy might stand still, so that is not asserted.)
    assert not np.array_equal(frames[2][40:], frames[3][40:])


def test_evaluate_refuses_a_missing_checkpoint(reference, capsys):
    with pytest.raises(SystemExit) as exc:
        eval_cli.main([str(reference), "--checkpoint", "3"])
    assert exc.value.code == 2
    assert f"checkpoint=3 does not exist: allowed are [{NUM_UPDATES - 1}, {NUM_UPDATES}]" in capsys.readouterr().err


def test_reconcile_metrics_keeps_exactly_the_checkpointed_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    values = ["1"] * (len(recording.COLUMNS) - 2)
    rows = [[s, u, *values] for u in (1, 2, 3) for s in (0, 1)]
    text = ",".join(recording.COLUMNS) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    path.write_text(text + "0,4,1,1")  # a row cut short
    assert checkpoints.reconcile_metrics(path, 2, num_seeds=2) == 3
    assert recording.read_metrics(path)["update"].tolist() == [[1, 2], [1, 2]]
    assert checkpoints.reconcile_metrics(path, 2, num_seeds=2) == 0  # already consistent: untouched
    with pytest.raises(ValueError, match="does not match checkpoint 3"):
        checkpoints.reconcile_metrics(path, 3, num_seeds=2)
    assert checkpoints.reconcile_metrics(path, 0, num_seeds=2) == 4 and path.read_text() == ""


def test_a_checkpoint_with_the_old_field_names_restores_into_the_renamed_fields(reference, tmp_path):
    """Checkpoints written before RunnerState.actor_hidden / critic_hidden became actor_carry / critic_carry
    (the recurrent reference run has both) restore with every leaf in its place."""
    state = _final_state(reference)
    fields = {checkpoints.RENAMED_STATE_FIELDS.get(f, f): getattr(state, f) for f in state.keys()}
    old = checkpoints._under_old_names(type(state))(**fields)
    meta = json.loads(json.dumps(dict(config=recording.read_config(reference).to_dict(), updates_done=NUM_UPDATES)))
    shutil.copy(reference / recording.CONFIG_FILE, tmp_path / recording.CONFIG_FILE)
    manager = checkpoints.open_manager(tmp_path)
    try:
        checkpoints.save(manager, old, meta)
    finally:
        manager.close()
    restored = _final_state(tmp_path)
    assert restored.actor_carry is not None and restored.critic_carry is not None
    paths = lambda tree: [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths(restored) == paths(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_config_differences_compare_json_values():
    a = Config(num_steps=8, total_timesteps=64, num_envs=2, num_minibatches=1).to_dict()
    assert checkpoints.config_differences(a, json.loads(json.dumps(a))) == []  # tuples vs lists: equal
    b = {**a, "k": 3}
    del b["seed"]
    assert checkpoints.config_differences(a, b) == ["k: 16 != 3", "seed: 0 != '<absent>'"]


@pytest.mark.parametrize("option", ["--keep-checkpoints", "--stop-after", "--keep-every"])
def test_bad_run_options_are_refused_before_writing(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli.main([*TINY, option, "0", "--out", str(tmp_path / "never")])
    assert exc.value.code == 2
    assert f"{option[2:].replace('-', '_')}=0 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def _assert_close_run(run_dir: Path, reference: Path) -> None:
    """Equal to ``reference`` up to the summation order of another device count (see test_sharding)."""
    got, want = (recording.read_metrics(d / "metrics.csv") for d in (run_dir, reference))
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
    got_leaves, want_leaves = _host_leaves(run_dir), _host_leaves(reference)
    assert len(got_leaves) == len(want_leaves) > 10
    for a, b in zip(got_leaves, want_leaves):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _host_leaves(run_dir: Path) -> list[np.ndarray]:
    """The latest checkpoint's state as NumPy arrays, PRNG keys as their key data."""
    as_data = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    return [np.asarray(as_data(x)) for x in jax.tree.leaves(_final_state(run_dir))]


def test_checkpoints_move_between_device_counts_and_hosts(reference, stopped, tmp_path):
    """A run saved by one process on one device is resumed by two processes joined by jax.distributed (a localhost
    coordinator, one CPU device and one seed each), which write one set of files and checkpoints that this single
    process resumes: a checkpoint from a GPU, several devices or several hosts must go on anywhere. The two hosts
    compute bit for bit what one process with two devices computes from the same checkpoint."""
    run_dir = _copy(stopped, tmp_path)
    later = STOP_AT + 4
    _train_as_two_processes(["--resume", str(run_dir), "--stop-after", str(later)], tmp_path)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints", "config.json", "learning_curve.png", "metrics.csv", "timing.csv"]
    rows = recording.read_metrics(run_dir / "metrics.csv")["update"]
    assert rows.shape == (2, later) and (rows == np.arange(1, later + 1)).all()  # once each, by process 0 only
    assert _steps(run_dir)[-1] == later
    # Bit for bit what one process on two local devices computes from the same checkpoint: one seed per device
    # either way, so the hosts change nothing but where the seeds live.
    local = _copy(stopped, tmp_path / "local")
    _train_on_local_devices(["--resume", str(local), "--stop-after", str(later)], 2, tmp_path)
    assert (local / "metrics.csv").read_bytes() == (run_dir / "metrics.csv").read_bytes()
    for a, b in zip(_host_leaves(local), _host_leaves(run_dir), strict=True):
        np.testing.assert_array_equal(a, b)
    run_cli.main(["--resume", str(run_dir)])  # here: one process, one device
    # Equal to float rounding, not bit for bit: one seed per process compiles to another summation order than two
    # seeds on one device (the first row the two processes write already differs in its last digit).
    _assert_close_run(run_dir, reference)
    # timing.csv names what timed each chunk, so a table never mixes 1- and 2-device speeds
    platforms = [row["platform"] for row in recording.read_timing(run_dir)]
    assert platforms == ["cpu"] * STOP_AT + ["2 x cpu"] * (later - STOP_AT) + ["cpu"] * (NUM_UPDATES - later), platforms


def _train_on_local_devices(argv: list[str], devices: int, tmp_path: Path) -> None:
    """run.py ``argv`` in one process that sees ``devices`` CPU devices (the seeds sharded over them)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    with (tmp_path / "local.txt").open("w") as log:
        code = subprocess.run([sys.executable, str(RUN_SCRIPT), *argv], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT, timeout=300).returncode
    assert code == 0, (tmp_path / "local.txt").read_text()[-3000:]


def _train_as_two_processes(argv: list[str], tmp_path: Path) -> None:
    """run.py ``argv`` launched as two processes on this machine (one CPU device each), joined through the
    environment that ``perla_jax.sharding.maybe_initialize_distributed`` reads; their output goes to files."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    procs = []
    try:
        for pid in (0, 1):
            env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                   "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid),
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            env.pop("XLA_FLAGS", None)
            log = (tmp_path / f"process{pid}.txt").open("w")
            procs.append((subprocess.Popen([sys.executable, str(RUN_SCRIPT), *argv], cwd=ROOT, env=env,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT), log))
        for pid, (proc, log) in enumerate(procs):
            code = proc.wait(timeout=300)
            log.close()
            assert code == 0, (pid, (tmp_path / f"process{pid}.txt").read_text()[-3000:])
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
