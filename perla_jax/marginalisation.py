"""PERLA's marginalisation of a centralised critic over the other agents' current policies.

Q^_i(s, a_i) = 1/K sum_k Q(s, a_i, a_-i^(k)),   a^(k) ~ pi(. | tau), independently for every k.
"""

from __future__ import annotations

from typing import Callable

import chex
import distrax
import jax
import jax.numpy as jnp

from perla_jax.networks import QCritic, others_one_hot


def marginalise(
    q_fn: Callable[[chex.Array, chex.Array], chex.Array],
    own_actions: chex.Array,
    joint_samples: chex.Array,
) -> chex.Array:
    """Marginal critic value of every agent's own action at one state.

    Args:
      q_fn: ``q_fn(i, joint_action [N, ...]) -> []``, agent i's critic value for a joint action.
      own_actions: ``[N, ...]`` the actions the agents took (int for discrete, float for continuous).
      joint_samples: ``[K, N, ...]`` joint actions drawn from the current policies.

    Returns:
      ``[N]``: Q^_i = 1/K sum_k q_fn(i, joint_samples[k] with row i replaced by own_actions[i]).
    """
    n = own_actions.shape[0]

    def one(i: chex.Array, sample: chex.Array) -> chex.Array:
        return q_fn(i, sample.at[i].set(own_actions[i]))

    per_sample = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))(jnp.arange(n), joint_samples)
    return per_sample.mean(axis=0)


def sample_joint_actions(key: chex.PRNGKey, policy: distrax.Distribution, k: int) -> chex.Array:
    """K independent joint actions from the agents' current policies.

    ``policy`` has batch shape ``[..., N]``; the result is ``[K, ..., N]``: one independent draw per
    sample, per agent and per batch element (environment, step).
    """
    return policy.sample(seed=key, sample_shape=(k,))


def q_head_samples(
    critic: QCritic,
    params: chex.ArrayTree,
    features: chex.Array,
    joint_samples: chex.Array,
    num_actions: int,
) -> chex.Array:
    """Critic values over every own action for each sampled joint action of the others.

    Args:
      features: ``[..., N, F]`` critic input of each agent at the state (state or observation, plus id).
      joint_samples: ``[..., K, N]`` sampled joint actions; agent i ignores its own entry (slot blanked).

    Returns:
      ``[..., N, K, A]``. Its mean over K is Q^_i(s, .) for all own actions at the cost of K passes.
    """
    encoded = critic.apply(params, features, method=QCritic.encode)  # [..., N, H], shared by the K samples
    others = others_one_hot(joint_samples, num_actions)  # [..., K, N, N*A]
    others = jnp.swapaxes(others, -3, -2)  # [..., N, K, N*A]
    return critic.apply(params, encoded[..., None, :], others, method=QCritic.head)


def marginal_q(per_sample: chex.Array) -> tuple[chex.Array, chex.Array]:
    """``[..., N, K, A]`` -> (Q^ over own actions ``[..., N, A]``, variance over K ``[..., N, A]``)."""
    return per_sample.mean(axis=-2), per_sample.var(axis=-2)
