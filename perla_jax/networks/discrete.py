"""Discrete actions: the categorical actor (masked by the available actions) and PERLA's joint-action Q-critic."""

from __future__ import annotations

from typing import Sequence

import chex
import distrax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import orthogonal

from perla_jax.networks.layers import ACTIVATIONS, MLP, dense, dense_at, pre_activation


class Actor(nn.Module):
    """Categorical policy network: observation ``[..., O]`` -> logits ``[..., A]``."""

    num_actions: int
    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: chex.Array) -> chex.Array:
        return MLP(self.hidden, self.num_actions, 0.01, self.activation)(obs)


class QCritic(nn.Module):
    """COMA-layout action-value critic: (state features, others' actions) -> one value per own action.

    Mathematically an MLP on ``concat(features, others' one-hot actions with the own slot blanked)``
    in which the actions feed hidden layer ``action_layer`` (0: the input layer, as in COMA; the last
    hidden layer: late fusion). Three exact rewritings make the K-sample marginal cheap:

    - a dense layer on a concatenation is the sum of dense layers on the pieces, so the state part up
      to the fusion layer (``encode``) is computed once and shared by the K sampled joint actions;
    - a dense layer on a one-hot vector is a row lookup, so the action part is a sum of N-1 embedding
      rows (``embed_others``) instead of a matmul with an ``N*A``-wide input;
    - the output layer is linear, so the mean over K of Q equals the output layer applied to the mean
      over K of the last hidden layer (``hidden`` then ``output``): one output pass per agent, not K.
    """

    num_agents: int
    num_actions: int
    hidden: Sequence[int]
    activation: str = "tanh"
    action_layer: int = 0
    out_scale: float = 1.0

    def setup(self) -> None:
        j = self.action_layer
        self.state_layers = [dense(h) for h in self.hidden[: j + 1]]
        # The kernel of a bias-free dense layer on the others' one-hot actions, [N*A, H_j].
        self.action_kernel = self.param(
            "action_in", orthogonal(np.sqrt(2)), (self.num_agents * self.num_actions, self.hidden[j])
        )
        self.post_layers = [dense(h) for h in self.hidden[j + 1 :]]
        self.out = dense(self.num_actions, self.out_scale)

    def encode(self, features: chex.Array) -> chex.Array:
        """``[..., F]`` -> the state part of the fusion layer's pre-activation ``[..., H_j]``."""
        return pre_activation(self.state_layers, self.activation, features)

    def embed_others(self, joint_actions: chex.Array) -> chex.Array:
        """Joint actions ``[..., N]`` (ints) -> each agent's action part ``[..., N(i), H_j]``: the sum of
        the others' embedding rows, i.e. the dense layer on ``others_one_hot(joint_actions)``."""
        n, a = self.num_agents, self.num_actions
        rows = self.action_kernel.reshape(n, a, -1)[jnp.arange(n), joint_actions]  # [..., N(j), H_j]
        return rows.sum(axis=-2, keepdims=True) - rows

    def hidden_features(self, encoded: chex.Array, embedded: chex.Array) -> chex.Array:
        """``encoded``, ``embedded`` (broadcastable, ``[..., H_j]``) -> last hidden layer ``[..., H_L]``."""
        act = ACTIVATIONS[self.activation]
        x = act(encoded + embedded)
        for layer in self.post_layers:
            x = act(layer(x))
        return x

    def hidden_samples(self, features: chex.Array, joint_samples: chex.Array) -> chex.Array:
        """``features [..., N, F]``, ``joint_samples [..., K, N]`` -> last hidden layer ``[..., N, K, H_L]``; the
        state part is encoded once and shared by the K samples (agent i ignores its own entry)."""
        encoded = self.encode(features)  # [..., N, H_j]
        embedded = jnp.swapaxes(self.embed_others(joint_samples), -3, -2)  # [..., N, K, H_j]
        return self.hidden_features(encoded[..., None, :], embedded)

    def output(self, hidden: chex.Array) -> chex.Array:
        """Last hidden layer ``[..., H_L]`` -> Q over own actions ``[..., A]``."""
        return self.out(hidden)

    def output_at(self, hidden: chex.Array, actions: chex.Array) -> chex.Array:
        """Q at one own action per sample: ``hidden [..., K, H_L]``, ``actions [...]`` -> ``[..., K]``
        (one output column per sample instead of all A)."""
        return dense_at(self.out.variables["params"], hidden, actions)

    def __call__(self, features: chex.Array, joint_actions: chex.Array) -> chex.Array:
        """``features [..., N, F]``, ``joint_actions [..., N]`` -> Q over own actions ``[..., N, A]``
        (agent i's own entry of ``joint_actions`` is ignored)."""
        hidden = self.hidden_features(self.encode(features), self.embed_others(joint_actions))
        return self.output(hidden)


def others_one_hot(joint_actions: chex.Array, num_actions: int) -> chex.Array:
    """Joint actions ``[..., N]`` -> per-agent critic input ``[..., N(i), N*A]``: the others' one-hot
    actions with agent i's own slot blanked (all zeros)."""
    n = joint_actions.shape[-1]
    one_hot = jnp.eye(num_actions, dtype=jnp.float32)[joint_actions]  # [..., N(j), A]
    mask = 1.0 - jnp.eye(n, dtype=jnp.float32)  # [N(i), N(j)]
    blanked = one_hot[..., None, :, :] * mask[:, :, None]  # [..., N(i), N(j), A]
    return blanked.reshape(*blanked.shape[:-2], n * num_actions)


def masked_categorical(logits: chex.Array, avail: chex.Array | None) -> distrax.Categorical:
    """Categorical over ``logits [..., A]`` in which unavailable actions (``avail [..., A]`` false) have
    probability 0; ``avail=None``: every action is available."""
    if avail is not None:
        # The most negative finite logit rather than -inf: probabilities are exactly 0, yet log-probs,
        # entropy and gradients stay finite (no inf - inf).
        logits = jnp.where(avail, logits, jnp.finfo(logits.dtype).min)
    return distrax.Categorical(logits=logits)
