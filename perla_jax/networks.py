"""Actor and critics (flax linen), with orthogonal initialisation as in JaxMARL's and PureJaxRL's PPO."""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import constant, orthogonal

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


def _dense(features: int, scale: float = np.sqrt(2), use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=constant(0.0), use_bias=use_bias)


class MLP(nn.Module):
    hidden: Sequence[int]
    out: int
    out_scale: float
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        act = _ACTIVATIONS[self.activation]
        for h in self.hidden:
            x = act(_dense(h)(x))
        return _dense(self.out, self.out_scale)(x)


class Actor(nn.Module):
    """Categorical policy network: observation ``[..., O]`` -> logits ``[..., A]``."""

    num_actions: int
    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: chex.Array) -> chex.Array:
        return MLP(self.hidden, self.num_actions, 0.01, self.activation)(obs)


class VCritic(nn.Module):
    """State-value critic: input ``[..., F]`` -> ``[...]``."""

    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        return MLP(self.hidden, 1, 1.0, self.activation)(x)[..., 0]


class QCritic(nn.Module):
    """COMA-layout action-value critic: (state features, others' one-hot actions) -> one value per own action.

    Mathematically an MLP on ``concat(features, others)``. Its first layer is split into a state part and
    an action part because a dense layer on a concatenation is the sum of dense layers on the pieces: the
    state part is then computed once and shared by the K sampled joint actions (``encode`` / ``head``).
    """

    num_actions: int
    hidden: Sequence[int]
    activation: str = "tanh"

    def setup(self) -> None:
        self.state_in = _dense(self.hidden[0])
        self.action_in = _dense(self.hidden[0], use_bias=False)
        self.layers = [_dense(h) for h in self.hidden[1:]]
        self.out = _dense(self.num_actions, 1.0)

    def encode(self, features: chex.Array) -> chex.Array:
        """``[..., F]`` -> first-layer pre-activation of the state part ``[..., H]``."""
        return self.state_in(features)

    def head(self, encoded: chex.Array, others: chex.Array) -> chex.Array:
        """``encoded [..., H]``, ``others [..., N*A]`` -> Q over own actions ``[..., A]``."""
        act = _ACTIVATIONS[self.activation]
        x = act(encoded + self.action_in(others))
        for layer in self.layers:
            x = act(layer(x))
        return self.out(x)

    def __call__(self, features: chex.Array, others: chex.Array) -> chex.Array:
        return self.head(self.encode(features), others)


def others_one_hot(joint_actions: chex.Array, num_actions: int) -> chex.Array:
    """Joint actions ``[..., N]`` -> per-agent critic input ``[..., N(i), N*A]``: the others' one-hot
    actions with agent i's own slot blanked (all zeros)."""
    n = joint_actions.shape[-1]
    one_hot = jnp.eye(num_actions, dtype=jnp.float32)[joint_actions]  # [..., N(j), A]
    mask = 1.0 - jnp.eye(n, dtype=jnp.float32)  # [N(i), N(j)]
    blanked = one_hot[..., None, :, :] * mask[:, :, None]  # [..., N(i), N(j), A]
    return blanked.reshape(*blanked.shape[:-2], n * num_actions)


def agent_ids(n: int) -> chex.Array:
    return jnp.eye(n, dtype=jnp.float32)
