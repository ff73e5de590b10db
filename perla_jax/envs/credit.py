"""A one-step credit-assignment game where the other agents' actions are the noise (``--env credit``).

Each of N agents sees its own context, a one-hot of ``num_contexts``, drawn uniformly at every reset; the team
reward, paid to every agent, is the mean over agents of "this agent chose its context's best action" (the best
action of context c is c mod ``num_actions``), plus optional Gaussian noise of scale ``reward_noise``. Every
episode is one step and ends in a termination.

Known answers: the optimum is 1.0; a uniformly random team scores 1/|A|; each agent's share of the reward is 1/N
while the variance the others' actions add grows with N: the credit-assignment problem PERLA's theory is about.
The critic's global state is the concatenated observations (the base ``MultiAgentEnv``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
from jaxmarl.environments import spaces

from perla_jax.envs.base import EnvFamily, MultiAgentEnv


@chex.dataclass(frozen=True)
class CreditState:
    context: chex.Array  # [N] int, each agent's context
    step: chex.Array  # []


class CreditGame:
    """The game in jaxmarl's environment interface (``reset``, ``step_env``, per-agent spaces)."""

    def __init__(self, num_agents: int = 8, num_contexts: int = 4, num_actions: int = 4, reward_noise: float = 0.0):
        for name, value, low in (("num_agents", num_agents, 1), ("num_contexts", num_contexts, 1),
                                 ("num_actions", num_actions, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"env_kwargs {name}={value!r} is invalid: allowed is an integer >= {low}")
        if isinstance(reward_noise, bool) or not isinstance(reward_noise, (int, float)) or not reward_noise >= 0:
            raise ValueError(f"env_kwargs reward_noise={reward_noise!r} is invalid: allowed is a number >= 0")
        self.num_agents, self.num_contexts, self.num_actions = num_agents, num_contexts, num_actions
        self.reward_noise = float(reward_noise)
        self.agents = [f"agent_{i}" for i in range(num_agents)]
        self.max_steps = 0  # one transition per episode (the evaluation horizon is max_steps + 1)

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_contexts,))

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def reset(self, key: chex.PRNGKey) -> tuple[dict[str, chex.Array], CreditState]:
        context = jax.random.randint(key, (self.num_agents,), 0, self.num_contexts)
        state = CreditState(context=context, step=jnp.zeros((), jnp.int32))
        return self._obs(state), state

    def step_env(self, key: chex.PRNGKey, state: CreditState, actions: Mapping[str, chex.Array]):
        chosen = jnp.stack([actions[a] for a in self.agents])
        reward = self.team_reward(state.context, chosen) + self.reward_noise * jax.random.normal(key)
        done = jnp.ones((), bool)
        dones = {**{a: done for a in self.agents}, "__all__": done}
        return self._obs(state), state.replace(step=state.step + 1), {a: reward for a in self.agents}, dones, {}

    def team_reward(self, context: chex.Array, actions: chex.Array) -> chex.Array:
        """The mean over agents of "chose the best action of its context": ``[N]``, ``[N]`` -> ``[]``."""
        return jnp.mean((actions == context % self.num_actions).astype(jnp.float32))

    def _obs(self, state: CreditState) -> dict[str, chex.Array]:
        one_hot = jax.nn.one_hot(state.context, self.num_contexts)
        return {a: one_hot[i] for i, a in enumerate(self.agents)}


@dataclasses.dataclass(frozen=True)
class CreditEnv(MultiAgentEnv):
    """Every episode ends after its one step in a terminal state (nothing to bootstrap)."""

    def episode_end(self, inner: Any, done: chex.Array, info: Mapping[str, Any]) -> tuple[chex.Array, ...]:
        return done, jnp.zeros_like(done), jnp.zeros_like(done)


KWARGS = ("num_agents", "num_contexts", "num_actions", "reward_noise")


def make_credit(full_name: str, env_kwargs: Mapping[str, Any], map_name: str) -> CreditEnv:
    del map_name  # no maps (the registry refuses one before this is called)
    unknown = sorted(set(env_kwargs) - set(KWARGS))
    if unknown:
        raise ValueError(f"env_kwargs {unknown} are unknown for env={full_name!r}: allowed are {', '.join(KWARGS)}")
    return CreditEnv(name=full_name, env=CreditGame(**dict(env_kwargs)))


FAMILY = EnvFamily(name="credit", envs=("credit",), make=make_credit)
