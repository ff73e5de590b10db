"""experiments/profile_step.py: the ablation arithmetic, and one tiny interleaved profile end to end."""

from __future__ import annotations

import importlib

import pytest

TINY = dict(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=2, actor_hidden=(8,), critic_hidden=(8,))
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.fixture(scope="module")
def profile_step():
    return importlib.import_module("experiments.profile_step")


def test_split_time_separates_epochs_and_samples(profile_step):
    parts = profile_step.split_time({"full": 100.0, "one epoch": 40.0, "k1": 70.0}, epochs=4)
    assert parts == dict(full=100.0, outside=20.0, per_epoch=20.0, epochs=4, k_samples=30.0)
    assert profile_step.split_time({"full": 50.0, "one epoch": 50.0}, epochs=1)["k_samples"] is None


def test_tiny_profile_table(profile_step):
    # PERLA only (its three ablations; a V-critic row has two of the same kind): the suite's time budget
    rows = profile_step.profile([("perla_mappo", 2)], seeds=1, base=TINY, rounds=2, options=FAST_COMPILE)
    assert [(r["algo"], r["k"]) for r in rows] == [("perla_mappo", 2)]
    r = rows[0]
    assert r["k_samples"] is not None and r["rollout"] > 0 and r["estimates"] is not None and r["spread"] is not None
    assert r["full"] > 0 and r["outside"] + r["epochs"] * r["per_epoch"] == pytest.approx(r["full"])
    table = profile_step.format_table(rows).splitlines()
    assert table[0].startswith("| algo | K | seeds |") and len(table) == 3
    assert table[2].endswith("| 1.00x |") and table[2].split("|")[2].strip() == "2"  # its own reference
