"""Continuous actions: masked diagonal Gaussian policies and PERLA's Q-critic on real-valued joint actions.

Shapes: ``[..., N, O]`` observations, ``[..., N, A]`` actions (A = the largest action size, padded dims
masked). The critic is Q(s, a_i, a_-i) on real vectors: an MLP on ``concat(critic features, joint action
[N*A])`` with agent i's own action in its slot (its marginalisation: ``perla_jax.critics.continuous_q``).
"""

from __future__ import annotations

from typing import Sequence

import chex
import distrax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import orthogonal

from perla_jax.networks.layers import ACTIVATIONS, MLP, dense


class MaskedDiagNormal(distrax.Distribution):
    """Diagonal Gaussian over ``[..., A]`` whose masked-out (padded) dimensions do not exist.

    Samples are 0 on padded dimensions; log-probability and entropy sum over real dimensions only, so a
    padded dimension changes neither, whatever its mean, scale or value.
    """

    def __init__(self, loc: chex.Array, scale: chex.Array, mask: chex.Array):
        self._normal = distrax.Normal(loc, scale)
        self._mask = jnp.broadcast_to(mask, self._normal.batch_shape).astype(loc.dtype)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self._normal.batch_shape[-1:]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self._normal.batch_shape[:-1]

    @property
    def mask(self) -> chex.Array:
        return self._mask

    def _sample_n(self, key: chex.PRNGKey, n: int) -> chex.Array:
        return self._normal.sample(seed=key, sample_shape=(n,)) * self._mask

    def log_prob(self, value: chex.Array) -> chex.Array:
        return jnp.sum(self._normal.log_prob(value) * self._mask, axis=-1)

    def entropy(self) -> chex.Array:
        return jnp.sum(self._normal.entropy() * self._mask, axis=-1)

    def mean(self) -> chex.Array:
        return self._normal.loc * self._mask

    def mode(self) -> chex.Array:
        return self.mean()


class GaussianActor(nn.Module):
    """Observation ``[..., O]`` -> (mean ``[..., A]``, log-std ``[..., A]``).

    The log-std is a learned vector independent of the state, as in the usual PPO for MuJoCo: exploration
    noise is then a global property that the clipped PPO objective anneals smoothly, and it cannot
    collapse or blow up in rarely visited states the way a state-dependent head can early in training.
    """

    action_dim: int
    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: chex.Array) -> tuple[chex.Array, chex.Array]:
        mean = MLP(self.hidden, self.action_dim, 0.01, self.activation)(obs)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return mean, jnp.broadcast_to(log_std, mean.shape)


class ContinuousQNetwork(nn.Module):
    """Q(s, a) on real joint actions: ``__call__(features [..., F], joint [..., N, A]) -> [...]``, an MLP on
    ``concat(features, joint.reshape(N*A))``.

    The first layer is split into a state part and one action block per agent slot, so the K*M joint
    actions of a marginal share the state part and each sampled action is projected once
    (``marginal_q_samples``); the numbers are those of the plain MLP (tested).
    """

    num_agents: int
    action_dim: int
    hidden: Sequence[int]
    activation: str = "tanh"
    out_scale: float = 1.0

    def setup(self):
        self.state_in = dense(self.hidden[0])
        shape = (self.num_agents * self.action_dim, self.hidden[0])
        self.action_kernel = self.param("action_kernel", orthogonal(np.sqrt(2)), shape)
        self.layers = [dense(h) for h in self.hidden[1:]]
        self.out = dense(1, self.out_scale)

    def __call__(self, features: chex.Array, joint: chex.Array) -> chex.Array:
        flat = joint.reshape(*joint.shape[:-2], -1)
        return self.head(self.state_in(features) + flat @ self.action_kernel)

    def encode(self, features: chex.Array) -> chex.Array:
        return self.state_in(features)

    def action_rows(self, actions: chex.Array) -> chex.Array:
        """``[..., N, A]`` -> each agent slot's first-layer contribution ``[..., N, H]``."""
        kernel = self.action_kernel.reshape(self.num_agents, self.action_dim, -1)
        return jnp.einsum("...na,nah->...nh", actions, kernel)

    def q_samples(self, features: chex.Array, joint_samples: chex.Array, own_actions: chex.Array) -> chex.Array:
        """Q(s, a_i^(m), a_-i^(k)) ``[..., N, M, K]`` from ``features [..., N, F]``, ``joint_samples
        [..., K, N, A]`` (agent i's own slot replaced by its own action) and ``own_actions [..., N, M, A]``: the
        state part and every sampled action's first-layer rows are computed once."""
        encoded = self.encode(features)  # [..., N, H]
        rows = self.action_rows(joint_samples)  # [..., K, N, H]
        others = jnp.swapaxes(rows.sum(axis=-2, keepdims=True) - rows, -3, -2)  # [..., N, K, H] slot i removed
        own = jnp.swapaxes(self.action_rows(jnp.swapaxes(own_actions, -3, -2)), -3, -2)  # [..., N, M, H]
        return self.head(encoded[..., :, None, None, :] + own[..., :, :, None, :] + others[..., :, None, :, :])

    def head(self, pre: chex.Array) -> chex.Array:
        act = ACTIVATIONS[self.activation]
        x = act(pre)
        for layer in self.layers:
            x = act(layer(x))
        return self.out(x)[..., 0]
