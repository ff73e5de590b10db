"""Seeds sharded across devices: the leading seed axis ``[S, ...]`` of the vmapped training state is
split over a 1-D device mesh, and ``jax.jit`` propagates that placement through ``vmap(run_updates)``.

Seeds never communicate, so sharding them is exact data parallelism: each device runs ``S / D`` seeds of
the same compiled program. Typical use (what experiments/run.py does with several devices)::

    sharding = seed_sharding(cfg.num_seeds)            # None on one device
    keys = shard_seeds(jax.random.split(key, cfg.num_seeds), sharding)
    state = jax.jit(jax.vmap(trainer.init))(keys)      # state comes out sharded like keys
    state, metrics = run_chunk(state)                  # metrics [S, chunk], sharded the same way
    metrics = to_host(metrics)

Multi-host (several processes, each with its own devices) needs ``maybe_initialize_distributed()``
before anything else touches JAX; ``jax.devices()`` then lists every process's devices.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seed"
# Environment that marks a multi-process launch, following jax.distributed.initialize's cluster
# detection (jax/_src/clusters): SLURM (srun) and Open MPI (mpirun) set these for every process.
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
OMPI_VARS = ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE")
# A manual launch sets all three (our convention; JAX itself reads only the address from the environment).
MANUAL_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def seed_sharding(num_seeds: int, devices: Sequence[jax.Device] | None = None) -> NamedSharding | None:
    """A sharding of the leading seed axis over ``devices`` (default: all of ``jax.devices()``), or
    ``None`` when there is only one device (nothing to shard; callers then skip placement).

    Raises ValueError when ``num_seeds`` is not a multiple of the device count: uneven shards would
    need padding seeds whose metrics someone could mistake for real ones.
    """
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds={num_seeds!r} is invalid: allowed is a positive integer")
    if num_seeds % len(devices):
        raise ValueError(
            f"num_seeds={num_seeds} is not divisible by the {len(devices)} devices JAX sees: allowed are "
            f"multiples of {len(devices)} (or restrict the devices, e.g. CUDA_VISIBLE_DEVICES)"
        )
    mesh = Mesh(np.array(devices), (SEED_AXIS,))
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree, sharding: NamedSharding | None):
    """``tree`` (every leaf ``[S, ...]``) placed with its seed axis split by ``sharding``; unchanged
    when ``sharding`` is None."""
    if sharding is None:
        return tree
    return jax.device_put(tree, sharding)


def to_host(tree):
    """Every leaf as a NumPy array on this host, gathering the shards other processes hold when running
    multi-host (where ``np.asarray`` of a globally sharded array would fail)."""
    if jax.process_count() > 1:
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, tree)


def multi_process_launch(environ: dict[str, str] | None = None) -> str | None:
    """``"manual"``, ``"slurm"`` or ``"ompi"`` when ``environ`` (default ``os.environ``) describes a
    launch of more than one process, else None. A single-task SLURM job or ``mpirun -n 1`` is None:
    initialising the distributed runtime for one process only adds a coordinator to wait on."""
    env = os.environ if environ is None else environ
    if all(v in env for v in MANUAL_VARS):
        return "manual" if int(env["JAX_NUM_PROCESSES"]) > 1 else None
    if all(v in env for v in SLURM_VARS):
        return "slurm" if int(env["SLURM_NTASKS"]) > 1 else None
    if all(v in env for v in OMPI_VARS):
        return "ompi" if int(env["OMPI_COMM_WORLD_SIZE"]) > 1 else None
    return None


def maybe_initialize_distributed(environ: dict[str, str] | None = None) -> bool:
    """Calls ``jax.distributed.initialize()`` when the environment describes a multi-process launch
    (see ``multi_process_launch``) and returns whether it did. Must run before any other JAX call.

    - manual: ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``;
    - SLURM (``srun``): ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID``,
      ``SLURM_LOCALID``; JAX derives the coordinator from them;
    - Open MPI (``mpirun``): ``OMPI_MCA_orte_hnp_uri``, ``OMPI_COMM_WORLD_SIZE`` (and the ranks).
    Cloud TPU pods and Kubernetes, which JAX also detects, are not: call ``jax.distributed.initialize()``
    yourself there.
    """
    env = os.environ if environ is None else environ
    launch = multi_process_launch(env)
    if launch is None:
        return False
    if jax.distributed.is_initialized():  # importing perla_jax joined the launch already
        return True
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in env:
        # CPU processes need a collectives library to gather metrics and agree on checkpoints (jax has none by
        # default); accelerators use their own, so this changes nothing there.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if launch == "manual":
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()
    return True


def sync_processes(name: str) -> None:
    """Waits until every process of a multi-process run reaches the point ``name``; nothing on one process."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)

