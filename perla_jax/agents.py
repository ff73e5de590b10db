"""The learner's functions: policies, critic inputs and the critic's value estimates for every algorithm.

Shapes: ``[..., N, O]`` observations with any leading axes (``[T, E]`` in a rollout batch, ``[B]`` in a
minibatch); ``[..., S]`` the environment's global state (``MultiAgentEnv.global_state``); ``[..., N, A]``
available actions (bool); ``A`` actions; ``K`` marginalisation samples.
"""

from __future__ import annotations

import dataclasses

import chex
import distrax
import jax
import jax.numpy as jnp

from perla_jax import advantages as adv
from perla_jax.config import Config
from perla_jax.envs import MultiAgentEnv
from perla_jax.marginalisation import marginal_q_head, q_head_samples, sample_joint_actions
from perla_jax.networks import Actor, QCritic, VCritic, agent_ids


@dataclasses.dataclass(frozen=True)
class Agents:
    """Static description of the networks; parameters live in the trainer's state."""

    cfg: Config
    num_agents: int
    num_actions: int
    obs_dim: int
    actor: Actor
    critic: QCritic | VCritic
    state_dim: int

    continuous = False  # Box actions: see continuous.ContinuousAgents

    @classmethod
    def build(cls, cfg: Config, env: MultiAgentEnv) -> "Agents":
        if getattr(env, "continuous", False) and cls is Agents:
            from perla_jax.continuous import ContinuousAgents

            return ContinuousAgents.build(cfg, env)
        actor = Actor(env.num_actions, cfg.actor_hidden, cfg.activation)
        if cfg.uses_q_critic:
            action_layer = 0 if cfg.critic_action_layer == "first" else len(cfg.critic_hidden) - 1
            critic = QCritic(env.num_agents, env.num_actions, cfg.critic_hidden, cfg.activation, action_layer)
        else:
            critic = VCritic(cfg.critic_hidden, cfg.activation)
        return cls(cfg, env.num_agents, env.num_actions, env.obs_dim, actor, critic, env.state_dim)

    # ---- actor -------------------------------------------------------------------------------
    def actor_inputs(self, obs: chex.Array) -> chex.Array:
        if not self.cfg.actor_agent_id:
            return obs
        return jnp.concatenate([obs, _broadcast_ids(obs, self.num_agents)], axis=-1)

    def init_actor(self, key: chex.PRNGKey) -> chex.ArrayTree:
        dummy = self.actor_inputs(jnp.zeros((self.num_agents, self.obs_dim)))[0]
        if self.cfg.share_actor:
            return self.actor.init(key, dummy)
        # One parameter set per agent, stacked on a leading N axis.
        return jax.vmap(lambda k: self.actor.init(k, dummy))(jax.random.split(key, self.num_agents))

    def policy(self, params: chex.ArrayTree, obs: chex.Array, avail: chex.Array | None = None) -> distrax.Categorical:
        """Observations ``[..., N, O]`` -> categorical policy with batch shape ``[..., N]``; unavailable
        actions (``avail [..., N, A]`` false) get probability 0. Without ``avail`` every action is available."""
        x = self.actor_inputs(obs)
        if self.cfg.share_actor:
            logits = self.actor.apply(params, x)
        else:
            logits = jax.vmap(self.actor.apply, in_axes=(0, -2), out_axes=-2)(params, x)
        if avail is not None:
            # The most negative finite logit rather than -inf: probabilities are exactly 0, yet log-probs,
            # entropy and gradients stay finite (no inf - inf).
            logits = jnp.where(avail, logits, jnp.finfo(logits.dtype).min)
        return distrax.Categorical(logits=logits)

    # ---- critic ------------------------------------------------------------------------------
    def critic_features(self, obs: chex.Array, state: chex.Array) -> chex.Array:
        """Observations ``[..., N, O]`` and global state ``[..., S]`` -> per-agent critic input ``[..., N, F]``.

        mappo / perla_mappo: global state and one-hot agent id; ippo: own observation;
        perla_ippo: own observation and id (the id locates the agent's blank slot in the others' actions).
        """
        if self.cfg.centralised_critic:
            base = jnp.broadcast_to(state[..., None, :], (*obs.shape[:-1], state.shape[-1]))
        else:
            base = obs
        if self.cfg.algo == "ippo":
            return base
        return jnp.concatenate([base, _broadcast_ids(obs, self.num_agents)], axis=-1)

    def init_critic(self, key: chex.PRNGKey) -> chex.ArrayTree:
        features = self.critic_features(jnp.zeros((self.num_agents, self.obs_dim)), jnp.zeros((self.state_dim,)))
        if self.cfg.uses_q_critic:
            return self.critic.init(key, features, jnp.zeros((self.num_agents,), jnp.int32))
        return self.critic.init(key, features)

    def state_values(self, params: chex.ArrayTree, obs: chex.Array, state: chex.Array) -> chex.Array:
        """V-critic: obs ``[..., N, O]``, state ``[..., S]`` -> ``[..., N]``."""
        return self.critic.apply(params, self.critic_features(obs, state))

    def q_samples(
        self, params: chex.ArrayTree, obs: chex.Array, state: chex.Array, joint_samples: chex.Array
    ) -> chex.Array:
        """Q-critic per sample: obs ``[..., N, O]``, state ``[..., S]``, samples ``[..., K, N]`` -> ``[..., N, K, A]``."""
        return q_head_samples(self.critic, params, self.critic_features(obs, state), joint_samples)

    def q_marginal(
        self,
        params: chex.ArrayTree,
        obs: chex.Array,
        state: chex.Array,
        joint_samples: chex.Array,
        own_actions: chex.Array | None = None,
    ) -> tuple[chex.Array, chex.Array | None]:
        """Q^_i over own actions ``[..., N, A]`` and, given ``own_actions [..., N]``, the variance over K
        of the per-sample values at them ``[..., N]`` (see ``marginal_q_head``)."""
        features = self.critic_features(obs, state)
        return marginal_q_head(self.critic, params, features, joint_samples, own_actions)

    def sample_others(self, key: chex.PRNGKey, policy: distrax.Categorical) -> chex.Array:
        """K joint actions ``[..., K, N]`` from a policy with batch shape ``[..., N]``."""
        return jnp.moveaxis(sample_joint_actions(key, policy, self.cfg.k), 0, -2)


@chex.dataclass(frozen=True)
class CriticEstimates:
    """Everything the update needs from the critic, for a rollout batch ``[T, E, N]``."""

    advantages: chex.Array  # [T, E, N]
    targets: chex.Array  # [T, E, N] the critic's regression target
    old_predictions: chex.Array  # [T, E, N] the critic's prediction at rollout time (for value clipping)
    joint_samples: chex.Array | None  # [T, E, K, N] samples the critic prediction marginalises over
    sample_variance: chex.Array  # [T, E, N] variance over K of Q(s, a_i, a_-i^(k)) at the taken action


def estimate(
    agents: Agents,
    actor_params: chex.ArrayTree,
    critic_params: chex.ArrayTree,
    traj,
    key: chex.PRNGKey,
) -> CriticEstimates:
    """Critic values, advantages and targets for a rollout ``traj`` (see ``rollout.Trajectory``)."""
    cfg = agents.cfg
    ended = traj.terminated | traj.truncated  # [T, E]
    term, end = traj.terminated[..., None], ended[..., None]
    lam_returns = lambda next_v: adv.lambda_returns(traj.reward, next_v, term, end, cfg.gamma, cfg.gae_lambda)
    # The states acted in and the states reached (before any reset) go through the critic as one batch.
    both = jnp.concatenate([traj.obs, traj.final_obs], axis=0)  # [2T, E, N, O]
    states_both = jnp.concatenate([traj.state, traj.final_state], axis=0)  # [2T, E, S]
    t = traj.obs.shape[0]
    if not cfg.uses_q_critic:
        values, final_values = jnp.split(agents.state_values(critic_params, both, states_both), [t])
        returns = lam_returns(next_step_values(values, final_values, ended))
        return CriticEstimates(
            advantages=returns - values,
            targets=returns,
            old_predictions=values,
            joint_samples=None,
            sample_variance=jnp.zeros_like(values),
        )
    if agents.continuous:
        from perla_jax.continuous import estimate_continuous

        return estimate_continuous(agents, actor_params, critic_params, traj, key)
    # Masked policies: the others' samples and the expectations over own actions skip unavailable ones.
    policy = agents.policy(actor_params, both, jnp.concatenate([traj.avail, traj.final_avail], axis=0))
    probs_now, probs_final = jnp.split(policy.probs, [t])
    samples_both = agents.sample_others(key, policy)  # [2T, E, K, N]
    # The final observations have no action; any action works for their (unused) variance.
    actions_both = jnp.concatenate([traj.action, traj.action], axis=0)  # [2T, E, N]
    # Time chunks bound the peak memory of the [2T, E, N, K, H] per-sample critic batch.
    q_both, q_var_both = jax.lax.map(
        lambda x: agents.q_marginal(critic_params, *x),
        (both, states_both, samples_both, actions_both),
        batch_size=min(cfg.critic_time_chunk, 2 * t),
    )  # [2T, E, N, A], [2T, E, N]
    (q_now, q_final), q_var = jnp.split(q_both, [t]), q_var_both[:t]
    samples = samples_both[:t]  # [T, E, K, N]
    q_taken = adv.take_action(q_now, traj.action)  # Q^_i(s_t, a_i,t)
    v_now = adv.expected_value(q_now, probs_now)  # V^_i(s_t)
    v_final = adv.expected_value(q_final, probs_final)  # V^_i(s'_t), s' before any reset
    returns, advantages = perla_advantages(cfg.advantage, lam_returns, q_taken, v_now, v_final, ended)
    return CriticEstimates(
        advantages=advantages,
        targets=returns,
        old_predictions=q_taken,
        joint_samples=samples,
        sample_variance=q_var,
    )


def perla_advantages(advantage: str, lam_returns, q_taken, v_now, v_final, ended) -> tuple[chex.Array, chex.Array]:
    """(TD(lambda) returns, advantages) ``[T, E, N]`` of PERLA's estimator ``advantage`` from the marginal values
    Q^_i(s_t, a_i,t) (``q_taken``), V^_i(s_t) (``v_now``) and V^_i(s'_t) (``v_final``); ``lam_returns`` maps
    bootstrap values to returns."""
    if advantage == "sarsa":
        # Q^_i(s_{t+1}, a_i,t+1) where the next action is in the batch; the expectation V^_i(s') where it
        # is not (the last step, or a step that ended an episode, whose next action was never taken).
        returns = lam_returns(next_step_values(q_taken, v_final, ended))
        return returns, returns - q_taken
    returns = lam_returns(next_step_values(v_now, v_final, ended))
    return returns, (returns - v_now if advantage == "td" else q_taken - v_now)


def next_step_values(values: chex.Array, final_values: chex.Array, ended: chex.Array) -> chex.Array:
    """Bootstrap values ``[T, E, N]`` of the state each step reached.

    Where the episode went on, that state is the next step's, so its value estimate is reused (then GAE
    over these values telescopes exactly); where the episode ended, or at the last step, it is the
    value of the final observation (used only on truncation: ``lambda_returns`` drops it on termination).
    """
    following = jnp.concatenate([values[1:], final_values[-1:]], axis=0)
    return jnp.where(ended[..., None], final_values, following)


def _broadcast_ids(obs: chex.Array, n: int) -> chex.Array:
    return jnp.broadcast_to(agent_ids(n), (*obs.shape[:-1], n))
