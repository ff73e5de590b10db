"""A two-step cue game that only a policy with memory can solve, for testing recurrent training.

At the first step both agents see a cue c in {-1, +1} (and a "first step" flag); at the second step they see
zeros and are rewarded 1 per agent whose action matches the cue (action 1 for +1, 0 for -1), as a team mean.
The episode then terminates. A memoryless policy earns 0.5 per episode in expectation at best; one that
remembers the cue earns 1.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jaxmarl.environments import spaces
from jaxmarl.environments.multi_agent_env import MultiAgentEnv as JaxMARLEnv

from perla_jax.envs.base import MultiAgentEnv


@chex.dataclass(frozen=True)
class CueState:
    cue: chex.Array  # [] int, 0 or 1
    t: chex.Array  # [] int


class CueGame(JaxMARLEnv):
    def __init__(self):
        super().__init__(num_agents=2)
        self.max_steps = 1  # jaxmarl's convention: episodes last at most max_steps + 1 transitions
        self.agents = ["agent_0", "agent_1"]
        self.observation_spaces = {a: spaces.Box(-1.0, 1.0, (2,)) for a in self.agents}
        self.action_spaces = {a: spaces.Discrete(2) for a in self.agents}

    def reset(self, key):
        state = CueState(cue=jax.random.bernoulli(key).astype(jnp.int32), t=jnp.zeros((), jnp.int32))
        return self.get_obs(state), state

    def get_obs(self, state):
        first = state.t == 0
        seen = jnp.where(first, 2.0 * state.cue - 1.0, 0.0)
        return {a: jnp.stack([seen, first.astype(jnp.float32)]) for a in self.agents}

    def step_env(self, key, state, actions):
        matches = jnp.stack([(actions[a] == state.cue).astype(jnp.float32) for a in self.agents])
        reward = jnp.where(state.t == 1, matches.mean(), 0.0)
        state = CueState(cue=state.cue, t=state.t + 1)
        done = state.t >= 2
        dones = {**{a: done for a in self.agents}, "__all__": done}
        return self.get_obs(state), state, {a: reward for a in self.agents}, dones, {}


class CueEnv(MultiAgentEnv):
    """The cue game's end is a true termination (no bootstrap), unlike MPE's time limit."""

    def episode_end(self, inner, done, info):
        return done, jnp.zeros_like(done), jnp.zeros_like(done)


def make_cue_env() -> CueEnv:
    return CueEnv(name="cue", env=CueGame())
