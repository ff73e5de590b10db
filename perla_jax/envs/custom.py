"""Your own environment: any object with jaxmarl's ``MultiAgentEnv`` interface, trained through
``make_train(config, env=my_env)`` (``Config(env="custom")`` picks this family's defaults).

The interface read (jaxmarl's, ``jaxmarl.environments.multi_agent_env.MultiAgentEnv``):

    agents                          list of agent names
    observation_space(agent)        a space with a vector ``shape`` (O,)
    action_space(agent)             ``Discrete(n)`` for every agent, or ``Box`` for every agent
    reset(key) -> (obs, state)      obs: {agent: [O]}
    step_env(key, state, actions) -> (obs, state, reward, done, info)     {agent: ...}, done["__all__"] ends
                                    the episode; the environment must not reset itself there (we do, keeping
                                    the final observation). ``step`` alone is accepted too (jaxmarl's auto-reset):
                                    the final observation is then the reset one, so use time_limit "terminal".
    get_world_state(state) -> [S]   optional: the centralised critics' state; else the concatenated observations
    max_steps (int)                 optional: the time limit, needed by evaluation and time_limit="observe"

An episode end is a truncation (bootstrapped with time_limit="bootstrap") where ``info["truncation"]`` is set
(brax's convention) or, without it, where the state counts steps (``state.step``) up to ``max_steps``; any other
end is a termination.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp

from perla_jax.envs.base import EnvFamily, MultiAgentEnv, check_spaces
from perla_jax.envs.mabrax import ContinuousMultiAgentEnv

NAME = "custom"
REQUIRED = ("agents", "observation_space", "action_space", "reset")


class _Custom:
    """What a user's environment reads differently from jaxmarl's registered ones (mixed into the two action kinds)."""

    @property
    def num_agents(self) -> int:
        return len(self.env.agents)

    @functools.cached_property
    def world_state_dim(self) -> int:
        if not hasattr(self.env, "get_world_state"):
            return self.num_agents * self.obs_dim
        state = jax.eval_shape(lambda key: self.env.reset(key)[1], jax.random.PRNGKey(0))
        return int(jax.eval_shape(self.env.get_world_state, state).shape[-1])

    def world_state(self, inner: Any, obs: chex.Array) -> chex.Array:
        if hasattr(self.env, "get_world_state"):
            return self.env.get_world_state(inner)
        return obs.reshape(-1)

    def elapsed_steps(self, inner: Any) -> chex.Array:
        return inner.step

    def episode_end(self, inner: Any, done: chex.Array, info: Mapping[str, Any]) -> tuple[chex.Array, ...]:
        if "truncation" in info:  # brax's convention
            at_limit = info["truncation"] > 0
        elif hasattr(inner, "step") and isinstance(getattr(self.env, "max_steps", None), int):
            at_limit = self.elapsed_steps(inner) >= self.env.max_steps
        else:
            at_limit = jnp.zeros_like(done)
        return done & ~at_limit, done & at_limit, jnp.zeros_like(done)

    def inner_step(self, key: chex.PRNGKey, inner: Any, actions: Mapping[str, chex.Array]) -> tuple:
        step = self.env.step_env if hasattr(self.env, "step_env") else self.env.step
        return step(key, inner, actions)


@dataclasses.dataclass(frozen=True)
class CustomEnv(_Custom, MultiAgentEnv):
    """A user's discrete-action environment (see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class CustomBoxEnv(_Custom, ContinuousMultiAgentEnv):
    """A user's Box-action environment (see the module docstring)."""


def wrap_env(env: Any, time_limit: str = "bootstrap") -> MultiAgentEnv:
    """``env`` (jaxmarl's interface, see the module docstring) as the arrays-over-agents environment the trainer
    steps; ValueError naming what is missing or unsupported. An already wrapped environment is returned as is."""
    if isinstance(env, MultiAgentEnv):
        return env
    name = type(env).__name__
    missing = [attr for attr in REQUIRED if not hasattr(env, attr)]
    if not (hasattr(env, "step_env") or hasattr(env, "step")):
        missing.append("step_env (or step)")
    if missing:
        raise ValueError(f"env {name} lacks {', '.join(missing)}: allowed are objects with jaxmarl's MultiAgentEnv "
                         f"interface ({', '.join(REQUIRED)}, step_env or step)")
    kinds = {type(env.action_space(agent)).__name__ for agent in env.agents}
    if kinds <= {"Discrete"}:
        return check_spaces(name, CustomEnv(name=name, env=env, time_limit=time_limit))
    if kinds <= {"Box"}:
        return CustomBoxEnv(name=name, env=env, time_limit=time_limit)
    raise ValueError(f"env {name} has action spaces {sorted(kinds)}: allowed are jaxmarl's spaces.Discrete for "
                     "every agent or spaces.Box for every agent")


def _refuse_make(full_name: str, env_kwargs: Mapping[str, Any], map_name: str) -> MultiAgentEnv:
    raise ValueError(f"env={full_name!r} is your own environment object: pass it as make_train(config, env=...) "
                     "(a name on the command line cannot build it)")


FAMILY = EnvFamily(name=NAME, envs=(NAME,), make=_refuse_make)
