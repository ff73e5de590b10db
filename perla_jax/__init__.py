"""perla_jax: PERLA (marginalised centralised critics) for cooperative multi-agent RL in JAX."""

from perla_jax.advantages import ADVANTAGE_ESTIMATORS, register_advantage
from perla_jax.algos import ALGO_SPECS, AlgoSpec
from perla_jax.config import ADVANTAGES, ALGOS, Config
from perla_jax.envs.registry import make_env, resolve_env_name
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
    "sample_joint_actions",
]
__version__ = "0.1.0"
