"""The agents' policies: one actor (shared or per agent, feed-forward or recurrent) and its distribution.

Shapes: ``[..., N, O]`` observations with any leading axes (``[T, E]`` in a rollout batch, ``[B]`` in a
minibatch); ``[..., N, A]`` available actions (bool, discrete only); ``K`` marginalisation samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import distrax
import jax
import jax.numpy as jnp

from perla_jax.config import Config
from perla_jax.marginalisation import sample_joint_actions
from perla_jax.networks.heads import PolicyHead, make_policy_head
from perla_jax.networks.layers import agent_ids
from perla_jax.networks.recurrent import GRUTorso, replay_rollout, reset_where, scan_sequence
from perla_jax.types import Trajectory


@dataclasses.dataclass(frozen=True)
class Agents:
    """Static description of the actor; its parameters live in the trainer's state."""

    cfg: Config
    num_agents: int
    obs_dim: int
    head: PolicyHead
    # Config.network="rnn": a GRU torso in front of the head (see networks/recurrent.py); None: feed-forward.
    torso: GRUTorso | None = None

    @classmethod
    def build(cls, cfg: Config, env: Any) -> "Agents":
        recurrent = cfg.network == "rnn"
        # A recurrent net's torso takes the first hidden width; the head keeps the remaining layers.
        hidden = cfg.actor_hidden[1:] if recurrent else cfg.actor_hidden
        torso = GRUTorso(cfg.actor_hidden[0], cfg.activation) if recurrent else None
        return cls(cfg, env.num_agents, env.obs_dim, make_policy_head(env, hidden, cfg.activation), torso)

    @property
    def recurrent(self) -> bool:
        return self.torso is not None

    @property
    def actor(self):
        """The head's flax module (its ``apply`` goes into the actor's TrainState)."""
        return self.head.module

    def actor_inputs(self, obs: chex.Array) -> chex.Array:
        if not self.cfg.actor_agent_id:
            return obs
        return jnp.concatenate([obs, broadcast_ids(obs, self.num_agents)], axis=-1)

    def init_actor(self, key: chex.PRNGKey) -> chex.ArrayTree:
        dummy = self.actor_inputs(jnp.zeros((self.num_agents, self.obs_dim)))[0]

        def one(k):
            if not self.recurrent:
                return self.actor.init(k, dummy)
            k_torso, k_head = jax.random.split(k)
            width = self.torso.width
            torso = self.torso.init(k_torso, jnp.zeros((width,)), dummy)
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

    def _head_policy(self, params: chex.ArrayTree, x: chex.Array, avail: chex.Array | None) -> distrax.Distribution:
        out = self._per_agent(lambda p, v: self.actor.apply(p["head"] if self.recurrent else p, v), params, x)
        return self.head.distribution(out, avail)

    def policy(self, params: chex.ArrayTree, obs: chex.Array, avail: chex.Array | None = None) -> distrax.Distribution:
        """Feed-forward actor: observations ``[..., N, O]`` -> policy with batch shape ``[..., N]``; unavailable
        discrete actions (``avail [..., N, A]`` false) get probability 0, and without ``avail`` every action
        is available. Recurrent actors go through ``actor_step`` / ``actor_sequence``."""
        if self.recurrent:
            raise ValueError("a recurrent actor (network='rnn') has no per-observation policy: use actor_step")
        return self._head_policy(params, self.actor_inputs(obs), avail)

    def initial_actor_carry(self, lead: tuple[int, ...]) -> chex.Array | None:
        """Zero hidden state ``[*lead, N, H]``; None for feed-forward actors."""
        return None if not self.recurrent else jnp.zeros((*lead, self.num_agents, self.torso.width))

    def _torso_step(self, params: chex.ArrayTree):
        return lambda hidden, x: self._per_agent(lambda p, h, v: self.torso.apply(p["torso"], h, v), params, hidden, x)

    def actor_step(
        self, params: chex.ArrayTree, hidden: chex.Array | None, obs: chex.Array, first: chex.Array, avail=None
    ) -> tuple[chex.Array | None, distrax.Distribution]:
        """One acting step: hidden ``[..., N, H]`` (None if feed-forward), obs ``[..., N, O]``, ``first [...]``
        (obs begins an episode: the hidden state is reset first) -> (hidden', policy ``[..., N]``)."""
        if not self.recurrent:
            return hidden, self.policy(params, obs, avail)
        hidden, out = self._torso_step(params)(reset_where(first, hidden), self.actor_inputs(obs))
        return hidden, self._head_policy(params, out, avail)

    def actor_sequence(
        self, params: chex.ArrayTree, hidden0: chex.Array | None, obs: chex.Array, first: chex.Array, avail=None
    ) -> distrax.Distribution:
        """Policies along sequences ``obs [T, ..., N, O]`` from ``hidden0 [..., N, H]`` (what ``actor_step``
        gave in the rollout); feed-forward actors accept any leading axes and ignore hidden0 and first."""
        if not self.recurrent:
            return self.policy(params, obs, avail)
        _, out = scan_sequence(self._torso_step(params), hidden0, self.actor_inputs(obs), first)
        return self._head_policy(params, out, avail)

    def rollout_policy(self, params: chex.ArrayTree, hidden0: chex.Array | None, traj: Trajectory) -> distrax.Distribution:
        """Policies ``[2T, E, N]`` at a rollout's observations, then at the observations each step reached."""
        avail = jnp.concatenate([traj.avail, traj.final_avail], axis=0)
        if not self.recurrent:
            return self.policy(params, jnp.concatenate([traj.obs, traj.final_obs], axis=0), avail)
        _, out, final = replay_rollout(self._torso_step(params), hidden0, self.actor_inputs(traj.obs), traj.first,
                                       self.actor_inputs(traj.final_obs))
        return self._head_policy(params, jnp.concatenate([out, final], axis=0), avail)

    def sample_others(self, key: chex.PRNGKey, policy: distrax.Distribution) -> chex.Array:
        """K joint actions ``[..., K, N(, A)]`` from a policy with batch shape ``[..., N]``."""
        return jnp.moveaxis(sample_joint_actions(key, policy, self.cfg.k), 0, -2 - self.head.event_ndim)


def broadcast_ids(x: chex.Array, n: int) -> chex.Array:
    """One-hot agent ids ``[..., N, N]`` for per-agent inputs ``x [..., N, F]``."""
    return jnp.broadcast_to(agent_ids(n), (*x.shape[:-1], n))
