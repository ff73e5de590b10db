"""State-value critic V(s) (MAPPO) or V(o_i) (IPPO), for discrete and continuous actions alike."""

from __future__ import annotations

import dataclasses

import chex
import jax.numpy as jnp

from perla_jax.advantages import next_step_values
from perla_jax.config import Config
from perla_jax.critics.base import as_values, or_default, rollout_lead, td_lambda_of
from perla_jax.critics.inputs import CriticInputs
from perla_jax.networks.layers import VCritic
from perla_jax.types import Batch, CriticEstimates, Trajectory


@dataclasses.dataclass(frozen=True)
class ValueCritic:
    cfg: Config
    network: VCritic
    inputs: CriticInputs

    @classmethod
    def build(cls, cfg: Config, inputs: CriticInputs, head_hidden: tuple[int, ...], agents) -> "ValueCritic":
        del agents  # a value critic needs no policy
        return cls(cfg, VCritic(head_hidden, cfg.activation, cfg.critic_out_scale), inputs)

    def init(self, key: chex.PRNGKey) -> chex.ArrayTree:
        return self.inputs.init(key, self.network.init)

    def estimate(self, actor_params, critic_params, traj: Trajectory, key, actor_carry=None, critic_carry=None,
                 value_norm=None):
        del actor_params, key, actor_carry
        hidden0 = or_default(critic_carry, self.inputs.initial_carry(rollout_lead(traj)))
        t = traj.obs.shape[0]
        steps = self.inputs.bootstrap_steps(traj)
        head, inputs_now, inputs_final, critic_last = self.inputs.rollout(critic_params, hidden0, traj, steps)
        values = as_values(value_norm, self.network.apply(head, inputs_now))  # [T, E, N]
        final_values = steps.put(as_values(value_norm, self.network.apply(head, inputs_final)), t)  # where read
        td = td_lambda_of(self.cfg, traj)
        returns = td.returns(next_step_values(values, final_values, td.ended))
        return CriticEstimates(
            advantages=returns - values,  # GAE
            targets=returns,
            old_predictions=values,
            joint_samples=None,
            sample_variance=jnp.zeros_like(values),
            others_share=jnp.float32(jnp.nan),  # a V-critic never sees the others' actions
            critic_carry=critic_last,
        )

    def predict(self, params: chex.ArrayTree, mb: Batch, start_hidden: chex.Array | None) -> chex.Array:
        head, inputs = self.inputs.sequence(params, start_hidden, mb.obs, mb.state, mb.first)
        return self.network.apply(head, inputs)

