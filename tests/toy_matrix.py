"""A one-step two-agent matrix game with a known payoff table, in jaxmarl's environment interface.

Both agents see the same constant observation, each picks one of the table's rows / columns, the team reward is
``PAYOFF[a0, a1]`` and the episode terminates. Under any policies, the true joint action value is the table
itself: Q(s, a0, a1) = PAYOFF[a0, a1].
"""

from __future__ import annotations

import dataclasses

import chex
import jax.numpy as jnp
import numpy as np
from jaxmarl.environments import spaces

from perla_jax.envs.credit import CreditEnv

# Not additive in the two actions: a critic that ignores the other's action cannot represent it.
PAYOFF = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.5], [0.0, 0.5, -0.5]], np.float32)


@chex.dataclass(frozen=True)
class MatrixState:
    step: chex.Array


class MatrixGame:
    def __init__(self):
        self.agents = ["row", "column"]
        self.num_agents = 2
        self.max_steps = 0

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (1,))

    def action_space(self, agent):
        return spaces.Discrete(PAYOFF.shape[0])

    def reset(self, key):
        state = MatrixState(step=jnp.zeros((), jnp.int32))
        return self._obs(), state

    def step_env(self, key, state, actions):
        reward = jnp.asarray(PAYOFF)[actions["row"], actions["column"]]
        done = jnp.ones((), bool)
        return self._obs(), state, {a: reward for a in self.agents}, {"row": done, "column": done, "__all__": done}, {}

    def _obs(self):
        return {a: jnp.ones((1,)) for a in self.agents}


def make_matrix_env() -> CreditEnv:
    """The game wrapped like the credit game: every episode one step, ending in a termination."""
    return dataclasses.replace(CreditEnv(name="matrix", env=MatrixGame()))
