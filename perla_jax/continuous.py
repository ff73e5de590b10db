"""Continuous actions: masked diagonal Gaussian policies and PERLA's Q-critic on real-valued joint actions.

Shapes: ``[..., N, O]`` observations, ``[..., N, A]`` actions (A = the largest action size, padded dims
masked), ``K`` samples of the others' joint action, ``M`` samples of the own action.

The critic is Q(s, a_i, a_-i) on real vectors: an MLP on ``concat(critic features, joint action [N*A])``
with agent i's own action in its slot. PERLA's marginal Q^_i(s, a_i) = 1/K sum_k Q(s, a_i, a_-i^(k)) uses
K joint actions from the current Gaussians, and the state value V^_i(s) = E_{a_i ~ pi_i} Q^_i(s, a_i) is
estimated with M own-action samples crossed with the same K joint samples (M*K critic values; unbiased).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import orthogonal

from perla_jax.agents import Agents
from perla_jax.config import Config
from perla_jax.marginalisation import sample_joint_actions
from perla_jax.networks import _ACTIVATIONS, MLP, VCritic, _dense


class MaskedDiagNormal(distrax.Distribution):
    """Diagonal Gaussian over ``[..., A]`` whose masked-out (padded) dimensions do not exist.

    Samples are 0 on padded dimensions; log-probability and entropy sum over real dimensions only, so a
    padded dimension changes neither, whatever its mean, scale or value.
    """

    def __init__(self, loc: chex.Array, scale: chex.Array, mask: chex.Array):
        self._normal = distrax.Normal(loc, scale)
        self._mask = jnp.broadcast_to(mask, self._normal.batch_shape).astype(loc.dtype)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self._normal.batch_shape[-1:]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self._normal.batch_shape[:-1]

    @property
    def mask(self) -> chex.Array:
        return self._mask

    def _sample_n(self, key: chex.PRNGKey, n: int) -> chex.Array:
        return self._normal.sample(seed=key, sample_shape=(n,)) * self._mask

    def log_prob(self, value: chex.Array) -> chex.Array:
        return jnp.sum(self._normal.log_prob(value) * self._mask, axis=-1)

    def entropy(self) -> chex.Array:
        return jnp.sum(self._normal.entropy() * self._mask, axis=-1)

    def mean(self) -> chex.Array:
        return self._normal.loc * self._mask

    def mode(self) -> chex.Array:
        return self.mean()


class GaussianActor(nn.Module):
    """Observation ``[..., O]`` -> (mean ``[..., A]``, log-std ``[..., A]``).

    The log-std is a learned vector independent of the state, as in the usual PPO for MuJoCo: exploration
    noise is then a global property that the clipped PPO objective anneals smoothly, and it cannot
    collapse or blow up in rarely visited states the way a state-dependent head can early in training.
    """

    action_dim: int
    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: chex.Array) -> tuple[chex.Array, chex.Array]:
        mean = MLP(self.hidden, self.action_dim, 0.01, self.activation)(obs)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return mean, jnp.broadcast_to(log_std, mean.shape)


class ContinuousQCritic(nn.Module):
    """Q(s, a) on real joint actions: ``__call__(features [..., F], joint [..., N, A]) -> [...]``, an MLP on
    ``concat(features, joint.reshape(N*A))``.

    The first layer is split into a state part and one action block per agent slot, so the K*M joint
    actions of a marginal share the state part and each sampled action is projected once
    (``marginal_q_samples``); the numbers are those of the plain MLP (tested).
    """

    num_agents: int
    action_dim: int
    hidden: Sequence[int]
    activation: str = "tanh"

    def setup(self):
        self.state_in = _dense(self.hidden[0])
        shape = (self.num_agents * self.action_dim, self.hidden[0])
        self.action_kernel = self.param("action_kernel", orthogonal(np.sqrt(2)), shape)
        self.layers = [_dense(h) for h in self.hidden[1:]]
        self.out = _dense(1, 1.0)

    def __call__(self, features: chex.Array, joint: chex.Array) -> chex.Array:
        flat = joint.reshape(*joint.shape[:-2], -1)
        return self.head(self.state_in(features) + flat @ self.action_kernel)

    def encode(self, features: chex.Array) -> chex.Array:
        return self.state_in(features)

    def action_rows(self, actions: chex.Array) -> chex.Array:
        """``[..., N, A]`` -> each agent slot's first-layer contribution ``[..., N, H]``."""
        kernel = self.action_kernel.reshape(self.num_agents, self.action_dim, -1)
        return jnp.einsum("...na,nah->...nh", actions, kernel)

    def head(self, pre: chex.Array) -> chex.Array:
        act = _ACTIVATIONS[self.activation]
        x = act(pre)
        for layer in self.layers:
            x = act(layer(x))
        return self.out(x)[..., 0]


def marginal_q_samples(
    critic: ContinuousQCritic,
    params: chex.ArrayTree,
    features: chex.Array,
    joint_samples: chex.Array,
    own_actions: chex.Array,
) -> chex.Array:
    """Q(s, a_i^(m), a_-i^(k)) for every agent, own sample and joint sample: ``[..., N, M, K]``.

    Args:
      features: ``[..., N, F]`` each agent's critic input.
      joint_samples: ``[..., K, N, A]`` joint actions; agent i's own slot is replaced by its own action.
      own_actions: ``[..., N, M, A]`` M own actions per agent.
    """
    encoded = critic.apply(params, features, method=ContinuousQCritic.encode)  # [..., N, H]
    rows = critic.apply(params, joint_samples, method=ContinuousQCritic.action_rows)  # [..., K, N, H]
    others = jnp.swapaxes(rows.sum(axis=-2, keepdims=True) - rows, -3, -2)  # [..., N, K, H] slot i removed
    own = critic.apply(params, jnp.swapaxes(own_actions, -3, -2), method=ContinuousQCritic.action_rows)
    own = jnp.swapaxes(own, -3, -2)  # [..., N, M, H]: agent i's action through slot i's block
    pre = encoded[..., :, None, None, :] + own[..., :, :, None, :] + others[..., :, None, :, :]
    return critic.apply(params, pre, method=ContinuousQCritic.head)


@dataclasses.dataclass(frozen=True)
class ContinuousAgents(Agents):
    """``Agents`` for Box action spaces: Gaussian policies, and a real-action Q-critic for PERLA."""

    action_mask: tuple[tuple[bool, ...], ...] = ()  # [N, A] real action dimensions of each agent (hashable)

    continuous = True

    @classmethod
    def build(cls, cfg: Config, env) -> "ContinuousAgents":
        actor = GaussianActor(env.action_dim, cfg.actor_hidden, cfg.activation)
        if cfg.uses_q_critic:
            critic = ContinuousQCritic(env.num_agents, env.action_dim, cfg.critic_hidden, cfg.activation)
        else:
            critic = VCritic(cfg.critic_hidden, cfg.activation)
        return cls(
            cfg, env.num_agents, env.action_dim, env.obs_dim, actor, critic, env.state_dim,
            action_mask=_as_tuples(env.action_mask),
        )

    @property
    def action_dim(self) -> int:
        return self.num_actions

    def policy(self, params: chex.ArrayTree, obs: chex.Array, avail: chex.Array | None = None) -> MaskedDiagNormal:
        """Observations ``[..., N, O]`` -> Gaussian with batch shape ``[..., N]``, event ``[A]``. ``avail`` (the
        discrete action mask) does not apply to Box actions; padded dimensions are masked instead."""
        x = self.actor_inputs(obs)
        if self.cfg.share_actor:
            mean, log_std = self.actor.apply(params, x)
        else:
            mean, log_std = jax.vmap(self.actor.apply, in_axes=(0, -2), out_axes=-2)(params, x)
        return MaskedDiagNormal(mean, jnp.exp(log_std), jnp.asarray(self.action_mask))

    def init_critic(self, key: chex.PRNGKey) -> chex.ArrayTree:
        features = self.critic_features(jnp.zeros((self.num_agents, self.obs_dim)), jnp.zeros((self.state_dim,)))
        if self.cfg.uses_q_critic:
            return self.critic.init(key, features, jnp.zeros((self.num_agents, self.num_agents, self.action_dim)))
        return self.critic.init(key, features)

    def sample_others(self, key: chex.PRNGKey, policy: MaskedDiagNormal) -> chex.Array:
        """K joint actions ``[..., K, N, A]`` from a policy with batch shape ``[..., N]``."""
        return jnp.moveaxis(sample_joint_actions(key, policy, self.cfg.k), 0, -3)

    def sample_own(self, key: chex.PRNGKey, policy: MaskedDiagNormal) -> chex.Array:
        """M own actions per agent ``[..., N, M, A]`` (M = ``cfg.own_action_samples``)."""
        return jnp.moveaxis(policy.sample(seed=key, sample_shape=(self.cfg.own_action_samples,)), 0, -2)

    def q_samples(
        self, params, obs: chex.Array, state: chex.Array, joint_samples: chex.Array, own_actions: chex.Array
    ) -> chex.Array:
        """Per-sample critic values ``[..., N, M, K]`` (see ``marginal_q_samples``); ``state [..., S]``."""
        return marginal_q_samples(self.critic, params, self.critic_features(obs, state), joint_samples, own_actions)

    def q_taken(
        self, params, obs: chex.Array, state: chex.Array, joint_samples: chex.Array, actions: chex.Array
    ) -> chex.Array:
        """Q^_i(s, a_i) at the actions ``[..., N, A]`` over the K samples ``[..., K, N, A]``: ``[..., N]``."""
        return self.q_samples(params, obs, state, joint_samples, actions[..., None, :])[..., 0, :].mean(axis=-1)


def estimate_continuous(agents: ContinuousAgents, actor_params, critic_params, traj, key: chex.PRNGKey):
    """``agents.estimate`` for a PERLA Q-critic on continuous actions; ``traj`` as in ``rollout.Trajectory``
    with actions ``[T, E, N, A]``. Returns ``agents.CriticEstimates``.

    For each step the critic is evaluated at the taken action and at M fresh own actions, against the same
    K joint samples: Q^_i(s, a_i) is the mean over K at the taken action, V^_i(s) the mean over M and K.
    """
    from perla_jax import advantages as adv
    from perla_jax.agents import CriticEstimates, perla_advantages

    cfg = agents.cfg
    ended = traj.terminated | traj.truncated  # [T, E]
    term, end = traj.terminated[..., None], ended[..., None]
    both = jnp.concatenate([traj.obs, traj.final_obs], axis=0)  # [2T, E, N, O]
    states = jnp.concatenate([traj.state, traj.final_state], axis=0)  # [2T, E, S]
    t = traj.obs.shape[0]
    key_others, key_own = jax.random.split(key)
    policy = agents.policy(actor_params, both)
    samples_both = agents.sample_others(key_others, policy)  # [2T, E, K, N, A]
    # Own actions: the taken one first (the final observations have none; theirs is unused), then M draws.
    taken = jnp.concatenate([traj.action, traj.action], axis=0)[..., None, :]  # [2T, E, N, 1, A]
    own_both = jnp.concatenate([taken, agents.sample_own(key_own, policy)], axis=-2)  # [2T, E, N, 1+M, A]
    per_sample = jax.lax.map(
        lambda x: agents.q_samples(critic_params, *x),
        (both, states, samples_both, own_both),
        batch_size=min(cfg.critic_time_chunk, 2 * t),
    )  # [2T, E, N, 1+M, K]
    q_taken, q_final_taken = jnp.split(per_sample[..., 0, :].mean(axis=-1), [t])  # Q^_i(s, a_i) [T, E, N]
    v_now, v_final = jnp.split(per_sample[..., 1:, :].mean(axis=(-2, -1)), [t])  # V^_i(s) [T, E, N]
    del q_final_taken
    lam_returns = lambda next_v: adv.lambda_returns(traj.reward, next_v, term, end, cfg.gamma, cfg.gae_lambda)
    returns, advantages = perla_advantages(cfg.advantage, lam_returns, q_taken, v_now, v_final, ended)
    return CriticEstimates(
        advantages=advantages,
        targets=returns,
        old_predictions=q_taken,
        joint_samples=samples_both[:t],
        sample_variance=per_sample[:t, ..., 0, :].var(axis=-1),
    )


def _as_tuples(mask) -> tuple[tuple[bool, ...], ...]:
    return tuple(tuple(bool(v) for v in row) for row in np.asarray(mask))
