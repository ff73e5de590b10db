"""Vectorised rollout of the joint policy, one ``lax.scan`` over time."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from perla_jax.acting import act_step
from perla_jax.agents import Agents
from perla_jax.envs.base import MultiAgentEnv
from perla_jax.types import EnvState, Trajectory


def rollout(
    env: MultiAgentEnv,
    agents: Agents,
    actor_params: chex.ArrayTree,
    env_state: EnvState,
    obs: chex.Array,
    key: chex.PRNGKey,
    num_steps: int,
    actor_carry: chex.Array | None = None,
    first: chex.Array | None = None,
) -> tuple[EnvState, chex.Array, Trajectory, chex.Array | None, chex.Array]:
    """Runs ``num_steps`` steps in ``E`` environments from observations ``obs [E, N, O]``, the recurrent
    actor's hidden state ``actor_carry [E, N, H]`` (None if feed-forward) and ``first [E]`` (obs begins an
    episode; default all true). Returns (env_state, obs, trajectory, actor_carry, first) to continue from."""
    num_envs = obs.shape[0]
    first = jnp.ones((num_envs,), bool) if first is None else first
    actor_carry = agents.initial_actor_carry((num_envs,)) if actor_carry is None else actor_carry

    def step(carry, step_key):
        env_state, obs, hidden, first = carry
        state = jax.vmap(env.critic_state)(env_state.inner, obs)
        env_state, tr, acted = act_step(
            env, agents, actor_params, env_state, obs, hidden, first, step_key, "sample", num_envs
        )
        record = Trajectory(
            obs=obs,
            state=state,
            avail=acted.avail,
            action=acted.action,
            log_prob=acted.log_prob,
            reward=tr.reward,
            final_obs=tr.final_obs,
            terminated=tr.terminated,
            truncated=tr.truncated,
            episode_return=tr.episode_return,
            episode_length=tr.episode_length,
            final_state=tr.final_state,
            final_avail=tr.final_avail,
            won=tr.won,
            first=first,
        )
        return (env_state, tr.obs, acted.hidden, tr.terminated | tr.truncated), record

    carry = (env_state, obs, actor_carry, first)
    (env_state, obs, hidden, first), traj = jax.lax.scan(step, carry, jax.random.split(key, num_steps))
    return env_state, obs, traj, hidden, first
