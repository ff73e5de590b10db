"""What every critic sees: per-agent input features (global state or own observation, agent id) and, for
``network="rnn"``, a GRU torso in front of the critic's head. Each critic kind composes one of these."""

from __future__ import annotations

import dataclasses
from typing import Callable

import chex
import jax
import jax.numpy as jnp

from perla_jax.agents import broadcast_ids
from perla_jax.algos import AlgoSpec
from perla_jax.critics.bootstrap import BootstrapSteps, bootstrap_steps
from perla_jax.networks.recurrent import GRUTorso, replay_rollout, scan_sequence
from perla_jax.types import Trajectory

HeadInit = Callable[[chex.PRNGKey, chex.Array], chex.ArrayTree]


@dataclasses.dataclass(frozen=True)
class CriticInputs:
    """The state path of a critic: features, then (recurrent) the GRU torso. Head parameters are
    ``params`` (feed-forward) or ``params["head"]`` beside ``params["torso"]`` (recurrent)."""

    spec: AlgoSpec
    num_agents: int
    obs_dim: int
    state_dim: int
    torso: GRUTorso | None = None
    observes_time: bool = False  # the state's last entry is the time left (envs.base, time_limit="observe")
    factored: bool = False  # per-agent own parts first (networks.factored), see ``features``
    state_path: bool = True  # factored and centralised: the global state follows the own part
    bootstrap_capacity: int = 0  # steps per environment whose reached state needs a value (0: every step)

    @property
    def recurrent(self) -> bool:
        return self.torso is not None

    def features(self, obs: chex.Array, state: chex.Array) -> chex.Array:
        """Observations ``[..., N, O]`` and global state ``[..., S]`` -> per-agent critic input ``[..., N, F]``.

        ``factored``: agent j's own part (observation, time left, id; ``agent_dim`` wide), then, for a centralised
        critic with ``state_path``, the global state, which only agent i's own path reads (a recurrent torso sees
        it too); without it the state is never built into the input."""
        if self.factored:
            own = self._with_id(self._own_observation(obs, state), obs)
            if not (self.spec.centralised and self.state_path):
                return own
            return jnp.concatenate([own, self._broadcast_state(obs, state)], axis=-1)
        base = self._broadcast_state(obs, state) if self.spec.centralised else self._own_observation(obs, state)
        return self._with_id(base, obs)

    @property
    def agent_dim(self) -> int:
        """Width of agent j's own part of ``features`` (factored layout)."""
        return self.obs_dim + int(self.observes_time) + (self.num_agents if self.spec.agent_id_in_critic else 0)

    @property
    def head_agent_dim(self) -> int:
        """Width of agent j's own part of the head's input: ``agent_dim``, or (recurrent) the whole GRU output,
        which has mixed in the state where ``features`` holds it."""
        return self.torso.width if self.recurrent else self.agent_dim

    def _broadcast_state(self, obs: chex.Array, state: chex.Array) -> chex.Array:
        return jnp.broadcast_to(state[..., None, :], (*obs.shape[:-1], state.shape[-1]))

    def _own_observation(self, obs: chex.Array, state: chex.Array) -> chex.Array:
        if not self.observes_time:
            return obs
        # an agent's own part carries the time left, which a centralised critic otherwise reads in the state
        time_left = jnp.broadcast_to(state[..., None, -1:], (*obs.shape[:-1], 1))
        return jnp.concatenate([obs, time_left], axis=-1)

    def _with_id(self, base: chex.Array, obs: chex.Array) -> chex.Array:
        if not self.spec.agent_id_in_critic:
            return base
        return jnp.concatenate([base, broadcast_ids(obs, self.num_agents)], axis=-1)

    def initial_carry(self, lead: tuple[int, ...]) -> chex.Array | None:
        return None if not self.recurrent else jnp.zeros((*lead, self.num_agents, self.torso.width))

    def init(self, key: chex.PRNGKey, init_head: HeadInit) -> chex.ArrayTree:
        """Critic parameters; ``init_head(key, head_input [N, F'])`` initialises the head."""
        features = self.features(jnp.zeros((self.num_agents, self.obs_dim)), jnp.zeros((self.state_dim,)))
        if not self.recurrent:
            return init_head(key, features)
        k_torso, k_head = jax.random.split(key)
        hidden = jnp.zeros((self.num_agents, self.torso.width))
        torso = self.torso.init(k_torso, hidden, features)
        return {"torso": torso, "head": init_head(k_head, hidden)}

    def _torso_step(self, params: chex.ArrayTree):
        return lambda hidden, x: self.torso.apply(params["torso"], hidden, x)

    def sequence(
        self, params: chex.ArrayTree, hidden0: chex.Array | None, obs: chex.Array, state: chex.Array, first: chex.Array
    ) -> tuple[chex.ArrayTree, chex.Array]:
        """(head parameters, the head's input ``[T, ..., N, F']``) along sequences from ``hidden0 [..., N, H]``.
        Feed-forward: the parameters and ``features`` unchanged (any leading axes); recurrent: the GRU's outputs."""
        if not self.recurrent:
            return params, self.features(obs, state)
        _, out = scan_sequence(self._torso_step(params), hidden0, self.features(obs, state), first)
        return params["head"], out

    def bootstrap_steps(self, traj: Trajectory) -> BootstrapSteps:
        """The steps of ``traj [T, E, ...]`` whose reached state needs a value (``critics.bootstrap``)."""
        t = traj.obs.shape[0]
        return bootstrap_steps(traj.truncated, min(self.bootstrap_capacity or t, t))

    def rollout(
        self, params: chex.ArrayTree, hidden0: chex.Array | None, traj: Trajectory, steps: BootstrapSteps
    ) -> tuple[chex.ArrayTree, chex.Array, chex.Array, chex.Array | None]:
        """(head parameters, head input ``[T, E, N, F']`` at a rollout's states, head input ``[C, E, N, F']`` at the
        states the ``steps`` reached, the hidden state after the rollout ``[E, N, H]`` or None)."""
        now = self.features(traj.obs, traj.state)
        final = self.features(steps.take(traj.final_obs), steps.take(traj.final_state))
        if not self.recurrent:
            return params, now, final, hidden0
        last, out, reached = replay_rollout(self._torso_step(params), hidden0, now, traj.first, final, steps.take)
        return params["head"], out, reached, last
