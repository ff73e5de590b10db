"""Environment families behind one registry (see ``registry``); ``base`` holds what every family shares."""

from perla_jax.envs.base import EnvFamily, MultiAgentEnv, concatenated_observations
from perla_jax.envs.registry import FAMILIES, check_map, env_family, make_env, resolve_env_name

__all__ = ["EnvFamily", "FAMILIES", "MultiAgentEnv", "check_map", "concatenated_observations", "env_family", "make_env", "resolve_env_name"]
