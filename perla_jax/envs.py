"""Environments: name resolution, a truncation-aware auto-reset step, the critic's global state and the
available actions (SMAX's specifics live in ``perla_jax.smax``).

Axis convention used across the package: ``[T, E, N, ...]`` = time, environment, agent.
Functions here act on one environment (no ``E`` axis); the trainer vmaps them over ``E``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import jaxmarl
from jaxmarl.environments import spaces

ALIASES = {"mpe": "MPE_simple_spread_v3", "smax": "HeuristicEnemySMAX"}
# Cooperative scenarios whose agents share observation and action spaces (and so one policy).
SUPPORTED = ("MPE_simple_spread_v3", "MPE_simple_reference_v3", "MPE_simple_v3", "HeuristicEnemySMAX")
SMAX_ENVS = ("HeuristicEnemySMAX",)
REFUSED = {
    "MPE_simple_speaker_listener_v4": "cooperative but its speaker and listener have different spaces",
    "MPE_simple_tag_v3": "competitive (predators against prey)",
    "MPE_simple_world_comm_v3": "competitive (predators against prey)",
    "MPE_simple_adversary_v3": "competitive (an adversary against the agents)",
    "MPE_simple_crypto_v3": "competitive (an eavesdropper against the speakers)",
    "MPE_simple_push_v3": "competitive (an adversary against the agent)",
}


def resolve_env_name(name: str) -> str:
    """Maps an alias or full jaxmarl name to a supported jaxmarl name, or raises ValueError."""
    from perla_jax.continuous_envs import MABRAX, MABRAX_ALIASES  # continuous (Box) action spaces

    full = {**ALIASES, **MABRAX_ALIASES}.get(name, name)
    if full in SUPPORTED or full in MABRAX:
        return full
    if full in REFUSED:
        raise ValueError(f"env={name!r} is refused: {REFUSED[full]}; allowed are {_allowed()}")
    raise ValueError(f"env={name!r} is unknown: allowed are {_allowed()}")


def _allowed() -> str:
    from perla_jax.continuous_envs import MABRAX, MABRAX_ALIASES

    aliases = {**ALIASES, **MABRAX_ALIASES}
    return ", ".join([f"{a} (= {f})" for a, f in aliases.items()] + list(SUPPORTED) + list(MABRAX))


@chex.dataclass(frozen=True)
class EnvState:
    """jaxmarl state plus the running episode statistics the trainer logs."""

    inner: Any
    episode_return: chex.Array  # [] team return so far (sum over time of the mean over agents)
    episode_length: chex.Array  # []


@chex.dataclass(frozen=True)
class Transition:
    """What one environment step returns, for one environment (``N`` = agents, ``O`` = obs size)."""

    obs: chex.Array  # [N, O] observation to act on next (after an automatic reset)
    final_obs: chex.Array  # [N, O] observation reached by the step (before any reset), for bootstrapping
    reward: chex.Array  # [N]
    terminated: chex.Array  # [] the episode ended in a terminal state: do not bootstrap
    truncated: chex.Array  # [] the episode hit its time limit: bootstrap from final_obs
    episode_return: chex.Array  # [] team return of the episode that ended here (0 if none)
    episode_length: chex.Array  # []
    final_state: chex.Array  # [S] critic's global state at final_obs
    final_avail: chex.Array  # [N, A] bool, actions available at final_obs
    won: chex.Array  # [] the episode ended here in a win (always False where the env has no wins)


@dataclasses.dataclass(frozen=True)
class MultiAgentEnv:
    """A homogeneous discrete-action jaxmarl environment seen as stacked arrays over agents."""

    name: str
    env: Any

    @property
    def agents(self) -> list[str]:
        return list(self.env.agents)

    @property
    def num_agents(self) -> int:
        return self.env.num_agents

    @property
    def obs_dim(self) -> int:
        return int(self.env.observation_space(self.agents[0]).shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.env.action_space(self.agents[0]).n)

    @property
    def state_dim(self) -> int:
        return self.num_agents * self.obs_dim

    @property
    def reports_wins(self) -> bool:
        """Whether episodes can be won (SMAX); elsewhere the win rate is NaN."""
        return False

    def global_state(self, inner: Any, obs: chex.Array) -> chex.Array:
        """The critic's centralised state ``[S]`` in jaxmarl state ``inner`` with observations ``obs [N, O]``
        (MPE: concatenated observations)."""
        return global_state(obs)

    def avail_actions(self, inner: Any) -> chex.Array:
        """Available actions ``[N, A]`` (bool) in jaxmarl state ``inner``; every action in MPE."""
        return jnp.ones((self.num_agents, self.num_actions), bool)

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
        obs, inner, reward, done, info = self.env.step_env(key_step, state.inner, self.agent_actions(actions))
        final_obs = self._stack(obs)
        reward = jnp.stack([reward[a] for a in self.agents]).astype(jnp.float32)
        ended = done["__all__"]
        terminated, truncated, won = self.episode_end(inner, ended, info)
        final_state, final_avail = self.global_state(inner, final_obs), self.avail_actions(inner)
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

    def agent_actions(self, actions: chex.Array) -> dict[str, chex.Array]:
        """Stacked actions ``[N, ...]`` -> jaxmarl's {agent: action}."""
        return {a: actions[i] for i, a in enumerate(self.agents)}

    def random_actions(self, key: chex.PRNGKey) -> chex.Array:
        """Uniform actions ``[N]``, via the jaxmarl action spaces."""
        keys = jax.random.split(key, self.num_agents)
        return jnp.stack([self.env.action_space(a).sample(k) for a, k in zip(self.agents, keys)])

    def _stack(self, per_agent: Mapping[str, chex.Array]) -> chex.Array:
        return jnp.stack([per_agent[a] for a in self.agents])


def make_env(name: str, env_kwargs: Mapping[str, Any] | None = None, map_name: str = "") -> MultiAgentEnv:
    """The environment ``name`` (alias or jaxmarl name); ``map_name`` is the SMAX map (SMAX only)."""
    full = resolve_env_name(name)
    check_map(name, map_name)
    from perla_jax.continuous_envs import MABRAX, make_mabrax_env

    if full in MABRAX:
        return make_mabrax_env(full, env_kwargs)
    if full in SMAX_ENVS:
        from perla_jax.smax import make_smax  # local: smax subclasses MultiAgentEnv

        return _check_spaces(name, make_smax(full, map_name, env_kwargs))
    return _check_spaces(name, MultiAgentEnv(name=full, env=jaxmarl.make(full, **dict(env_kwargs or {}))))


def check_map(name: str, map_name: str) -> None:
    """A map is required by SMAX and refused elsewhere; ``name`` is an alias or jaxmarl name."""
    full = resolve_env_name(name)
    if full not in SMAX_ENVS:
        if map_name:
            raise ValueError(f"map_name={map_name!r} is refused for env={name!r}: maps exist only for SMAX (env=smax)")
        return
    from perla_jax.smax import check_map_name

    check_map_name(map_name)


def _check_spaces(name: str, menv: MultiAgentEnv) -> MultiAgentEnv:
    env = menv.env
    first = env.agents[0]
    for agent in env.agents:
        if not isinstance(env.action_space(agent), spaces.Discrete):
            raise ValueError(f"env={name!r}: agent {agent} has a non-discrete action space; allowed are Discrete")
        same_obs = env.observation_space(agent).shape == env.observation_space(first).shape
        if not same_obs or env.action_space(agent).n != env.action_space(first).n:
            raise ValueError(f"env={name!r}: agents have different spaces; allowed are homogeneous agents")
    return menv


def global_state(obs: chex.Array) -> chex.Array:
    """Centralised state ``[..., N*O]`` from observations ``[..., N, O]`` (MPE: concatenated observations)."""
    return obs.reshape(*obs.shape[:-2], -1)
