"""PERLA's marginalisation of a centralised critic over the other agents' current policies, for discrete and Box
actions.

Q^_i(s, a_i) = 1/K sum_k Q(s, a_i, a_-i^(k)),   a^(k) ~ pi(. | tau), independently for every k.
"""

from __future__ import annotations

from typing import Callable

import chex
import distrax
import jax
import jax.numpy as jnp

from perla_jax.networks.continuous import ContinuousQNetwork
from perla_jax.networks.discrete import QCritic
from perla_jax.networks.factored import FactoredContinuousQ, FactoredQCritic

# The discrete Q-critics: both give ``hidden_samples``, a linear ``output`` and ``output_at``.
QNetwork = QCritic | FactoredQCritic
# The Box-action Q-critics: ``q_samples`` over K joint samples crossed with M own actions.
BoxQNetwork = ContinuousQNetwork | FactoredContinuousQ


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
    sample, per agent and per batch element (environment, step). Categorical policies are sampled by
    inverting their CDF with one uniform per draw (the Gumbel-max trick behind ``policy.sample`` needs A
    of them, and this sampler runs K times per agent-step); zero-probability actions are never drawn.
    """
    if not isinstance(policy, distrax.Categorical):
        return policy.sample(seed=key, sample_shape=(k,))
    cdf = jnp.cumsum(policy.probs, axis=-1)  # [..., N, A]
    # u in (0, 1] scaled to the CDF's last entry, so rounding in the cumulative sum cannot push a draw
    # past the end or onto a zero-probability action.
    u = (1.0 - jax.random.uniform(key, (k, *cdf.shape[:-1]))) * cdf[..., -1]
    return jnp.sum(cdf < u[..., None], axis=-1).astype(jnp.int32)


def last_layer_samples(
    critic: QNetwork, params: chex.ArrayTree, features: chex.Array, joint_samples: chex.Array
) -> chex.Array:
    """The critic's last hidden layer for each sampled joint action of the others.

    Args:
      features: ``[..., N, F]`` critic input of each agent at the state (state or observation, plus id).
      joint_samples: ``[..., K, N]`` sampled joint actions; agent i ignores its own entry (slot blanked).

    Returns:
      ``[..., N, K, H]``; ``critic.output`` of its mean over K is Q^_i(s, .) over every own action.
    """
    return critic.apply(params, features, joint_samples, method="hidden_samples")


def q_head_samples(
    critic: QNetwork, params: chex.ArrayTree, features: chex.Array, joint_samples: chex.Array
) -> chex.Array:
    """Critic values over every own action for each sampled joint action: ``[..., N, K, A]`` (inputs as
    in ``last_layer_samples``). Its mean over K is Q^_i(s, .) at the cost of K passes, not K*A."""
    hidden = last_layer_samples(critic, params, features, joint_samples)
    return critic.apply(params, hidden, method="output")


def marginal_q_head(
    critic: QNetwork,
    params: chex.ArrayTree,
    features: chex.Array,
    joint_samples: chex.Array,
    own_actions: chex.Array | None = None,
) -> tuple[chex.Array, chex.Array | None]:
    """Q^_i(s, .) over every own action, ``[..., N, A]``, and, given ``own_actions [..., N]``, the
    variance over the K samples of Q(s, a_i, a_-i^(k)) at those actions, ``[..., N]``.

    Equal to ``marginal_q(q_head_samples(...))`` but applies the (linear) output layer once to the mean
    hidden layer instead of K times.
    """
    hidden = last_layer_samples(critic, params, features, joint_samples)  # [..., N, K, H]
    q_hat = critic.apply(params, hidden.mean(axis=-2), method="output")
    if own_actions is None:
        return q_hat, None
    per_sample = critic.apply(params, hidden, own_actions, method="output_at")  # [..., N, K]
    return q_hat, sample_variance(per_sample, axis=-1)


def marginal_and_joint_q(
    critic: QNetwork,
    params: chex.ArrayTree,
    features: chex.Array,
    joint_samples: chex.Array,
    joint_action: chex.Array,
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """``marginal_q_head`` at the actions taken, ``joint_action [..., N]``, plus Q(s, a_i, a_-i) at that joint
    action ``[..., N]``: (Q^_i(s, .) ``[..., N, A]``, variance over the K samples ``[..., N]``, Q at the joint
    action ``[..., N]``). The joint action taken rides along as a (K+1)-th sample, so the state's part of the
    critic (for the factored critic: the own path and the others' table) is computed once for both."""
    k = joint_samples.shape[-2]
    with_taken = jnp.concatenate([joint_samples, joint_action[..., None, :]], axis=-2)  # [..., K+1, N]
    hidden = last_layer_samples(critic, params, features, with_taken)  # [..., N, K+1, H]
    q_hat = critic.apply(params, hidden[..., :k, :].mean(axis=-2), method="output")
    # One product over all K+1 rows, split after: the K samples' spread and Q at the taken joint action.
    per_sample = critic.apply(params, hidden, joint_action, method="output_at")  # [..., N, K+1]
    return q_hat, sample_variance(per_sample[..., :k], axis=-1), per_sample[..., k]


def marginal_q_samples(
    critic: BoxQNetwork,
    params: chex.ArrayTree,
    features: chex.Array,
    joint_samples: chex.Array,
    own_actions: chex.Array,
) -> chex.Array:
    """Q(s, a_i^(m), a_-i^(k)) for every agent, own sample and joint sample: ``[..., N, M, K]``.

    Args:
      features: ``[..., N, F]`` each agent's critic input.
      joint_samples: ``[..., K, N, A]`` joint actions; agent i's own slot is replaced by its own action.
      own_actions: ``[..., N, M, A]`` M own actions per agent.
    """
    return critic.apply(params, features, joint_samples, own_actions, method="q_samples")


def sample_variance(per_sample: chex.Array, axis: int) -> chex.Array:
    """Unbiased (ddof = 1) variance over the K samples on ``axis``; 0 for K = 1, where it is undefined (one
    sample has no spread to measure, and a NaN would read as a diverged run)."""
    k = per_sample.shape[axis]
    return per_sample.var(axis=axis, ddof=min(1, k - 1))


def marginal_q(per_sample: chex.Array) -> tuple[chex.Array, chex.Array]:
    """``[..., N, K, A]`` -> (Q^ over own actions ``[..., N, A]``, unbiased variance over K ``[..., N, A]``)."""
    return per_sample.mean(axis=-2), sample_variance(per_sample, axis=-2)
