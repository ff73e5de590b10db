"""PERLA's joint-action critic for Box actions: Q(s, a_i, a_-i) on real vectors, marginalised over K joint
samples of the others' Gaussians; V^_i(s) = E_{a_i ~ pi_i} Q^_i(s, a_i) is estimated with M own-action
samples crossed with the same K joint samples (M*K critic values per agent-step; unbiased).

Shapes: ``[..., N, A]`` actions (A = the largest action size, padded dims masked), ``K`` samples of the
others' joint action, ``M`` samples of the own action.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from perla_jax.advantages import ADVANTAGE_ESTIMATORS, MarginalValues, others_share
from perla_jax.agents import Agents
from perla_jax.config import Config
from perla_jax.critics.base import as_values, over_time_chunks, td_lambda_of
from perla_jax.critics.inputs import CriticInputs
from perla_jax.marginalisation import marginal_q_samples, sample_variance
from perla_jax.networks.continuous import ContinuousQNetwork
from perla_jax.networks.factored import FactoredContinuousQ
from perla_jax.types import Batch, CriticEstimates, Trajectory


@dataclasses.dataclass(frozen=True)
class ContinuousQCritic:
    cfg: Config
    network: ContinuousQNetwork | FactoredContinuousQ
    inputs: CriticInputs
    agents: Agents  # the policies the K joint samples and M own samples come from

    @classmethod
    def build(cls, cfg: Config, inputs: CriticInputs, head_hidden: tuple[int, ...], agents: Agents) -> "ContinuousQCritic":
        n, a = agents.num_agents, agents.head.module.action_dim
        if cfg.critic_arch == "factored":
            network = FactoredContinuousQ(
                n, a, head_hidden, cfg.activation, inputs.head_agent_dim, cfg.critic_rank, cfg.critic_others_scale,
                cfg.critic_out_scale, cfg.critic_pool, not inputs.spec.centralised,
            )
        else:
            network = ContinuousQNetwork(n, a, head_hidden, cfg.activation, cfg.critic_out_scale)
        return cls(cfg, network, inputs, agents)

    def init(self, key: chex.PRNGKey) -> chex.ArrayTree:
        n, a = self.network.num_agents, self.network.action_dim
        return self.inputs.init(key, lambda k, x: self.network.init(k, x, jnp.zeros((n, a))))

    def sample_own(self, key: chex.PRNGKey, policy) -> chex.Array:
        """M own actions per agent ``[..., N, M, A]`` (M = ``cfg.own_action_samples``)."""
        return jnp.moveaxis(policy.sample(seed=key, sample_shape=(self.cfg.own_action_samples,)), 0, -2)

    def q_samples(self, params, obs: chex.Array, state: chex.Array, joint_samples: chex.Array, own_actions: chex.Array):
        """Per-sample critic values ``[..., N, M, K]`` (see ``marginal_q_samples``); ``state [..., S]``."""
        return marginal_q_samples(self.network, params, self.inputs.features(obs, state), joint_samples, own_actions)

    def q_taken(self, params, obs: chex.Array, state: chex.Array, joint_samples: chex.Array, actions: chex.Array):
        """Q^_i(s, a_i) at the actions ``[..., N, A]`` over the K samples ``[..., K, N, A]``: ``[..., N]``."""
        return self.q_samples(params, obs, state, joint_samples, actions[..., None, :])[..., 0, :].mean(axis=-1)

    def estimate(self, actor_params, critic_params, traj: Trajectory, key, actor_carry=None, critic_carry=None,
                 value_norm=None):
        """For each step the critic is evaluated at the taken action and at M fresh own actions, against the same
        K joint samples: Q^_i(s, a_i) is the mean over K at the taken action, V^_i(s) the mean over M and K.
        Feed-forward only (Config refuses rnn with Box actions), so the hidden states are unused."""
        del actor_carry, critic_carry
        cfg, agents = self.cfg, self.agents
        t = traj.obs.shape[0]
        steps = self.inputs.bootstrap_steps(traj)  # the steps whose reached state needs a value
        key_others, key_own = jax.random.split(key)
        policy = agents.policy(actor_params, jnp.concatenate([traj.obs, traj.final_obs], axis=0))  # [2T, E, N]
        samples_now, samples_final = jnp.split(agents.sample_others(key_others, policy), [t])  # [T, E, K, N, A]
        own_now, own_final = jnp.split(self.sample_own(key_own, policy), [t])  # [T, E, N, M, A]
        # At the states acted in: the taken own action first, then the M draws; at the states reached, the M draws.
        per_sample = self._chunked(
            critic_params, traj.obs, traj.state, samples_now,
            jnp.concatenate([traj.action[..., None, :], own_now], axis=-2),
        )  # [T, E, N, 1+M, K]
        per_sample = as_values(value_norm, per_sample)
        final_sample = self._chunked(
            critic_params, steps.take(traj.final_obs), steps.take(traj.final_state), steps.take(samples_final),
            steps.take(own_final),
        )  # [C, E, N, M, K]
        q_taken = per_sample[..., 0, :].mean(axis=-1)  # Q^_i(s, a_i) [T, E, N]
        v_now = per_sample[..., 1:, :].mean(axis=(-2, -1))  # V^_i(s) [T, E, N]
        v_final = steps.put(as_values(value_norm, final_sample).mean(axis=(-2, -1)), t)
        # Q(s, a_i, a_-i) at the joint action taken: the taken actions as the one joint sample and the own sample.
        q_joint = as_values(value_norm, self.q_joint(critic_params, traj.obs, traj.state, traj.action))
        values = MarginalValues(q_taken=q_taken, v_now=v_now, v_final=v_final, ended=traj.terminated | traj.truncated,
                                q_joint=q_joint)
        td = td_lambda_of(cfg, traj)
        returns, advantages = ADVANTAGE_ESTIMATORS[cfg.advantage](values, td)
        joint = cfg.critic_target == "joint"  # regressed at the joint action taken: no K samples in the loss
        return CriticEstimates(
            advantages=advantages,
            targets=returns,
            old_predictions=q_joint if joint else q_taken,
            joint_samples=None if joint else samples_now,
            sample_variance=sample_variance(per_sample[..., 0, :], axis=-1),
            others_share=others_share(values, td),
        )

    def _chunked(self, params, obs, state, joint_samples, own_actions) -> chex.Array:
        """``q_samples`` over a rollout's steps ``[L, E, ...]`` in time chunks (``over_time_chunks``)."""
        return over_time_chunks(
            lambda *x: self.q_samples(params, *x), (obs, state, joint_samples, own_actions), self.cfg.critic_time_chunk
        )

    def predict(self, params: chex.ArrayTree, mb: Batch, start_hidden: chex.Array | None) -> chex.Array:
        """``critic_target="joint"``: Q(s, a_i, a_-i) at the real joint action taken (the taken actions as the one
        joint sample); ``"marginal"``: the K-sample mean Q^_i(s, a_i), as for discrete actions."""
        del start_hidden  # feed-forward only
        if self.cfg.critic_target == "joint":
            return self.q_joint(params, mb.obs, mb.state, mb.action)
        return self.q_taken(params, mb.obs, mb.state, mb.joint_samples, mb.action)

    def q_joint(self, params, obs: chex.Array, state: chex.Array, actions: chex.Array) -> chex.Array:
        """Q(s, a_i, a_-i) at the joint action ``[..., N, A]``: ``[..., N]``."""
        return self.q_samples(params, obs, state, actions[..., None, :, :], actions[..., None, :])[..., 0, 0]
