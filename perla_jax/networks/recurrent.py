"""Recurrent torsos (GRU) for ``Config.network = "rnn"``, and scanning them over rollout sequences.

A recurrent network is a torso (dense embedding, activation, GRU cell) followed by the feed-forward head of
``networks.discrete`` / ``networks.continuous``: the torso's output replaces the raw input. Its hidden state is ``[..., N, H]`` (one per agent,
environment and seed) and is reset to zeros at the first step of every episode, as in JaxMARL's rnn baselines.
The PERLA Q-critic keeps the recurrence in its state path only: the others' sampled actions enter after the
GRU (``critic_action_layer="last"``), so the K samples of one step share one hidden state and the
marginalisation is unchanged.

Sequences are time-major: ``xs [T, ..., N, F]`` with ``first [T, ...]`` true where ``xs[t]`` is the first
observation of an episode.
"""

from __future__ import annotations

from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import constant, orthogonal

from perla_jax.networks.layers import ACTIVATIONS

StepFn = Callable[[chex.Array, chex.Array], tuple[chex.Array, chex.Array]]


class GRUTorso(nn.Module):
    """One step: ``(hidden [..., H], x [..., F]) -> (hidden', output [..., H])``; the output is the new hidden."""

    width: int
    activation: str = "tanh"

    @nn.compact
    def __call__(self, hidden: chex.Array, x: chex.Array) -> tuple[chex.Array, chex.Array]:
        act = ACTIVATIONS[self.activation]
        embedded = act(nn.Dense(self.width, kernel_init=orthogonal(2**0.5), bias_init=constant(0.0))(x))
        hidden, out = nn.GRUCell(self.width)(hidden, embedded)
        return hidden, out


def reset_where(first: chex.Array, hidden: chex.Array) -> chex.Array:
    """Zeros the hidden state ``[..., N, H]`` wherever ``first [...]`` is true."""
    mask = first.reshape(first.shape + (1,) * (hidden.ndim - first.ndim))
    return jnp.where(mask, jnp.zeros_like(hidden), hidden)


def scan_sequence(step: StepFn, hidden0: chex.Array, xs: chex.Array, first: chex.Array) -> tuple[chex.Array, chex.Array]:
    """Runs ``step`` over time from ``hidden0 [..., N, H]``, resetting at episode starts.

    Returns ``(hidden after the last step [..., N, H], outputs [T, ..., N, H])``."""

    def body(hidden, inputs):
        x, f = inputs
        return step(reset_where(f, hidden), x)

    return jax.lax.scan(body, hidden0, (xs, first))


def step_after(step: StepFn, outputs: chex.Array, final_xs: chex.Array) -> chex.Array:
    """Outputs ``[T, ..., N, H]`` for the observations each step reached (before any reset): one more GRU
    step from the hidden state after step t, with no reset, for every t at once. Where an episode went on,
    this equals the sequence's own output at t+1."""
    return step(outputs, final_xs)[1]


def replay_rollout(
    step: StepFn, hidden0: chex.Array, xs: chex.Array, first: chex.Array, final_xs: chex.Array,
    select: Callable[[chex.Array], chex.Array] | None = None,
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """A rollout replayed through a recurrent torso, for the actor and the critics alike: from ``hidden0
    [..., N, H]`` over its inputs ``xs [T, ..., N, F]``, then one step further into the inputs of the states the
    steps reached, ``final_xs`` (``step_after``). ``select`` picks the steps those are given for (e.g. the
    ``[C, ...]`` steps that need a bootstrap value); default every step.

    Returns ``(hidden after the rollout [..., N, H], outputs [T, ..., N, H], outputs at the reached states)``."""
    last, out = scan_sequence(step, hidden0, xs, first)
    return last, out, step_after(step, out if select is None else select(out), final_xs)
