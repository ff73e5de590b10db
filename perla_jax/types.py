"""Data that crosses module boundaries, at the bottom of the import graph (no perla_jax imports).

Axis convention, used everywhere in the package: ``[T, E, N, ...]`` = time, environment, agent; ``S`` the
critic's global state size, ``O`` the observation size, ``A`` the number of actions (discrete) or the action
vector's width (continuous), ``K`` the joint-action samples, ``H`` a hidden width. After a minibatch is
flattened, ``[B, ...]`` replaces ``[T, E, ...]``. Environment functions act on one environment (no ``E``).

Words: a recurrent network's state between steps is its *carry* (``actor_carry``, ``critic_carry``; flax's term);
*hidden* names layers (``Config.actor_hidden`` / ``critic_hidden`` are the hidden layers' widths).
"""

from __future__ import annotations

from typing import Any

import chex
from flax.training.train_state import TrainState

# What train_step returns per update, in this order (metrics.csv columns after seed and update). New metrics go
# at the end, so older files' columns keep their places; reading a file without one gives NaN for it.
METRICS = (
    "env_steps",
    "return",
    "episode_length",
    "actor_loss",
    "critic_loss",
    "entropy",
    "approx_kl",
    "clip_frac",
    "critic_sample_var",
    "win_rate",
    "pg_var",
    "pg_snr",
    "others_share",
    "critic_ev",  # explained variance of the critic's targets by its rollout-time predictions (diagnostics.py)
)


@chex.dataclass(frozen=True)
class EnvState:
    """jaxmarl state plus the running episode statistics the trainer logs."""

    inner: Any
    episode_return: chex.Array  # [] team return so far (sum over time of the mean over agents)
    episode_length: chex.Array  # []


@chex.dataclass(frozen=True)
class Transition:
    """What one environment step returns, for one environment."""

    obs: chex.Array  # [N, O] observation to act on next (after an automatic reset)
    final_obs: chex.Array  # [N, O] observation reached by the step (before any reset), for bootstrapping
    reward: chex.Array  # [N]
    terminated: chex.Array  # [] the episode ended in a terminal state: do not bootstrap
    truncated: chex.Array  # [] the episode hit its time limit: bootstrap from final_obs
    episode_return: chex.Array  # [] team return of the episode that ended here (0 if none)
    episode_length: chex.Array  # []
    final_state: chex.Array  # [S] critic's global state at final_obs
    final_avail: chex.Array  # [N, A] bool, actions available at final_obs
    won: chex.Array  # [] the episode ended here in a win (always False where the env has no wins)


@chex.dataclass(frozen=True)
class Trajectory:
    """A rollout batch."""

    obs: chex.Array  # [T, E, N, O] observation acted on
    state: chex.Array  # [T, E, S] critic's global state acted in (MultiAgentEnv.critic_state)
    avail: chex.Array  # [T, E, N, A] bool, actions available at obs (the policy was masked with it)
    action: chex.Array  # [T, E, N] (discrete) or [T, E, N, A] (continuous)
    log_prob: chex.Array  # [T, E, N] behaviour log-probability of the action
    reward: chex.Array  # [T, E, N]
    final_obs: chex.Array  # [T, E, N, O] observation the step reached, before any reset
    terminated: chex.Array  # [T, E]
    truncated: chex.Array  # [T, E]
    episode_return: chex.Array  # [T, E] team return of an episode that ended at this step, else 0
    episode_length: chex.Array  # [T, E]
    final_state: chex.Array  # [T, E, S] global state at final_obs
    final_avail: chex.Array  # [T, E, N, A] bool, actions available at final_obs
    won: chex.Array  # [T, E] an episode ended at this step in a win
    first: chex.Array | None = None  # [T, E] obs is an episode's first observation (recurrent hidden states reset there)


@chex.dataclass(frozen=True)
class CriticEstimates:
    """Everything the update needs from the critic, for a rollout batch ``[T, E, N]``."""

    advantages: chex.Array  # [T, E, N]
    targets: chex.Array  # [T, E, N] the critic's regression target
    old_predictions: chex.Array  # [T, E, N] the critic's prediction at rollout time (for value clipping)
    joint_samples: chex.Array | None  # [T, E, K, N(, A)] samples the critic prediction marginalises over
    sample_variance: chex.Array  # [T, E, N] variance over K of Q(s, a_i, a_-i^(k)) at the taken action
    # [] share of the one-step TD errors' variance the others' actions explain (advantages.others_share); NaN
    # for critics without the others' actions
    others_share: chex.Array
    critic_carry: chex.Array | None = None  # [E, N, H] recurrent critic's hidden state after the rollout


@chex.dataclass(frozen=True)
class Batch:
    """Training batch; leading axes ``[T, E]`` before flattening, ``[B]`` after."""

    obs: chex.Array  # [..., N, O]
    state: chex.Array  # [..., S] global state (the centralised critic's input)
    avail: chex.Array  # [..., N, A] available actions (the policy is masked as in the rollout)
    action: chex.Array  # [..., N(, A)]
    log_prob: chex.Array  # [..., N]
    advantages: chex.Array  # [..., N]
    targets: chex.Array  # [..., N]
    old_predictions: chex.Array  # [..., N]
    joint_samples: chex.Array | None  # [..., K, N(, A)] (Q-critics only)
    first: chex.Array  # [...] obs begins an episode


@chex.dataclass(frozen=True)
class SequenceStarts:
    """Recurrent networks' hidden states at the first step of a rollout, ``[E, N, H]`` (``[E/M, N, H]`` per
    minibatch): the loss replays each minibatch's whole sequences from them."""

    actor: chex.Array
    critic: chex.Array


@chex.dataclass
class RunnerState:
    actor: TrainState
    critic: TrainState
    env_state: EnvState  # [E]
    obs: chex.Array  # [E, N, O]
    key: chex.PRNGKey
    update: chex.Array  # [] updates done so far
    first: chex.Array  # [E] obs begins an episode (recurrent hidden states reset there)
    actor_carry: chex.Array | None = None  # [E, N, H] recurrent actor's hidden state (None: feed-forward)
    critic_carry: chex.Array | None = None  # [E, N, H] recurrent critic's hidden state
    value_norm: Any = None  # value_norm.ValueNorm of the critic's targets (None: Config.value_norm off)
