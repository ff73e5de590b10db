"""Seeds sharded over devices give the same training as on one device (4 forced CPU devices, in a
subprocess because the device count is fixed when JAX starts), and the sharding helpers' checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from perla_jax import sharding

ROOT = Path(__file__).resolve().parents[1]

# Prints a JSON report; the assertions live in the test so a failure shows the numbers.
SCRIPT = r"""
import json, jax, numpy as np
from perla_jax import Config, METRICS, make_trainer
from perla_jax.sharding import seed_sharding, shard_seeds, to_host

# mappo compiles in about half the time of perla_mappo; sharding does not depend on the critic.
cfg = Config(algo="mappo", num_seeds=4, num_envs=2, num_steps=8, total_timesteps=32,
             num_minibatches=2, update_epochs=1, actor_hidden=(8,), critic_hidden=(8,))
trainer = make_trainer(cfg)
keys = jax.random.split(jax.random.PRNGKey(0), cfg.num_seeds)
init = jax.jit(jax.vmap(trainer.init))
run = jax.jit(jax.vmap(lambda s: trainer.run_updates(s, cfg.num_updates)))

plain_state, plain = run(init(keys))
s = seed_sharding(cfg.num_seeds)
sharded_state, sharded = run(init(shard_seeds(keys, s)))
leaf = jax.tree.leaves(sharded_state.actor.params)[0]
report = {
    "devices": len(jax.devices()),
    "num_updates": cfg.num_updates,
    "plain_devices": len(jax.tree.leaves(plain_state.actor.params)[0].sharding.device_set),
    "leaf_devices": len(leaf.sharding.device_set),
    "leaf_spec_is_seed": leaf.sharding.spec == jax.sharding.PartitionSpec("seed"),
    "shard_shapes": sorted({sh.data.shape[0] for sh in leaf.addressable_shards}),
    "metric_devices": len(sharded["return"].sharding.device_set),
    "plain": {k: np.asarray(v).tolist() for k, v in to_host(plain).items()},
    "sharded": {k: np.asarray(v).tolist() for k, v in to_host(sharded).items()},
}
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def report():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("REPORT"))
    return json.loads(line[len("REPORT") :])


def test_state_is_sharded_over_four_devices(report):
    assert report["devices"] == 4
    assert report["plain_devices"] == 1
    assert report["leaf_devices"] == 4 and report["metric_devices"] == 4
    assert report["leaf_spec_is_seed"]
    assert report["shard_shapes"] == [1]  # 4 seeds over 4 devices: one seed each


def test_sharded_metrics_equal_single_device(report):
    import numpy as np

    from perla_jax import METRICS

    for name in METRICS:
        plain, sharded = np.array(report["plain"][name]), np.array(report["sharded"][name])
        assert plain.shape == (4, report["num_updates"]) == (4, 2), name
        # Not bit-exact: a device's batch of 1 seed instead of 4 changes XLA's vectorised summation order
        # (measured: differences up to 1e-7 absolute, in near-zero metrics such as approx_kl).
        np.testing.assert_allclose(sharded, plain, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
    # The seeds differ from each other, so equal metrics are not an accident of identical seeds.
    losses = np.array(report["plain"]["actor_loss"])
    assert len({tuple(row) for row in losses.tolist()}) == 4


def test_one_device_needs_no_sharding():
    assert sharding.seed_sharding(3, devices=jax.devices()[:1]) is None
    tree = {"a": 1}
    assert sharding.shard_seeds(tree, None) is tree


def test_seeds_not_divisible_by_devices_is_refused():
    fake_devices = [jax.devices()[0]] * 4  # only the count matters before the mesh is built
    with pytest.raises(ValueError, match=r"num_seeds=6 is not divisible by the 4 devices.*multiples of 4"):
        sharding.seed_sharding(6, devices=fake_devices)
    with pytest.raises(ValueError, match=r"num_seeds=0"):
        sharding.seed_sharding(0, devices=fake_devices)


@pytest.mark.parametrize(
    "environ, launch",
    [
        ({}, None),
        ({"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "manual"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}, None),
        ({"JAX_COORDINATOR_ADDRESS": "h:1234"}, None),  # incomplete: no process count or id
        (dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n[1-2]", SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_LOCALID="0"), "slurm"),
        (dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n1", SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0"), None),
        ({"SLURM_JOB_ID": "7"}, None),  # an interactive allocation, not an srun step
        ({"OMPI_MCA_orte_hnp_uri": "x;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}, "ompi"),
    ],
)
def test_multi_process_launch_detection(environ, launch):
    assert sharding.multi_process_launch(environ) == launch


def test_initialize_only_on_multi_process_launch(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert sharding.maybe_initialize_distributed({}) is False and calls == []
    # (the collectives variable set, so this process's jax config is left alone)
    env = {"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1",
           "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    assert sharding.maybe_initialize_distributed(env) is True
    assert calls == [dict(coordinator_address="h:1234", num_processes=2, process_id=1)]
