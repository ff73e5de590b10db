"""PERLA's joint-action critic for discrete actions: Q(s, a_i, a_-i) with one output per own action,
marginalised over K joint samples of the others' actions from their current policies."""

from __future__ import annotations

import dataclasses

import chex
import jax.numpy as jnp

from perla_jax.advantages import ADVANTAGE_ESTIMATORS, MarginalValues, expected_value, others_share, take_action
from perla_jax.agents import Agents
from perla_jax.config import Config
from perla_jax.critics.base import (
    as_value_variance, as_values, or_default, over_time_chunks, rollout_lead, td_lambda_of,
)
from perla_jax.critics.inputs import CriticInputs
from perla_jax.marginalisation import marginal_and_joint_q, marginal_q_head
from perla_jax.networks.discrete import QCritic
from perla_jax.networks.factored import FactoredQCritic
from perla_jax.types import Batch, CriticEstimates, Trajectory


@dataclasses.dataclass(frozen=True)
class DiscreteQCritic:
    cfg: Config
    network: QCritic | FactoredQCritic
    inputs: CriticInputs
    agents: Agents  # the policies the K joint samples come from

    @classmethod
    def build(cls, cfg: Config, inputs: CriticInputs, head_hidden: tuple[int, ...], agents: Agents) -> "DiscreteQCritic":
        num_actions = agents.head.module.num_actions
        if cfg.critic_arch == "factored":
            network = FactoredQCritic(
                agents.num_agents, num_actions, head_hidden, cfg.activation, inputs.head_agent_dim, cfg.critic_rank,
                cfg.critic_others_scale, cfg.critic_out_scale, cfg.critic_pool, not inputs.spec.centralised,
            )
        else:
            action_layer = 0 if cfg.critic_action_layer == "first" else len(head_hidden) - 1
            network = QCritic(
                agents.num_agents, num_actions, head_hidden, cfg.activation, action_layer, cfg.critic_out_scale
            )
        return cls(cfg, network, inputs, agents)

    def init(self, key: chex.PRNGKey) -> chex.ArrayTree:
        n = self.inputs.num_agents
        return self.inputs.init(key, lambda k, x: self.network.init(k, x, jnp.zeros((n,), jnp.int32)))

    def estimate(self, actor_params, critic_params, traj: Trajectory, key, actor_carry=None, critic_carry=None,
                 value_norm=None):
        cfg, lead, t = self.cfg, rollout_lead(traj), traj.obs.shape[0]
        actor_carry = or_default(actor_carry, self.agents.initial_actor_carry(lead))
        critic_carry = or_default(critic_carry, self.inputs.initial_carry(lead))
        steps = self.inputs.bootstrap_steps(traj)  # the steps whose reached state needs a value
        head, inputs_now, inputs_final, critic_last = self.inputs.rollout(critic_params, critic_carry, traj, steps)
        # Masked policies: the others' samples and the expectations over own actions skip unavailable ones.
        policy = self.agents.rollout_policy(actor_params, actor_carry, traj)  # [2T, E, N]
        probs_now, probs_final = jnp.split(policy.probs, [t])
        samples_now, samples_final = jnp.split(self.agents.sample_others(key, policy), [t])  # [T, E, K, N] each
        # [T, E, N, A], [T, E, N], [T, E, N]; then [C, E, N, A]
        q_now, q_var, q_joint = self._over_steps(marginal_and_joint_q, head, inputs_now, samples_now, traj.action)
        q_final, _ = self._over_steps(marginal_q_head, head, inputs_final, steps.take(samples_final))
        q_now, q_final, q_joint = (as_values(value_norm, q) for q in (q_now, q_final, q_joint))
        q_var = as_value_variance(value_norm, q_var)
        q_taken = take_action(q_now, traj.action)  # Q^_i(s_t, a_i,t)
        values = MarginalValues(
            q_taken=q_taken,
            v_now=expected_value(q_now, probs_now),  # V^_i(s_t)
            v_final=steps.put(expected_value(q_final, steps.take(probs_final)), t),  # V^_i(s'_t), before any reset
            ended=traj.terminated | traj.truncated,
            q_joint=q_joint,
        )
        td = td_lambda_of(cfg, traj)
        returns, advantages = ADVANTAGE_ESTIMATORS[cfg.advantage](values, td)
        if cfg.critic_target == "joint":
            # Regressed at the joint action taken: the loss needs no K samples (see ``predict``).
            prediction, samples = q_joint, None
        else:
            prediction, samples = q_taken, samples_now  # [T, E, K, N]
        return CriticEstimates(
            advantages=advantages,
            targets=returns,
            old_predictions=prediction,
            joint_samples=samples,
            sample_variance=q_var,
            others_share=others_share(values, td),
            critic_carry=critic_last,
        )

    def _over_steps(self, marginal, head, *xs: chex.Array):
        """``marginal(network, head, *xs)`` over a rollout's steps ``[L, E, ...]`` in time chunks
        (``over_time_chunks``)."""
        return over_time_chunks(lambda *x: marginal(self.network, head, *x), xs, self.cfg.critic_time_chunk)

    def predict(self, params: chex.ArrayTree, mb: Batch, start_hidden: chex.Array | None) -> chex.Array:
        """``critic_target="joint"``: Q(s, a_i, a_-i) at the joint action taken, so the critic keeps its
        dependence on the others' actions. ``"marginal"`` (Algorithm 1 read literally): the gradient flows
        through the K-sample marginal Q^_i(s, a_i), which a squared loss pushes to ignore a_-i (its minimum
        adds Var_{a_-i}(Q)/K to the fit of the row means)."""
        head, inputs = self.inputs.sequence(params, start_hidden, mb.obs, mb.state, mb.first)
        if self.cfg.critic_target == "joint":
            return take_action(self.network.apply(head, inputs, mb.action), mb.action)
        q_hat, _ = marginal_q_head(self.network, head, inputs, mb.joint_samples)
        return take_action(q_hat, mb.action)
