"""PPO's clipped surrogate and clipped value losses."""

from __future__ import annotations

import chex
import jax.numpy as jnp


def normalise(x: chex.Array, eps: float = 1e-8) -> chex.Array:
    return (x - x.mean()) / (x.std() + eps)


def ppo_actor_loss(
    log_prob: chex.Array,
    old_log_prob: chex.Array,
    advantages: chex.Array,
    entropy: chex.Array,
    clip_eps: float,
    ent_coef: float,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Clipped surrogate over any batch shape (e.g. ``[B, N]``); advantages arrive normalised."""
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    pg_loss = -jnp.minimum(unclipped, clipped).mean()
    ent = entropy.mean()
    stats = {
        "actor_loss": pg_loss,
        "entropy": ent,
        # The low-variance estimator (ratio - 1) - log ratio of KL(old || new).
        "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
        "clip_frac": (jnp.abs(ratio - 1.0) > clip_eps).mean(),
    }
    return pg_loss - ent_coef * ent, stats


def clipped_value_loss(
    prediction: chex.Array, old_prediction: chex.Array, target: chex.Array, clip_eps: float
) -> chex.Array:
    """0.5 max((v - G)^2, (v_old + clip(v - v_old) - G)^2), as in PPO implementations."""
    clipped = old_prediction + jnp.clip(prediction - old_prediction, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum((prediction - target) ** 2, (clipped - target) ** 2).mean()
