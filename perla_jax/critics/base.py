"""The interface every critic kind implements, and the TD(lambda) plumbing they share.

A critic is used twice per update: ``estimate`` once after the rollout (values, advantages, regression
targets, forward only), and ``predict`` inside the minibatch loss (the prediction that is regressed). The
trainer calls these two and nothing else of a critic.
"""

from __future__ import annotations

from typing import Any, Protocol

import chex
import flax.linen as nn

from perla_jax.advantages import TDLambda
from perla_jax.config import Config
from perla_jax.critics.inputs import CriticInputs
from perla_jax.types import Batch, CriticEstimates, Trajectory


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
        actor_hidden: chex.Array | None = None,
        critic_hidden: chex.Array | None = None,
    ) -> CriticEstimates:
        """Values, advantages and targets for a rollout ``traj [T, E, ...]``; recurrent networks start from the
        hidden states ``[E, N, H]`` they had at the rollout's first step (default: zeros)."""

    def predict(self, params: chex.ArrayTree, mb: Batch, start_hidden: chex.Array | None) -> chex.Array:
        """The prediction ``[..., N]`` the loss regresses onto ``mb.targets`` (recurrent: replayed from
        ``start_hidden``)."""


def td_lambda_of(cfg: Config, traj: Trajectory) -> TDLambda:
    """The TD(lambda) recursions over the rewards and episode ends of ``traj``."""
    return TDLambda(
        rewards=traj.reward, terminated=traj.terminated, ended=traj.terminated | traj.truncated, gamma=cfg.gamma,
        lam=cfg.gae_lambda,
    )


def rollout_lead(traj: Trajectory) -> tuple[int, ...]:
    """The axes between time and agent of a rollout's observations: ``(E,)``."""
    return traj.obs.shape[1:-2]


def or_default(hidden: Any, default: Any) -> Any:
    return default if hidden is None else hidden
