"""TD(lambda) returns and advantages as small pure functions (rlax style).

Time is the leading axis ``[T, ...]``; trailing axes (environments, agents) broadcast.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def lambda_returns(
    rewards: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    episode_end: chex.Array,
    gamma: float,
    lam: float,
) -> chex.Array:
    """TD(lambda) returns ``[T, ...]`` with separate termination and truncation.

    G_t = r_t + gamma (1 - term_t) [next_v_t + lam (1 - end_t) (G_{t+1} - next_v_t)].

    Args:
      rewards: ``[T, ...]`` r_t.
      next_values: ``[T, ...]`` bootstrap value of the state the step reached (before any reset);
        ignored where ``terminated``.
      terminated: ``[T, ...]`` the step ended the episode in a terminal state (no bootstrap).
      episode_end: ``[T, ...]`` the step ended the episode for any reason (termination or time
        limit): the lambda-recursion is cut there, a truncated step still bootstraps on next_values.
      gamma, lam: discount and lambda.
    """
    not_term = 1.0 - terminated.astype(rewards.dtype)
    carry_on = lam * (1.0 - episode_end.astype(rewards.dtype))

    def step(g_next, xs):
        r, v, nt, c = xs
        g = r + gamma * nt * (v + c * (g_next - v))
        return g, g

    _, returns = jax.lax.scan(
        step, next_values[-1], (rewards, next_values, not_term, carry_on), reverse=True
    )
    return returns


def gae(
    rewards: chex.Array,
    values: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    episode_end: chex.Array,
    gamma: float,
    lam: float,
) -> tuple[chex.Array, chex.Array]:
    """Generalised advantage estimation; returns (advantages, lambda-returns), both ``[T, ...]``.

    The advantage is the lambda-return minus ``values``, i.e. the lam-weighted sum of TD errors
    delta_t = r_t + gamma (1 - term_t) next_v_t - v_t, cut at episode ends.
    """
    returns = lambda_returns(rewards, next_values, terminated, episode_end, gamma, lam)
    return returns - values, returns


def expected_value(q_all: chex.Array, probs: chex.Array) -> chex.Array:
    """V(s) = sum_a pi(a) Q(s, a): ``[..., A]`` x ``[..., A]`` -> ``[...]``."""
    return jnp.sum(q_all * probs, axis=-1)


def take_action(values: chex.Array, actions: chex.Array) -> chex.Array:
    """``values [..., A]`` at integer ``actions [...]`` -> ``[...]``."""
    return jnp.take_along_axis(values, actions[..., None], axis=-1)[..., 0]


def counterfactual_advantage(q_all: chex.Array, probs: chex.Array, actions: chex.Array) -> chex.Array:
    """COMA-style A = Q(s, a) - sum_b pi(b) Q(s, b); the baseline does not depend on a."""
    return take_action(q_all, actions) - expected_value(q_all, probs)
