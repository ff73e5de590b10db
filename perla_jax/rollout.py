"""Vectorised rollout of the joint policy, one ``lax.scan`` over time."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from perla_jax.agents import Agents
from perla_jax.envs import EnvState, MultiAgentEnv


@chex.dataclass(frozen=True)
class Trajectory:
    """A rollout batch; axes ``[T, E, N, ...]`` = time, environment, agent."""

    obs: chex.Array  # [T, E, N, O] observation acted on
    state: chex.Array  # [T, E, S] critic's global state acted in (MultiAgentEnv.global_state)
    avail: chex.Array  # [T, E, N, A] bool, actions available at obs (the policy was masked with it)
    action: chex.Array  # [T, E, N]
    log_prob: chex.Array  # [T, E, N] behaviour log-probability of the action
    reward: chex.Array  # [T, E, N]
    final_obs: chex.Array  # [T, E, N, O] observation the step reached, before any reset
    terminated: chex.Array  # [T, E]
    truncated: chex.Array  # [T, E]
    episode_return: chex.Array  # [T, E] team return of an episode that ended at this step, else 0
    episode_length: chex.Array  # [T, E]
    final_state: chex.Array  # [T, E, S] global state at final_obs
    final_avail: chex.Array  # [T, E, N, A] bool, actions available at final_obs
    won: chex.Array  # [T, E] an episode ended at this step in a win
    first: chex.Array | None = None  # [T, E] obs is an episode's first observation (recurrent hidden states reset there)


def rollout(
    env: MultiAgentEnv,
    agents: Agents,
    actor_params: chex.ArrayTree,
    env_state: EnvState,
    obs: chex.Array,
    key: chex.PRNGKey,
    num_steps: int,
    actor_hidden: chex.Array | None = None,
    first: chex.Array | None = None,
) -> tuple[EnvState, chex.Array, Trajectory, chex.Array | None, chex.Array]:
    """Runs ``num_steps`` steps in ``E`` environments from observations ``obs [E, N, O]``, the recurrent
    actor's hidden state ``actor_hidden [E, N, H]`` (None if feed-forward) and ``first [E]`` (obs begins an
    episode; default all true). Returns (env_state, obs, trajectory, actor_hidden, first) to continue from."""
    num_envs = obs.shape[0]
    first = jnp.ones((num_envs,), bool) if first is None else first
    actor_hidden = agents.initial_actor_hidden((num_envs,)) if actor_hidden is None else actor_hidden

    def step(carry, step_key):
        env_state, obs, hidden, first = carry
        key_act, key_env = jax.random.split(step_key)
        state = jax.vmap(env.global_state)(env_state.inner, obs)
        avail = jax.vmap(env.avail_actions)(env_state.inner)
        hidden, policy = agents.actor_step(actor_params, hidden, obs, first, avail)
        action = policy.sample(seed=key_act)  # [E, N]
        env_state, tr = jax.vmap(env.step)(jax.random.split(key_env, num_envs), env_state, action)
        record = Trajectory(
            obs=obs,
            state=state,
            avail=avail,
            action=action,
            log_prob=policy.log_prob(action),
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
        return (env_state, tr.obs, hidden, tr.terminated | tr.truncated), record

    carry = (env_state, obs, actor_hidden, first)
    (env_state, obs, hidden, first), traj = jax.lax.scan(step, carry, jax.random.split(key, num_steps))
    return env_state, obs, traj, hidden, first
