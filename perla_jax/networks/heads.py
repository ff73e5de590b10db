"""Policy heads: an actor network bundled with the distribution its outputs parameterise (Brax's style: a
distribution object, not a subclass per action kind). ``make_policy_head`` is the one place that picks the
discrete or the continuous head."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import chex
import distrax
import jax.numpy as jnp
import numpy as np

from perla_jax.networks.continuous import GaussianActor, MaskedDiagNormal
from perla_jax.networks.discrete import Actor, masked_categorical


@dataclasses.dataclass(frozen=True)
class CategoricalHead:
    """Discrete actions: logits ``[..., A]`` -> a categorical masked by the available actions."""

    module: Actor

    event_ndim = 0  # an action is a scalar index

    def distribution(self, logits: chex.Array, avail: chex.Array | None) -> distrax.Categorical:
        return masked_categorical(logits, avail)


@dataclasses.dataclass(frozen=True)
class GaussianHead:
    """Box actions: (mean, log-std) ``[..., A]`` -> a diagonal Gaussian without its padded dimensions.

    The discrete availability mask does not apply; ``action_mask [N, A]`` marks each agent's real dimensions.
    """

    module: GaussianActor
    action_mask: tuple[tuple[bool, ...], ...]  # [N, A], as tuples so the head stays hashable

    event_ndim = 1  # an action is a vector [A]

    def distribution(self, out: tuple[chex.Array, chex.Array], avail: chex.Array | None) -> MaskedDiagNormal:
        del avail
        mean, log_std = out
        return MaskedDiagNormal(mean, jnp.exp(log_std), jnp.asarray(self.action_mask))


PolicyHead = CategoricalHead | GaussianHead


def make_policy_head(env: Any, hidden: Sequence[int], activation: str) -> PolicyHead:
    """The head for ``env``'s action space (``env.continuous``), with MLP layers ``hidden``."""
    if env.continuous:
        mask = tuple(tuple(bool(v) for v in row) for row in np.asarray(env.action_mask))
        return GaussianHead(GaussianActor(env.action_dim, hidden, activation), mask)
    return CategoricalHead(Actor(env.num_actions, hidden, activation))
