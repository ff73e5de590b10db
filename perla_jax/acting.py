"""One acting step, shared by the rollout, evaluation and the benchmark's random-policy ceiling: read the
available actions, choose actions, step the environment (with its truncation-aware auto-reset)."""

from __future__ import annotations

import chex
import jax

from perla_jax.agents import Agents
from perla_jax.envs.base import MultiAgentEnv
from perla_jax.types import EnvState, Transition

ACT_MODES = ("sample", "greedy", "random")


@chex.dataclass(frozen=True)
class Acted:
    """What the agents did in one step (leading axes those of ``obs``, e.g. ``[E]``)."""

    avail: chex.Array  # [..., N, A] actions available at obs
    action: chex.Array  # [..., N(, A)]
    log_prob: chex.Array | None  # [..., N] behaviour log-probability (None for random actions)
    hidden: chex.Array | None  # [..., N, H] recurrent actor's hidden state after the step


def act_step(
    env: MultiAgentEnv,
    agents: Agents | None,
    actor_params: chex.ArrayTree,
    env_state: EnvState,
    obs: chex.Array,
    hidden: chex.Array | None,
    first: chex.Array,
    key: chex.PRNGKey,
    mode: str = "sample",
    num_envs: int | None = None,
) -> tuple[EnvState, Transition, Acted]:
    """Acts in ``num_envs`` environments (leading axis ``[E]`` on every input; env functions vmapped) or, with
    ``num_envs=None``, in one environment (no ``E`` axis). ``mode``: ``sample`` from the policies, ``greedy``
    (their modes) or ``random`` (uniform over the action spaces; ``agents`` unused)."""
    if mode not in ACT_MODES:
        raise ValueError(f"mode={mode!r} is invalid: allowed are {', '.join(ACT_MODES)}")
    key_act, key_env = jax.random.split(key)
    batched = num_envs is not None
    over_envs = jax.vmap if batched else (lambda fn: fn)
    avail = over_envs(env.avail_actions)(env_state.inner)
    if mode == "random":
        act_keys = jax.random.split(key_act, num_envs) if batched else key_act
        action, log_prob = over_envs(env.random_actions)(act_keys), None
    else:
        hidden, policy = agents.actor_step(actor_params, hidden, obs, first, avail)
        action = policy.mode() if mode == "greedy" else policy.sample(seed=key_act)
        log_prob = policy.log_prob(action)
    env_keys = jax.random.split(key_env, num_envs) if batched else key_env
    env_state, transition = over_envs(env.step)(env_keys, env_state, action)
    return env_state, transition, Acted(avail=avail, action=action, log_prob=log_prob, hidden=hidden)

