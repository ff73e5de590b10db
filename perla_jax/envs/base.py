"""The base of every environment family: a jaxmarl environment seen as stacked arrays over agents, with a
truncation-aware auto-reset step, the critic's global state and the available actions; and ``EnvFamily``,
what a family module declares for the registry (``perla_jax.envs.registry``). Family modules import this
module only.

Functions here act on one environment (no ``E`` axis); the trainer vmaps them over ``E``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jaxmarl.environments import spaces

from perla_jax.types import EnvState, Transition

# What a step that hits the environment's time limit means to the critics (Config.time_limit):
#   bootstrap  a truncation: the return continues past the limit, so the targets bootstrap on V(final state);
#              the critic learns a value of the infinite-horizon task when time is not in its input
#   terminal   the limit ends the task: no bootstrap (the episodic return JaxMARL's baselines learn), though
#              the critic cannot see how close the end is
#   observe    terminal, and the fraction of the time limit left is appended to the critic's state (and to a
#              decentralised critic's observation), which makes the episodic value a function of its input
TIME_LIMITS = ("bootstrap", "terminal", "observe")


@dataclasses.dataclass(frozen=True)
class EnvFamily:
    """What the registry needs to know of a family of environments; each family module defines one.

    ``make(full_name, env_kwargs, map_name)`` builds a ``MultiAgentEnv``; ``maps()`` lists the maps of a family
    that needs one (None: the family has no maps, and a map is refused).
    """

    name: str
    envs: tuple[str, ...]  # jaxmarl names this family builds
    make: Callable[[str, Mapping[str, Any], str], "MultiAgentEnv"]
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)  # short name -> jaxmarl name
    refused: Mapping[str, str] = dataclasses.field(default_factory=dict)  # jaxmarl name -> why it is refused
    default_network: str = "ff"  # what Config.network="" resolves to
    default_time_limit: str = "bootstrap"  # what Config.time_limit="" resolves to (one of TIME_LIMITS)
    continuous: bool = False  # Box actions (recurrent policies are discrete-only)
    maps: Callable[[], tuple[str, ...]] | None = None


@dataclasses.dataclass(frozen=True)
class MultiAgentEnv:
    """A discrete-action jaxmarl environment seen as stacked arrays over agents.

    Agents may differ in observation size and action count (MPE's speaker and listener): observations are
    zero-padded to the largest size (``obs_dim``), actions are indices below the largest count
    (``num_actions``), and each agent's actions beyond its own count are unavailable (``action_mask``), so a
    masked policy gives them probability 0 and only real actions reach jaxmarl. Homogeneous agents: no
    padding, every action available.
    """

    name: str
    env: Any
    time_limit: str = "bootstrap"  # one of TIME_LIMITS

    continuous = False  # Box action spaces (see perla_jax.envs.mabrax)

    @property
    def agents(self) -> list[str]:
        return list(self.env.agents)

    @property
    def num_agents(self) -> int:
        return self.env.num_agents

    @property
    def obs_dims(self) -> tuple[int, ...]:
        """Each agent's observation size."""
        return tuple(int(self.env.observation_space(a).shape[0]) for a in self.agents)

    @property
    def obs_dim(self) -> int:
        """The padded observation size: the largest agent's."""
        return max(self.obs_dims)

    @property
    def action_counts(self) -> tuple[int, ...]:
        """Each agent's number of discrete actions."""
        return tuple(int(self.env.action_space(a).n) for a in self.agents)

    @property
    def num_actions(self) -> int:
        """The width of the action axis ``A``: the largest agent's action count."""
        return max(self.action_counts)

    @property
    def action_mask(self) -> np.ndarray:
        """``[N, A]`` True on each agent's real actions (indices below its own count)."""
        return np.arange(self.num_actions)[None, :] < np.array(self.action_counts)[:, None]

    @property
    def world_state_dim(self) -> int:
        """Size of ``world_state``."""
        return self.num_agents * self.obs_dim

    @property
    def observes_time(self) -> bool:
        return self.time_limit == "observe"

    @property
    def state_dim(self) -> int:
        """Size ``S`` of the critic's state ``critic_state``: the world state, plus the time left if observed."""
        return self.world_state_dim + int(self.observes_time)

    @property
    def reports_wins(self) -> bool:
        """Whether episodes can be won (SMAX); elsewhere the win rate is NaN."""
        return False

    def world_state(self, inner: Any, obs: chex.Array) -> chex.Array:
        """The centralised state ``[world_state_dim]`` in jaxmarl state ``inner`` with observations ``obs [N, O]``
        (MPE: concatenated observations)."""
        return concatenated_observations(obs)

    def critic_state(self, inner: Any, obs: chex.Array) -> chex.Array:
        """The critic's state ``[S]``: ``world_state``, then (``time_limit="observe"``) ``time_left``."""
        world = self.world_state(inner, obs)
        if not self.observes_time:
            return world
        return jnp.concatenate([world, self.time_left(inner)[None].astype(world.dtype)])

    @property
    def horizon(self) -> int:
        """Transitions in an episode that reaches the time limit: jaxmarl's MPE and SMAX end an episode after at
        most ``max_steps + 1`` (they check ``step >= max_steps`` before incrementing; the credit game's
        ``max_steps = 0`` gives its one step); MABrax's brax ``EpisodeWrapper`` after ``episode_length``."""
        max_steps = getattr(self.env, "max_steps", None)
        if isinstance(max_steps, int):
            return max_steps + 1
        episode_length = getattr(self.env, "episode_length", None)
        if isinstance(episode_length, int):
            return episode_length
        raise ValueError(f"env={self.name!r} has no integer max_steps or episode_length: allowed are environments "
                         "with an episode time limit (evaluation and time_limit='observe' need one)")

    def elapsed_steps(self, inner: Any) -> chex.Array:
        """``[]`` transitions taken so far in the episode of jaxmarl state ``inner``."""
        return inner.step

    def time_left(self, inner: Any) -> chex.Array:
        """``[]`` the fraction of the time limit left: 1 at a reset, 0 in the state the limit ends in."""
        return jnp.clip(1.0 - self.elapsed_steps(inner) / self.horizon, 0.0, 1.0)

    def avail_actions(self, inner: Any) -> chex.Array:
        """Available actions ``[N, A]`` (bool) in jaxmarl state ``inner``: each agent's real actions (MPE:
        every action of a homogeneous scenario; the speaker's first 3 of 5 in speaker_listener)."""
        return jnp.asarray(self.action_mask)

    def only_real_actions(self, avail: chex.Array) -> chex.Array:
        """``avail [N, A]`` AND ``action_mask``: a subclass that masks actions itself (SMAX) passes its mask
        through this, so the actions beyond an agent's count stay unavailable. Unchanged when every agent has
        all ``A`` actions."""
        mask = self.action_mask
        return avail if mask.all() else avail & jnp.asarray(mask)

    def episode_end(self, inner: Any, done: chex.Array, info: Mapping[str, Any]) -> tuple[chex.Array, ...]:
        """(terminated, truncated, won) of a step that reached jaxmarl state ``inner`` with ``done`` and jaxmarl's
        ``info``. MPE ends episodes only at its time limit, so every end is a truncation."""
        return jnp.zeros_like(done), done, jnp.zeros_like(done)

    def reset(self, key: chex.PRNGKey) -> tuple[chex.Array, EnvState]:
        obs, inner = self.env.reset(key)
        zero = jnp.zeros((), jnp.float32)
        return self._stack(obs), EnvState(inner=inner, episode_return=zero, episode_length=zero)

    def step(self, key: chex.PRNGKey, state: EnvState, actions: chex.Array) -> tuple[EnvState, Transition]:
        """Steps with actions ``[N]`` and resets on episode end.

        jaxmarl's own auto-reset returns only the reset observation; we keep the final one so that
        time-limit truncation can bootstrap from it.
        """
        key_step, key_reset = jax.random.split(key)
        obs, inner, reward, done, info = self.inner_step(key_step, state.inner, self.agent_actions(actions))
        final_obs = self._stack(obs)
        reward = jnp.stack([reward[a] for a in self.agents]).astype(jnp.float32)
        ended = done["__all__"]
        terminated, truncated, won = self.episode_end(inner, ended, info)
        if self.time_limit != "bootstrap":  # the limit ends the task: targets do not look past it
            terminated, truncated = terminated | truncated, jnp.zeros_like(truncated)
        final_state, final_avail = self.critic_state(inner, final_obs), self.avail_actions(inner)
        ret = state.episode_return + reward.mean()
        length = state.episode_length + 1
        reset_obs, reset_state = self.reset(key_reset)
        inner = jax.tree.map(lambda r, s: jnp.where(ended, r, s), reset_state.inner, inner)
        next_state = EnvState(
            inner=inner,
            episode_return=jnp.where(ended, 0.0, ret),
            episode_length=jnp.where(ended, 0.0, length),
        )
        transition = Transition(
            obs=jnp.where(ended, reset_obs, final_obs),
            final_obs=final_obs,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            episode_return=jnp.where(ended, ret, 0.0),
            episode_length=jnp.where(ended, length, 0.0),
            final_state=final_state,
            final_avail=final_avail,
            won=won & ended,
        )
        return next_state, transition

    def inner_step(self, key: chex.PRNGKey, inner: Any, actions: Mapping[str, chex.Array]) -> tuple:
        """jaxmarl's step without its auto-reset: (obs, state, reward, done, info), all keyed by agent."""
        return self.env.step_env(key, inner, actions)

    def agent_actions(self, actions: chex.Array) -> dict[str, chex.Array]:
        """Stacked actions ``[N, ...]`` -> jaxmarl's {agent: action}."""
        return {a: actions[i] for i, a in enumerate(self.agents)}

    def random_actions(self, key: chex.PRNGKey) -> chex.Array:
        """Uniform actions ``[N]``, via the jaxmarl action spaces: agent i's below its own count."""
        keys = jax.random.split(key, self.num_agents)
        return jnp.stack([self.env.action_space(a).sample(k) for a, k in zip(self.agents, keys)])

    def _stack(self, per_agent: Mapping[str, chex.Array]) -> chex.Array:
        """{agent: vector} -> ``[N, D]``, each vector zero-padded (False for bool) to the longest; a plain
        stack when they agree. Observations come out ``[N, obs_dim]``; per-agent available-action vectors of
        different lengths come out ``[N, A]`` with the missing actions unavailable."""
        rows = [per_agent[a] for a in self.agents]
        width = max(r.shape[-1] for r in rows)
        return jnp.stack([_pad_last(r, width) for r in rows])


def _pad_last(x: chex.Array, width: int) -> chex.Array:
    """``x [..., D]`` zero-padded on its last axis to ``[..., width]``; ``x`` itself when ``D == width``."""
    if x.shape[-1] == width:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])


def check_spaces(name: str, menv: MultiAgentEnv) -> MultiAgentEnv:
    """``menv`` if every agent acts in a Discrete space and observations are vectors (their sizes and the
    action counts may differ: see ``MultiAgentEnv``), else ValueError."""
    env = menv.env
    if not env.agents:
        raise ValueError(f"env={name!r} has no agents: allowed are env_kwargs with at least one agent")
    for agent in env.agents:
        if not isinstance(env.action_space(agent), spaces.Discrete):
            raise ValueError(f"env={name!r}: agent {agent} has a non-discrete action space; allowed are Discrete")
        shape = env.observation_space(agent).shape
        if len(shape) != 1:
            raise ValueError(f"env={name!r}: agent {agent} has observation shape {shape}; allowed are vectors (O,)")
    return menv


def concatenated_observations(obs: chex.Array) -> chex.Array:
    """Centralised state ``[..., N*O]`` from observations ``[..., N, O]`` (MPE: concatenated observations)."""
    return obs.reshape(*obs.shape[:-2], -1)
