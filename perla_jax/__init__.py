"""perla_jax: PERLA (marginalised centralised critics) for cooperative multi-agent RL in JAX."""

import os
import sys

from perla_jax.sharding import maybe_initialize_distributed

# Importing jaxmarl (below) initialises XLA's backend, after which jax.distributed.initialize refuses: a process whose
# environment describes a multi-process launch (sharding.multi_process_launch) joins it here, first.
maybe_initialize_distributed()

# jaxmarl prints a notice about its optional submoduled environments on import, before every command's output.
# Its import chain swaps sys.stdout back, so the notice is dropped at the file descriptor.
sys.stdout.flush()
try:
    _saved_stdout = os.dup(1)
except OSError:  # no file descriptor 1 (an embedded interpreter): the notice goes wherever prints go
    _saved_stdout = None
_devnull = os.open(os.devnull, os.O_WRONLY)
try:
    if _saved_stdout is not None:
        os.dup2(_devnull, 1)
    import jaxmarl.environments  # noqa: E402, F401

    sys.stdout.flush()
finally:
    if _saved_stdout is not None:
        os.dup2(_saved_stdout, 1)
        os.close(_saved_stdout)
    os.close(_devnull)
from perla_jax.advantages import ADVANTAGE_ESTIMATORS, register_advantage
from perla_jax.algos import ALGO_SPECS, AlgoSpec
from perla_jax.config import ADVANTAGES, ALGOS, Config
from perla_jax.envs.registry import make_env, resolve_env_name
from perla_jax.experiment import run_experiment
from perla_jax.marginalisation import marginal_q, marginal_q_head, marginalise, q_head_samples, sample_joint_actions
from perla_jax.outputs import analysis, checkpoints, loggers, recording
from perla_jax.train import Trainer, make_train, make_trainer
from perla_jax.types import METRICS, RunnerState

__all__ = [
    "ADVANTAGES",
    "ADVANTAGE_ESTIMATORS",
    "ALGOS",
    "ALGO_SPECS",
    "AlgoSpec",
    "Config",
    "METRICS",
    "RunnerState",
    "Trainer",
    "analysis",
    "checkpoints",
    "loggers",
    "make_env",
    "make_train",
    "make_trainer",
    "marginal_q",
    "marginal_q_head",
    "marginalise",
    "q_head_samples",
    "recording",
    "register_advantage",
    "resolve_env_name",
    "run_experiment",
    "sample_joint_actions",
]
__version__ = "0.1.0"
