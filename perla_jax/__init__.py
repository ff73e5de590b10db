"""perla_jax: PERLA (marginalised centralised critics) for cooperative multi-agent RL in JAX."""

from perla_jax.config import ADVANTAGES, ALGOS, Config
from perla_jax.envs import make_env, resolve_env_name
from perla_jax.marginalisation import marginal_q, marginal_q_head, marginalise, q_head_samples, sample_joint_actions
from perla_jax.train import METRICS, RunnerState, Trainer, make_train, make_trainer

__all__ = [
    "ADVANTAGES",
    "ALGOS",
    "Config",
    "METRICS",
    "RunnerState",
    "Trainer",
    "make_env",
    "make_train",
    "make_trainer",
    "marginal_q",
    "marginal_q_head",
    "marginalise",
    "q_head_samples",
    "resolve_env_name",
    "sample_joint_actions",
]
__version__ = "0.1.0"
