"""How noisy the policy gradient is: per-environment policy-gradient estimates of one rollout, at the rollout's
parameters, and their spread.

With ``E`` environments, the update's gradient is the mean of E per-environment estimates g_e (each the gradient
of mean_{t, i} A_{t,i} log pi_i(a_{t,i}) over that environment's steps and agents). ``pg_var`` is the trace of
their covariance, sum_p Var_e(g_{e,p}); ``pg_snr`` is ||mean_e g_e||^2 / (pg_var / E), the squared norm of the
batch gradient over the variance of its estimate. Advantages enter unnormalised, so estimators with the same
expectation (``td``, ``perla_cv``) compare directly.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from perla_jax.agents import Agents
from perla_jax.types import Trajectory


def per_env_policy_gradients(
    agents: Agents, params: chex.ArrayTree, traj: Trajectory, advantages: chex.Array, hidden0: chex.Array | None
) -> chex.ArrayTree:
    """Per-environment gradients, every leaf ``[E, ...]``, from a rollout ``traj [T, E, ...]``, its advantages
    ``[T, E, N]`` and the recurrent actor's hidden state at the rollout's start ``[E, N, H]`` (None: feed-forward)."""

    def surrogate(p, obs, first, avail, action, adv, h0):
        policy = agents.actor_sequence(p, h0, obs[:, None], first[:, None], avail[:, None])  # one env: E = 1
        return jnp.mean(adv * policy.log_prob(action[:, None])[:, 0])

    in_axes = (None, 1, 1, 1, 1, 1, None if hidden0 is None else 0)
    h0 = None if hidden0 is None else hidden0[:, None]  # [E, 1, N, H]: each env keeps an E axis of one
    grad = jax.vmap(jax.grad(surrogate), in_axes=in_axes)
    return grad(params, traj.obs, traj.first, traj.avail, traj.action, advantages, h0)


def gradient_spread(grads: chex.ArrayTree) -> tuple[chex.Array, chex.Array]:
    """(trace of the covariance over the leading axis E, signal-to-noise ratio of their mean), as defined in the
    module docstring; every leaf ``[E, ...]``."""
    flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(grads)], axis=1)  # [E, P]
    num = flat.shape[0]
    trace = jnp.sum(jnp.var(flat, axis=0, ddof=1))
    mean = jnp.mean(flat, axis=0)
    return trace, jnp.sum(mean**2) / (trace / num)
