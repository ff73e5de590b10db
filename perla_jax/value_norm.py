"""Value normalisation (``Config.value_norm``): the critic regresses its targets standardised by running
statistics, and its outputs are de-standardised wherever a value is used (MAPPO's ValueNorm, Yu et al. 2022,
"The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games", Section 4 / Appendix).

Why: a team reward averaged over N agents has 1/N-scale differences (the credit game), and MPE's returns are
tens; one critic learning rate and output initialisation cannot suit both. Standardised targets make the
critic's regression scale-free.

Statistics are exponential averages of the targets' mean and variance with MAPPO's weight ``BETA = 0.99999``
per update, debiased by the total weight (so early on they are close to the plain average over the batches seen so
far). Before any update they are the identity (mean 0, std 1).
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

BETA = 0.99999
MIN_VARIANCE = 1e-8  # a floor on the variance: constant targets (a solved game) would otherwise divide by zero


@chex.dataclass(frozen=True)
class ValueNorm:
    """Running statistics of a critic's regression targets, each ``[]``: the debiased exponential averages of their
    mean and variance, and the total weight of the batches seen (0: none yet)."""

    mean: chex.Array
    variance: chex.Array
    weight: chex.Array

    @property
    def location(self) -> chex.Array:
        return self.mean

    @property
    def scale(self) -> chex.Array:
        return jnp.sqrt(jnp.maximum(self.variance, MIN_VARIANCE))

    def normalise(self, x: chex.Array) -> chex.Array:
        """Values -> the critic's standardised space."""
        return (x - self.location) / self.scale

    def denormalise(self, x: chex.Array) -> chex.Array:
        """The critic's outputs -> values."""
        return x * self.scale + self.location

    def update(self, targets: chex.Array) -> "ValueNorm":
        """The statistics after one more batch of targets (any shape, every element counts alike). The batch enters
        with weight alpha = (1 - BETA) / (total weight), merged as centred moments: the same numbers as averaging
        raw second moments, without the cancellation of E[x^2] - E[x]^2 in float32 when the mean dwarfs the spread."""
        weight = BETA * self.weight + (1 - BETA)
        alpha = (1 - BETA) / weight
        batch_mean, batch_var = jnp.mean(targets), jnp.var(targets)
        gap = batch_mean - self.mean
        return ValueNorm(
            mean=self.mean + alpha * gap,
            variance=(1 - alpha) * (self.variance + alpha * gap**2) + alpha * batch_var,
            weight=weight,
        )


def initial_value_norm() -> ValueNorm:
    """The identity (mean 0, variance 1), which the first update replaces entirely (alpha = 1)."""
    return ValueNorm(mean=jnp.zeros((), jnp.float32), variance=jnp.ones((), jnp.float32),
                     weight=jnp.zeros((), jnp.float32))
