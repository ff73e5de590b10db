"""Continuous-action (Box) jaxmarl environments, MABrax first, as padded arrays over agents.

Agents may differ in observation and action size (MABrax's halfcheetah_6x1 has 8- and 9-dimensional
observations): observations are zero-padded to the largest size, and actions live in ``[N, A]`` with
``A`` the largest action size and ``action_mask [N, A]`` marking each agent's real dimensions. The padded
action dimensions are never sent to the environment (``step`` drops them), and the Gaussian policy leaves
them out of its log-probability and entropy (see ``networks.continuous.MaskedDiagNormal``).

Episode ends follow brax's ``EpisodeWrapper`` convention: ``done`` is set both when the body fails
(termination, no bootstrap) and at the time limit, where ``info["truncation"]`` is 1 (bootstrap).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import jaxmarl
import numpy as np

from perla_jax.envs.base import EnvFamily, MultiAgentEnv


@dataclasses.dataclass(frozen=True)
class ContinuousMultiAgentEnv(MultiAgentEnv):
    """A jaxmarl environment with Box action spaces, padded to common sizes (see the module docstring).

    The wrapped env must report the time limit as ``info["truncation"]`` (brax's ``EpisodeWrapper`` does)
    and must not reset itself: its ``step_env`` is called and the reset is done here, keeping the final
    observation for bootstrapping.
    """

    continuous = True

    @property
    def action_counts(self) -> tuple[int, ...]:
        """Each agent's action vector length: the base's ``num_actions`` (the padded width ``A``) and
        ``action_mask`` (``[N, A]``, True on each agent's real dimensions) follow from it."""
        return tuple(int(self.env.action_space(a).shape[0]) for a in self.agents)

    @property
    def action_dims(self) -> tuple[int, ...]:
        return self.action_counts

    @property
    def action_dim(self) -> int:
        return self.num_actions

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Box bounds ``[N, A]`` (padded dimensions get 0; they are dropped before stepping anyway)."""
        low, high = np.zeros((self.num_agents, self.action_dim)), np.zeros((self.num_agents, self.action_dim))
        for i, (agent, dim) in enumerate(zip(self.agents, self.action_dims)):
            space = self.env.action_space(agent)
            low[i, :dim] = np.broadcast_to(space.low, (dim,))
            high[i, :dim] = np.broadcast_to(space.high, (dim,))
        return low, high

    def episode_end(self, inner: Any, done: chex.Array, info: Mapping[str, Any]) -> tuple[chex.Array, ...]:
        """Brax reports a time-limit end as ``info["truncation"]``; any other end (the robot fell) terminates."""
        truncated = done & (info["truncation"] > 0)
        return done & ~truncated, truncated, jnp.zeros_like(done)

    def elapsed_steps(self, inner: Any) -> chex.Array:
        """brax's ``EpisodeWrapper`` counts the episode's steps in ``info["steps"]``."""
        return inner.info["steps"]

    def agent_actions(self, actions: chex.Array) -> dict[str, chex.Array]:
        """Padded actions ``[N, A]`` -> {agent: real dims clipped to its Box}."""
        low, high = self._bounds()
        clipped = jnp.clip(actions, low, high)
        return {a: clipped[i, :dim] for i, (a, dim) in enumerate(zip(self.agents, self.action_dims))}

    def random_actions(self, key: chex.PRNGKey) -> chex.Array:
        """Uniform actions ``[N, A]`` from the Box spaces, zero on padded dims."""
        keys = jax.random.split(key, self.num_agents)
        rows = [self.env.action_space(a).sample(k) for a, k in zip(self.agents, keys)]
        return jnp.stack([jnp.pad(r, (0, self.action_dim - r.shape[0])) for r in rows])

def make_mabrax_env(name: str, env_kwargs: Mapping[str, Any], map_name: str = "") -> ContinuousMultiAgentEnv:
    """jaxmarl's MABrax scenario ``name`` with brax's own auto-reset off (this wrapper resets, keeping the
    final observation) and per-agent observations and actions (padding is done here, with a mask)."""
    del map_name  # MABrax has no maps (the registry refuses one before this is called)
    kwargs = dict(env_kwargs)
    for key, needed in (("auto_reset", False), ("homogenisation_method", None)):
        if kwargs.get(key, needed) != needed:
            raise ValueError(f"env_kwargs {key}={kwargs[key]!r} is not supported: allowed is {needed!r}")
    kwargs.update(auto_reset=False, homogenisation_method=None)
    try:
        import brax  # noqa: F401  (optional dependency, imported by jaxmarl lazily; fail here with the install hint)
    except ImportError as err:
        raise ImportError(f'env={name!r} needs brax: pip install -e ".[mabrax]"') from err
    return ContinuousMultiAgentEnv(name=name, env=jaxmarl.make(name, **kwargs))


FAMILY = EnvFamily(
    name="mabrax",
    # jaxmarl 0.2 names of the multi-agent MuJoCo (brax) scenarios.
    envs=("ant_4x2", "halfcheetah_6x1", "hopper_3x1", "walker2d_2x3", "humanoid_9|8"),
    make=make_mabrax_env,
    aliases={"mabrax": "ant_4x2"},
    continuous=True,
)
