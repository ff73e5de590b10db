"""Which steps of a rollout need the value of the state they reached, so a critic evaluates only those.

A TD target bootstraps on V(s'_t), the state step t reached before any reset. Where the episode went on, s'_t is
the next step's state, whose value the critic computes anyway (``advantages.next_step_values`` reuses it); where
the episode terminated, nothing is bootstrapped. Only the truncated steps and the rollout's last step need a value
of their own. Evaluating the critic on all ``T`` reached states doubled the cost of every critic's ``estimate``
(for PERLA's K-sample marginal, its largest part), with half of the values thrown away.

With a time limit of ``horizon`` transitions, truncations of one environment are about ``horizon`` steps apart, so
few fall in a rollout; ``capacity`` bounds them (with the last step) and fixes the shapes. Values outside the
needed steps are 0, which the TD recursions never read.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp


def bootstrap_capacity(time_limit: str, horizon: int | None, num_steps: int) -> int:
    """Steps per environment and rollout that can need V(s'_t): 1 (the last) where the time limit ends the task
    (``time_limit`` other than "bootstrap": no step is truncated); where it truncates, the last step plus one per
    half horizon, ``ceil(T / max(horizon // 2, 1)) + 1`` (the half is a margin: environments count their limit
    differently, jaxmarl's MPE and SMAX allow ``max_steps + 1`` transitions, brax's wrapper ``episode_length``);
    every step when the horizon is unknown (``None``)."""
    if time_limit != "bootstrap":
        return 1
    if horizon is None:
        return num_steps
    return min(num_steps, -(-num_steps // max(horizon // 2, 1)) + 1)


@chex.dataclass(frozen=True)
class BootstrapSteps:
    """The steps ``index [C, E]`` of a rollout ``[T, E, ...]`` whose reached state needs a value: each environment's
    truncated steps and its last step, in time order, padded with the last step. ``overflow []`` is True if some
    environment truncated more often than ``C - 1`` times (see ``put``)."""

    index: chex.Array
    overflow: chex.Array

    def take(self, x: chex.Array) -> chex.Array:
        """``[T, E, ...]`` -> the needed steps ``[C, E, ...]``."""
        index = self.index.reshape(*self.index.shape, *(1,) * (x.ndim - 2))
        return jnp.take_along_axis(x, index, axis=0)

    def put(self, values: chex.Array, num_steps: int) -> chex.Array:
        """Values at the needed steps ``[C, E, ...]`` -> ``[T, E, ...]``, 0 at the other steps. All NaN on overflow,
        so a miscounted capacity shows as a diverged run instead of silently wrong targets."""
        env = jnp.arange(values.shape[1])[None, :]  # [1, E], broadcast against the index [C, E]
        full = jnp.zeros((num_steps, *values.shape[1:]), values.dtype).at[self.index, env].set(values)
        return jnp.where(self.overflow, jnp.nan, full)


def bootstrap_steps(truncated: chex.Array, capacity: int) -> BootstrapSteps:
    """The needed steps of a rollout with truncation flags ``truncated [T, E]`` (see ``BootstrapSteps``)."""
    num_steps = truncated.shape[0]
    needed = truncated | (jnp.arange(num_steps) == num_steps - 1)[:, None]  # [T, E]
    # A stable sort puts the needed steps first, in time order; the rest of the first C rows are filled below.
    order = jnp.argsort(~needed, axis=0, stable=True)[:capacity]  # [C, E]
    count = needed.sum(axis=0)  # [E]
    filled = jnp.arange(capacity)[:, None] < count[None, :]
    index = jnp.where(filled, order, num_steps - 1)
    return BootstrapSteps(index=index, overflow=jnp.any(count > capacity))
