"""A tiny jaxmarl-style continuous-action environment with heterogeneous agents, for fast tests.

Agent "a" sees 2 numbers and acts with 1 in [-1, 1]; agent "b" sees 3 and acts with 2 in [-0.5, 0.5].
The episode terminates when the running sum of a's actions leaves [-1.5, 1.5] and is truncated after
``max_steps`` steps (reported as ``info["truncation"]``, brax's convention). The state records the last
actions received, so tests can check what the environment was given.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jaxmarl.environments import spaces
from jaxmarl.environments.multi_agent_env import MultiAgentEnv


@chex.dataclass(frozen=True)
class ToyState:
    pos: chex.Array  # [] running sum of a's actions
    t: chex.Array  # []
    last_a: chex.Array  # [1]
    last_b: chex.Array  # [2]


class ToyContinuous(MultiAgentEnv):
    def __init__(self, max_steps: int = 5):
        super().__init__(num_agents=2)
        self.agents = ["a", "b"]
        self.max_steps = max_steps
        self.observation_spaces = {"a": spaces.Box(-jnp.inf, jnp.inf, (2,)), "b": spaces.Box(-jnp.inf, jnp.inf, (3,))}
        self.action_spaces = {"a": spaces.Box(-1.0, 1.0, (1,)), "b": spaces.Box(-0.5, 0.5, (2,))}

    def reset(self, key):
        pos = jax.random.uniform(key, (), minval=-0.5, maxval=0.5)
        state = ToyState(pos=pos, t=jnp.zeros((), jnp.int32), last_a=jnp.zeros(1), last_b=jnp.zeros(2))
        return self.get_obs(state), state

    def get_obs(self, state):
        t = state.t.astype(jnp.float32) / self.max_steps
        return {"a": jnp.stack([state.pos, t]), "b": jnp.stack([state.pos, t, 1.0])}

    def step_env(self, key, state, actions):
        # Trace-time check that padded dimensions never reach the environment.
        assert actions["a"].shape == (1,) and actions["b"].shape == (2,), {k: v.shape for k, v in actions.items()}
        pos = state.pos + actions["a"][0]
        t = state.t + 1
        state = ToyState(pos=pos, t=t, last_a=actions["a"], last_b=actions["b"])
        terminal = jnp.abs(pos) > 1.5
        time_up = t >= self.max_steps
        done = terminal | time_up
        team = -(pos**2) - jnp.sum((actions["b"] - 0.2) ** 2)
        rewards = {a: team for a in self.agents}
        dones = {"a": done, "b": done, "__all__": done}
        info = {"truncation": (time_up & ~terminal).astype(jnp.float32)}
        return self.get_obs(state), state, rewards, dones, info


class BilinearGame(MultiAgentEnv):
    """A one-step two-agent game on Box actions in [-1, 1] whose team reward is the product of the two actions:
    the true joint action value is Q(s, a_0, a_1) = a_0 a_1 (clipped actions), which a critic that ignores the
    other's action cannot represent, and whose mean over a zero-mean other is 0."""

    def __init__(self):
        super().__init__(num_agents=2)
        self.agents = ["a", "b"]
        self.max_steps = 1
        self.observation_spaces = {a: spaces.Box(0.0, 1.0, (1,)) for a in self.agents}
        self.action_spaces = {a: spaces.Box(-1.0, 1.0, (1,)) for a in self.agents}

    def reset(self, key):
        return self.get_obs(None), jnp.zeros((), jnp.int32)

    def get_obs(self, state):
        return {a: jnp.ones((1,)) for a in self.agents}

    def step_env(self, key, state, actions):
        reward = actions["a"][0] * actions["b"][0]
        done = jnp.ones((), bool)
        return (self.get_obs(state), state, {a: reward for a in self.agents}, {"a": done, "b": done, "__all__": done},
                {"truncation": jnp.zeros((), bool)})  # brax's convention: the episode terminates
