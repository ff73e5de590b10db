"""Optional loggers: TensorBoard event files per seed read back value by value; wandb through a fake module."""

from __future__ import annotations

import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from perla_jax import METRICS, Config
from perla_jax.outputs.loggers import LOGGERS, make_loggers, parse_kinds

CFG = Config(num_seeds=2, num_envs=2, num_steps=32, total_timesteps=192)


def chunk(first: int, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = {name: rng.normal(size=(2, n)).astype(np.float32) for name in METRICS}
    m["env_steps"] = np.array([[(first + u) * CFG.batch_size for u in range(n)]] * 2, dtype=np.int32)
    m["return"][1, 0] = np.nan  # no episode ended: must be skipped, not logged as NaN
    return m


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the event files in ``folder``, parsed from the TFRecord framing (length, crc, data,
    crc) with tensorboardX's own Event protobuf, so the test needs no TensorFlow or tensorboard."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_parse_kinds():
    assert parse_kinds(None) == () and parse_kinds("") == () and parse_kinds("none") == ()
    assert parse_kinds("tensorboard, WandB,tensorboard") == ("tensorboard", "wandb")
    assert parse_kinds(["wandb"]) == ("wandb",)
    with pytest.raises(ValueError, match=r"'tensorbord' is unknown: allowed are tensorboard, wandb"):
        parse_kinds("tensorbord")
    assert LOGGERS == ("tensorboard", "wandb")


def test_no_loggers_imports_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any import of it would raise
    logger = make_loggers("", tmp_path, CFG)
    logger.log_chunk(chunk(1, 2), 1)
    logger.close()
    assert not (tmp_path / "tb").exists()


def test_tensorboard_writes_one_series_per_seed_with_exact_values(tmp_path):
    first, second = chunk(1, 2, seed=0), chunk(3, 1, seed=1)
    logger = make_loggers("tensorboard", tmp_path, CFG)
    logger.log_chunk(first, first_update=1)
    logger.log_chunk(second, first_update=3)
    logger.close()
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["seed_0", "seed_1"]
    for s in range(2):
        scalars = read_scalars(tmp_path / "tb" / f"seed_{s}")
        assert set(scalars) == {"update", *METRICS} - {"env_steps"}
        steps = [(u + 1) * CFG.batch_size for u in range(3)]
        assert scalars["update"] == [(step, float(u + 1)) for u, step in enumerate(steps)]
        for name in set(METRICS) - {"env_steps"}:
            expected = np.concatenate([first[name][s], second[name][s]])
            pairs = [(st, float(v)) for st, v in zip(steps, expected) if np.isfinite(v)]
            assert scalars[name] == pairs, (s, name)  # float32 in, float32 out: exact
    assert len(read_scalars(tmp_path / "tb" / "seed_1")["return"]) == 1  # both chunks' NaNs were skipped


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs, self.logged, self.defined, self.finished = kwargs, [], [], False

    def define_metric(self, name, **kwargs):
        self.defined.append((name, kwargs))

    def log(self, data, **kwargs):
        assert not self.finished
        self.logged.append((dict(data), kwargs))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        run = FakeRun(**kwargs)
        module.runs.append(run)
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_logs_one_run_per_seed_in_a_group(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    run_dir = tmp_path / "mpe-perla_mappo-k16-x"
    run_dir.mkdir()
    data = chunk(4, 2)
    logger = make_loggers("wandb", run_dir, CFG)
    logger.log_chunk(data, first_update=4)
    logger.close()
    runs = fake_wandb.runs
    assert len(runs) == 2
    for s, run in enumerate(runs):
        assert run.kwargs["group"] == "mpe-perla_mappo-k16-x" and run.kwargs["project"] == "perla_jax"
        assert run.kwargs["name"] == f"mpe-perla_mappo-k16-x/seed_{s}"
        assert run.kwargs["config"]["seed_index"] == s and run.kwargs["config"]["k"] == CFG.k
        assert run.kwargs["reinit"] == "create_new"
        assert ("*", {"step_metric": "env_steps"}) in run.defined
        assert run.finished
        assert [d["env_steps"] for d, _ in run.logged] == [4 * CFG.batch_size, 5 * CFG.batch_size]
        assert [d["update"] for d, _ in run.logged] == [4.0, 5.0]
        for u, (d, _) in enumerate(run.logged):
            for name in set(METRICS) - {"env_steps"}:
                v = float(data[name][s, u])
                assert (d[name] == v) if np.isfinite(v) else (name not in d), (s, u, name)


def test_wandb_project_from_argument(tmp_path, fake_wandb):
    make_loggers("wandb", tmp_path, CFG, wandb_project="mine").close()
    assert {r.kwargs["project"] for r in fake_wandb.runs} == {"mine"}


def test_wrong_chunk_shape_is_refused(tmp_path):
    logger = make_loggers("tensorboard", tmp_path, CFG)
    bad = {name: np.zeros((3, 1)) for name in METRICS}
    with pytest.raises(ValueError, match=r"shape \(3, 1\).*num_seeds=2"):
        logger.log_chunk(bad, 1)
    logger.close()
