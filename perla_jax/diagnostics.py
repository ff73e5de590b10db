"""Training diagnostics beyond the losses: how noisy the policy gradient is, and how much of its regression
targets' variance the critic explains.

Policy-gradient spread: with ``E`` environments, the update's gradient is the mean of E per-environment estimates
g_e (each the gradient of mean_{t, i} A_{t,i} log pi_i(a_{t,i}) over that environment's steps and agents), at the
rollout's parameters. ``pg_var`` is the trace of their covariance, sum_p Var_e(g_{e,p}) (ddof=1, unbiased);
``pg_snr`` is ||g||^2 / (tr Cov / E), the squared norm of the expected batch gradient over the variance of its
estimate (see ``gradient_spread``). The advantages are those the PPO loss uses: normalised (``losses.normalise``),
here over the whole batch where the loss normalises each minibatch, so estimators that differ only in scale report
the same spread (see ``policy_gradient_spread``).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from perla_jax.agents import Agents
from perla_jax.losses import normalise
from perla_jax.types import Trajectory

# Var(targets) at or below this fraction of mean(targets^2) counts as none: float32 rounding of constant targets
# leaves a relative variance near 1e-14, so this is targets whose spread is under 1e-5 of their size.
CONSTANT_TARGETS = 1e-10


def per_env_policy_gradients(
    agents: Agents, params: chex.ArrayTree, traj: Trajectory, advantages: chex.Array, hidden0: chex.Array | None
) -> chex.ArrayTree:
    """Per-environment gradients, every leaf ``[E, ...]``, from a rollout ``traj [T, E, ...]``, its advantages
    ``[T, E, N]`` (used as given) and the recurrent actor's hidden state at the rollout's start ``[E, N, H]``
    (None: feed-forward)."""

    def surrogate(p, obs, first, avail, action, adv, h0):
        policy = agents.actor_sequence(p, h0, obs[:, None], first[:, None], avail[:, None])  # one env: E = 1
        return jnp.mean(adv * policy.log_prob(action[:, None])[:, 0])

    in_axes = (None, 1, 1, 1, 1, 1, None if hidden0 is None else 0)
    h0 = None if hidden0 is None else hidden0[:, None]  # [E, 1, N, H]: each env keeps an E axis of one
    grad = jax.vmap(jax.grad(surrogate), in_axes=in_axes)
    return grad(params, traj.obs, traj.first, traj.avail, traj.action, advantages, h0)


def gradient_spread(grads: chex.ArrayTree) -> tuple[chex.Array, chex.Array]:
    """(pg_var, pg_snr) of E gradient estimates g_e, every leaf ``[E, ...]``: the trace of their covariance, and
    ||mean_e g_e||^2 / (pg_var / E) - 1.

    E ||mean_e g_e||^2 = ||g||^2 + tr Cov / E, so the squared norm alone over the noise estimates 1 + the true
    signal-to-noise ratio ||g||^2 / (tr Cov / E); subtracting 1 makes the numerator an unbiased estimate of
    ||g||^2, and the ratio a consistent one of the true SNR. It is ~0 on pure noise and can be negative there.
    """
    flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(grads)], axis=1)  # [E, P]
    num = flat.shape[0]
    trace = jnp.sum(jnp.var(flat, axis=0, ddof=1))
    mean = jnp.mean(flat, axis=0)
    return trace, jnp.sum(mean**2) / (trace / num) - 1.0


def policy_gradient_spread(
    agents: Agents, params: chex.ArrayTree, traj: Trajectory, advantages: chex.Array, hidden0: chex.Array | None
) -> tuple[chex.Array, chex.Array]:
    """(pg_var, pg_snr) of a rollout (arguments as in ``per_env_policy_gradients``), with the advantages
    ``[T, E, N]`` normalised as the PPO loss does (``losses.normalise``). The loss normalises each minibatch;
    this uses the whole batch's mean and standard deviation, one normalisation for the E estimates it compares."""
    grads = per_env_policy_gradients(agents, params, traj, normalise(advantages), hidden0)
    return gradient_spread(grads)


def explained_variance(targets: chex.Array, predictions: chex.Array) -> chex.Array:
    """1 - Var(targets - predictions) / Var(targets) over every element (``[T, E, N]`` -> ``[]``): 1 for exact
    predictions, 0 for the targets' mean, negative for worse; a constant offset is not penalised.

    NaN where Var(targets) is ~0 (``CONSTANT_TARGETS``): there is nothing to explain, and the ratio would be
    rounding noise over rounding noise, a huge meaningless number.
    """
    var_targets = jnp.var(targets)
    constant = var_targets <= CONSTANT_TARGETS * jnp.mean(targets**2)
    ratio = jnp.var(targets - predictions) / jnp.where(constant, 1.0, var_targets)
    return jnp.where(constant, jnp.nan, 1.0 - ratio)
