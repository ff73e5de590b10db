"""Layers shared by every network: orthogonally initialised dense layers (as in JaxMARL's and PureJaxRL's PPO),
the MLP, the state-value head and one-hot agent ids."""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import constant, orthogonal

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


def dense(features: int, scale: float = np.sqrt(2), use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=constant(0.0), use_bias=use_bias)


def pre_activation(layers, activation: str, x: chex.Array) -> chex.Array:
    """Dense ``layers`` with ``activation`` between them, the last one's output left before its activation (where
    another input is added to it first)."""
    act = ACTIVATIONS[activation]
    for layer in layers[:-1]:
        x = act(layer(x))
    return layers[-1](x)


def dense_at(params: chex.ArrayTree, hidden: chex.Array, actions: chex.Array) -> chex.Array:
    """A dense layer's output at one column per row, without computing the others: ``params`` its kernel
    ``[H, A]`` and bias, ``hidden [..., K, H]``, ``actions [...]`` (ints) -> ``[..., K]``."""
    columns = jnp.moveaxis(params["kernel"][:, actions], 0, -1)  # [..., H]
    return jnp.einsum("...kh,...h->...k", hidden, columns) + params["bias"][actions][..., None]


class MLP(nn.Module):
    hidden: Sequence[int]
    out: int
    out_scale: float
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        act = ACTIVATIONS[self.activation]
        for h in self.hidden:
            x = act(dense(h)(x))
        return dense(self.out, self.out_scale)(x)


class VCritic(nn.Module):
    """State-value critic: input ``[..., F]`` -> ``[...]``."""

    hidden: Sequence[int]
    activation: str = "tanh"
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        return MLP(self.hidden, 1, self.out_scale, self.activation)(x)[..., 0]


def agent_ids(n: int) -> chex.Array:
    return jnp.eye(n, dtype=jnp.float32)
