"""The interface every critic kind implements, and the TD(lambda) plumbing they share.

A critic is used twice per update: ``estimate`` once after the rollout (values, advantages, regression
targets, forward only), and ``predict`` inside the minibatch loss (the prediction that is regressed). The
trainer calls these two and nothing else of a critic.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import chex
import jax
import flax.linen as nn

from perla_jax.advantages import TDLambda
from perla_jax.config import Config
from perla_jax.critics.inputs import CriticInputs
from perla_jax.types import Batch, CriticEstimates, Trajectory
from perla_jax.value_norm import ValueNorm


class Critic(Protocol):
    cfg: Config
    network: nn.Module  # the head; its ``apply`` goes into the critic's TrainState
    inputs: CriticInputs

    def init(self, key: chex.PRNGKey) -> chex.ArrayTree:
        """Critic parameters (torso and head)."""

    def estimate(
        self,
        actor_params: chex.ArrayTree,
        critic_params: chex.ArrayTree,
        traj: Trajectory,
        key: chex.PRNGKey,
        actor_carry: chex.Array | None = None,
        critic_carry: chex.Array | None = None,
        value_norm: ValueNorm | None = None,
    ) -> CriticEstimates:
        """Values, advantages and targets for a rollout ``traj [T, E, ...]``; recurrent networks start from the
        hidden states ``[E, N, H]`` they had at the rollout's first step (default: zeros). With ``value_norm`` the
        network's outputs are standardised values, de-standardised here (``as_values``); every estimate is in
        value units."""

    def predict(self, params: chex.ArrayTree, mb: Batch, start_hidden: chex.Array | None) -> chex.Array:
        """The prediction ``[..., N]`` the loss regresses onto ``mb.targets`` (recurrent: replayed from
        ``start_hidden``), in the network's own units (standardised under ``Config.value_norm``)."""


def td_lambda_of(cfg: Config, traj: Trajectory) -> TDLambda:
    """The TD(lambda) recursions over the rewards and episode ends of ``traj``."""
    return TDLambda(
        rewards=traj.reward, terminated=traj.terminated, ended=traj.terminated | traj.truncated, gamma=cfg.gamma,
        lam=cfg.gae_lambda,
    )


def rollout_lead(traj: Trajectory) -> tuple[int, ...]:
    """The axes between time and agent of a rollout's observations: ``(E,)``."""
    return traj.obs.shape[1:-2]


def as_values(value_norm: ValueNorm | None, outputs: chex.Array) -> chex.Array:
    """A critic network's outputs in value units: de-standardised with ``value_norm``, unchanged without it. Every
    value the estimates use is affine in the output layer (K-sample means, expectations over own actions), so
    de-standardising them equals de-standardising each output."""
    return outputs if value_norm is None else value_norm.denormalise(outputs)


def as_value_variance(value_norm: ValueNorm | None, variance: chex.Array) -> chex.Array:
    """A variance of outputs in value units squared."""
    return variance if value_norm is None else variance * value_norm.scale**2


def over_time_chunks(fn: Callable[..., Any], xs: tuple, chunk: int) -> Any:
    """``fn`` over a rollout's leading time axis ``[L, ...]`` of every array in ``xs`` (None entries pass through),
    ``chunk`` steps at a time (``Config.critic_time_chunk``): the chunk bounds the peak memory of a per-sample critic
    batch, not its values."""
    return jax.lax.map(lambda x: fn(*x), xs, batch_size=min(chunk, jax.tree.leaves(xs)[0].shape[0]))


def or_default(hidden: Any, default: Any) -> Any:
    return default if hidden is None else hidden
