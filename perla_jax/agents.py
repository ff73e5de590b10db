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
from perla_jax.recurrent import GRUTorso, reset_where, scan_sequence, step_after


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
    # Config.network="rnn": GRU torsos in front of the heads above (see recurrent.py); None: feed-forward.
    actor_torso: GRUTorso | None = None
    critic_torso: GRUTorso | None = None

    continuous = False  # Box actions: see continuous.ContinuousAgents

    @classmethod
    def build(cls, cfg: Config, env: MultiAgentEnv) -> "Agents":
        recurrent = cfg.network == "rnn"
        if getattr(env, "continuous", False) and cls is Agents:
            if recurrent:
                raise ValueError(
                    f"network='rnn' is not supported for continuous-action env={cfg.env!r}: allowed is network='ff'"
                )
            from perla_jax.continuous import ContinuousAgents

            return ContinuousAgents.build(cfg, env)
        # A recurrent net's torso takes the first hidden width; the head keeps the remaining layers.
        actor_hidden = cfg.actor_hidden[1:] if recurrent else cfg.actor_hidden
        critic_hidden = cfg.critic_hidden[1:] if recurrent else cfg.critic_hidden
        actor = Actor(env.num_actions, actor_hidden, cfg.activation)
        if cfg.uses_q_critic:
            action_layer = 0 if cfg.critic_action_layer == "first" else len(critic_hidden) - 1
            critic = QCritic(env.num_agents, env.num_actions, critic_hidden, cfg.activation, action_layer)
        else:
            critic = VCritic(critic_hidden, cfg.activation)
        torsos = (GRUTorso(cfg.actor_hidden[0], cfg.activation), GRUTorso(cfg.critic_hidden[0], cfg.activation))
        return cls(
            cfg, env.num_agents, env.num_actions, env.obs_dim, actor, critic, env.state_dim, *(torsos if recurrent else ())
        )

    @property
    def recurrent(self) -> bool:
        return self.actor_torso is not None

    # ---- actor -------------------------------------------------------------------------------
    def actor_inputs(self, obs: chex.Array) -> chex.Array:
        if not self.cfg.actor_agent_id:
            return obs
        return jnp.concatenate([obs, _broadcast_ids(obs, self.num_agents)], axis=-1)

    def init_actor(self, key: chex.PRNGKey) -> chex.ArrayTree:
        dummy = self.actor_inputs(jnp.zeros((self.num_agents, self.obs_dim)))[0]

        def one(k):
            if not self.recurrent:
                return self.actor.init(k, dummy)
            k_torso, k_head = jax.random.split(k)
            width = self.actor_torso.width
            torso = self.actor_torso.init(k_torso, jnp.zeros((width,)), dummy)
            return {"torso": torso, "head": self.actor.init(k_head, jnp.zeros((width,)))}

        if self.cfg.share_actor:
            return one(key)
        # One parameter set per agent, stacked on a leading N axis.
        return jax.vmap(one)(jax.random.split(key, self.num_agents))

    def _per_agent(self, fn, params: chex.ArrayTree, *args: chex.Array):
        """``fn(params, *args)`` with args ``[..., N, F]``; unshared actors map agent j to parameter set j."""
        if self.cfg.share_actor:
            return fn(params, *args)
        return jax.vmap(fn, in_axes=(0,) + (-2,) * len(args), out_axes=-2)(params, *args)

    def _head_policy(self, params: chex.ArrayTree, x: chex.Array, avail: chex.Array | None) -> distrax.Categorical:
        logits = self._per_agent(lambda p, v: self.actor.apply(p["head"] if self.recurrent else p, v), params, x)
        if avail is not None:
            # The most negative finite logit rather than -inf: probabilities are exactly 0, yet log-probs,
            # entropy and gradients stay finite (no inf - inf).
            logits = jnp.where(avail, logits, jnp.finfo(logits.dtype).min)
        return distrax.Categorical(logits=logits)

    def policy(self, params: chex.ArrayTree, obs: chex.Array, avail: chex.Array | None = None) -> distrax.Categorical:
        """Feed-forward actor: observations ``[..., N, O]`` -> categorical policy with batch shape ``[..., N]``;
        unavailable actions (``avail [..., N, A]`` false) get probability 0. Without ``avail`` every action is
        available. Recurrent actors go through ``actor_step`` / ``actor_sequence``."""
        if self.recurrent:
            raise ValueError("a recurrent actor (network='rnn') has no per-observation policy: use actor_step")
        return self._head_policy(params, self.actor_inputs(obs), avail)

    def initial_actor_hidden(self, lead: tuple[int, ...]) -> chex.Array | None:
        """Zero hidden state ``[*lead, N, H]``; None for feed-forward actors."""
        return None if not self.recurrent else jnp.zeros((*lead, self.num_agents, self.actor_torso.width))

    def initial_critic_hidden(self, lead: tuple[int, ...]) -> chex.Array | None:
        return None if not self.recurrent else jnp.zeros((*lead, self.num_agents, self.critic_torso.width))

    def _actor_torso_step(self, params: chex.ArrayTree):
        return lambda hidden, x: self._per_agent(lambda p, h, v: self.actor_torso.apply(p["torso"], h, v), params, hidden, x)

    def actor_step(
        self, params: chex.ArrayTree, hidden: chex.Array | None, obs: chex.Array, first: chex.Array, avail=None
    ) -> tuple[chex.Array | None, distrax.Categorical]:
        """One acting step: hidden ``[..., N, H]`` (None if feed-forward), obs ``[..., N, O]``, ``first [...]``
        (obs begins an episode: the hidden state is reset first) -> (hidden', policy ``[..., N]``)."""
        if not self.recurrent:
            return hidden, self.policy(params, obs, avail)
        hidden, out = self._actor_torso_step(params)(reset_where(first, hidden), self.actor_inputs(obs))
        return hidden, self._head_policy(params, out, avail)

    def actor_sequence(
        self, params: chex.ArrayTree, hidden0: chex.Array | None, obs: chex.Array, first: chex.Array, avail=None
    ) -> distrax.Categorical:
        """Policies along sequences ``obs [T, ..., N, O]`` from ``hidden0 [..., N, H]`` (what ``actor_step``
        gave in the rollout); feed-forward actors accept any leading axes and ignore hidden0 and first."""
        if not self.recurrent:
            return self.policy(params, obs, avail)
        _, out = scan_sequence(self._actor_torso_step(params), hidden0, self.actor_inputs(obs), first)
        return self._head_policy(params, out, avail)

    def rollout_policy(self, params: chex.ArrayTree, hidden0: chex.Array | None, traj) -> distrax.Categorical:
        """Policies ``[2T, E, N]`` at a rollout's observations, then at the observations each step reached."""
        avail = jnp.concatenate([traj.avail, traj.final_avail], axis=0)
        if not self.recurrent:
            return self.policy(params, jnp.concatenate([traj.obs, traj.final_obs], axis=0), avail)
        step = self._actor_torso_step(params)
        _, out = scan_sequence(step, hidden0, self.actor_inputs(traj.obs), traj.first)
        final = step_after(step, out, self.actor_inputs(traj.final_obs))
        return self._head_policy(params, jnp.concatenate([out, final], axis=0), avail)

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
        if not self.recurrent:
            return self._init_critic_head(key, features)
        k_torso, k_head = jax.random.split(key)
        hidden = jnp.zeros((self.num_agents, self.critic_torso.width))
        torso = self.critic_torso.init(k_torso, hidden, features)
        return {"torso": torso, "head": self._init_critic_head(k_head, hidden)}

    def _init_critic_head(self, key: chex.PRNGKey, features: chex.Array) -> chex.ArrayTree:
        if self.cfg.uses_q_critic:
            return self.critic.init(key, features, jnp.zeros((self.num_agents,), jnp.int32))
        return self.critic.init(key, features)

    def _critic_torso_step(self, params: chex.ArrayTree):
        return lambda hidden, x: self.critic_torso.apply(params["torso"], hidden, x)

    def critic_sequence_inputs(
        self, params: chex.ArrayTree, hidden0: chex.Array | None, obs: chex.Array, state: chex.Array, first: chex.Array
    ) -> tuple[chex.ArrayTree, chex.Array]:
        """(head parameters, the critic head's input ``[T, ..., N, F']``) along sequences (see ``actor_sequence``).
        Feed-forward: the parameters and ``critic_features`` unchanged; recurrent: the GRU torso's outputs."""
        if not self.recurrent:
            return params, self.critic_features(obs, state)
        _, out = scan_sequence(self._critic_torso_step(params), hidden0, self.critic_features(obs, state), first)
        return params["head"], out

    def rollout_critic_inputs(
        self, params: chex.ArrayTree, hidden0: chex.Array | None, traj
    ) -> tuple[chex.ArrayTree, chex.Array, chex.Array | None]:
        """(head parameters, head input ``[2T, E, N, F']`` at a rollout's states then at the states each step
        reached, the critic hidden state after the rollout ``[E, N, H]`` or None)."""
        now = self.critic_features(traj.obs, traj.state)
        final = self.critic_features(traj.final_obs, traj.final_state)
        if not self.recurrent:
            return params, jnp.concatenate([now, final], axis=0), hidden0
        step = self._critic_torso_step(params)
        last, out = scan_sequence(step, hidden0, now, traj.first)
        return params["head"], jnp.concatenate([out, step_after(step, out, final)], axis=0), last

    def state_values(self, params: chex.ArrayTree, obs: chex.Array, state: chex.Array) -> chex.Array:
        """V-critic: obs ``[..., N, O]``, state ``[..., S]`` -> ``[..., N]``."""
        return self.critic.apply(params, self.critic_features(obs, state))

    def q_samples(
        self, params: chex.ArrayTree, obs: chex.Array, state: chex.Array, joint_samples: chex.Array
    ) -> chex.Array:
        """Q-critic per sample: obs ``[..., N, O]``, state ``[..., S]``, samples ``[..., K, N]`` -> ``[..., N, K, A]``."""
        return q_head_samples(self.critic, params, self.critic_features(obs, state), joint_samples)

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
    critic_hidden: chex.Array | None = None  # [E, N, H] recurrent critic's hidden state after the rollout


def estimate(
    agents: Agents,
    actor_params: chex.ArrayTree,
    critic_params: chex.ArrayTree,
    traj,
    key: chex.PRNGKey,
    actor_hidden: chex.Array | None = None,
    critic_hidden: chex.Array | None = None,
) -> CriticEstimates:
    """Critic values, advantages and targets for a rollout ``traj`` (see ``rollout.Trajectory``); recurrent
    networks start from the hidden states ``[E, N, H]`` they had at the rollout's first step (default: zeros)."""
    cfg = agents.cfg
    ended = traj.terminated | traj.truncated  # [T, E]
    term, end = traj.terminated[..., None], ended[..., None]
    lam_returns = lambda next_v: adv.lambda_returns(traj.reward, next_v, term, end, cfg.gamma, cfg.gae_lambda)
    t, lead = traj.obs.shape[0], traj.obs.shape[1:-2]
    actor_hidden = agents.initial_actor_hidden(lead) if actor_hidden is None else actor_hidden
    critic_hidden = agents.initial_critic_hidden(lead) if critic_hidden is None else critic_hidden
    if agents.continuous and cfg.uses_q_critic:
        from perla_jax.continuous import estimate_continuous

        return estimate_continuous(agents, actor_params, critic_params, traj, key)
    # The states acted in and the states reached (before any reset) go through the critic as one batch.
    head, inputs_both, critic_last = agents.rollout_critic_inputs(critic_params, critic_hidden, traj)  # [2T, E, N, F']
    if not cfg.uses_q_critic:
        values, final_values = jnp.split(agents.critic.apply(head, inputs_both), [t])
        returns = lam_returns(next_step_values(values, final_values, ended))
        return CriticEstimates(
            advantages=returns - values,
            targets=returns,
            old_predictions=values,
            joint_samples=None,
            sample_variance=jnp.zeros_like(values),
            critic_hidden=critic_last,
        )
    # Masked policies: the others' samples and the expectations over own actions skip unavailable ones.
    policy = agents.rollout_policy(actor_params, actor_hidden, traj)  # [2T, E, N]
    probs_now, probs_final = jnp.split(policy.probs, [t])
    samples_both = agents.sample_others(key, policy)  # [2T, E, K, N]
    # The final observations have no action; any action works for their (unused) variance.
    actions_both = jnp.concatenate([traj.action, traj.action], axis=0)  # [2T, E, N]
    # Time chunks bound the peak memory of the [2T, E, N, K, H] per-sample critic batch.
    q_both, q_var_both = jax.lax.map(
        lambda x: marginal_q_head(agents.critic, head, *x),
        (inputs_both, samples_both, actions_both),
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
        critic_hidden=critic_last,
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
