"""Critic kinds behind one interface (``base.Critic``), chosen by ``make_critic``."""

from __future__ import annotations

from perla_jax.agents import Agents
from perla_jax.config import Config, field_default
from perla_jax.critics.base import Critic
from perla_jax.critics.bootstrap import bootstrap_capacity
from perla_jax.critics.continuous_q import ContinuousQCritic
from perla_jax.critics.discrete_q import DiscreteQCritic
from perla_jax.critics.inputs import CriticInputs
from perla_jax.critics.value import ValueCritic
from perla_jax.networks.recurrent import GRUTorso

# (AlgoSpec.critic, continuous actions) -> critic kind
CRITIC_CLASSES = {
    ("v", False): ValueCritic,
    ("v", True): ValueCritic,
    ("q", False): DiscreteQCritic,
    ("q", True): ContinuousQCritic,
}


def make_critic(cfg: Config, env, agents: Agents) -> Critic:
    """The critic of ``cfg.algo`` for ``env``'s action kind, with the state path (features, GRU torso) of
    ``cfg.network``: a recurrent torso takes the first hidden width, the head the remaining layers."""
    recurrent = cfg.network == "rnn"
    torso = GRUTorso(cfg.critic_hidden[0], cfg.activation) if recurrent else None
    inputs = CriticInputs(
        cfg.algo_spec, env.num_agents, env.obs_dim, env.state_dim, torso, env.observes_time,
        factored=cfg.uses_q_critic and cfg.critic_arch == "factored", state_path=cfg.critic_state_path,
        bootstrap_capacity=bootstrap_capacity(env.time_limit, _horizon(env), cfg.num_steps),
    )
    head_hidden = cfg.critic_hidden[1:] if recurrent else cfg.critic_hidden
    default_own = field_default("own_action_samples")
    if cfg.uses_q_critic and not env.continuous and cfg.own_action_samples != default_own:
        raise ValueError(
            f"own_action_samples={cfg.own_action_samples} does nothing with discrete actions (the Q-critic gives "
            f"every own action's value at once): it applies to Box-action environments; leave it at its default "
            f"({default_own})"
        )
    kind = CRITIC_CLASSES[(cfg.algo_spec.critic, env.continuous)]
    return kind.build(cfg, inputs, head_hidden, agents)


def _horizon(env) -> int | None:
    """The environment's episode time limit in transitions, None where it has none it can state."""
    try:
        return env.horizon
    except ValueError:
        return None


__all__ = ["CRITIC_CLASSES", "ContinuousQCritic", "Critic", "CriticInputs", "DiscreteQCritic", "ValueCritic", "make_critic"]
