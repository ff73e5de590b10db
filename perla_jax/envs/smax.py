"""SMAX (JaxMARL's StarCraft Multi-Agent Challenge) against its built-in heuristic enemy.

The learning agents are the allies. On top of ``envs.base.MultiAgentEnv`` SMAX brings three things:

- the critic's global state is SMAX's own world state (every unit's health, position, cooldown and type,
  plus the teams and types), not the concatenated observations;
- actions are masked: dead units can only stop, and an enemy can be attacked only when it is alive and in
  range (``get_avail_actions``);
- episodes end in a battle end (one side all dead: termination, no bootstrap) or at the time limit
  (truncation). jaxmarl checks its time limit (``step >= max_steps``) before incrementing the step, so a
  timed-out episode has ``max_steps + 1`` transitions; a battle end on that same step counts as terminated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import chex
import jax.numpy as jnp
import jaxmarl
from jaxmarl.environments.smax import map_name_to_scenario, smax_env

from perla_jax.envs.base import EnvFamily, MultiAgentEnv, check_spaces


def map_names() -> tuple[str, ...]:
    """The maps of jaxmarl's scenario table (read each time: ``register_scenario`` may add some)."""
    return tuple(smax_env.MAP_NAME_TO_SCENARIO)


@dataclasses.dataclass(frozen=True)
class SMAXEnv(MultiAgentEnv):
    """``HeuristicEnemySMAX`` on one map, as stacked arrays over the allied agents."""

    map_name: str = ""

    @property
    def world_state_dim(self) -> int:
        return int(self.env.state_size)

    @property
    def reports_wins(self) -> bool:
        return True

    def world_state(self, inner: Any, obs: chex.Array) -> chex.Array:
        return self.env.get_world_state(inner)

    def elapsed_steps(self, inner: Any) -> chex.Array:
        return inner.state.step

    def avail_actions(self, inner: Any) -> chex.Array:
        return self.only_real_actions(self._stack(self.env.get_avail_actions(inner)).astype(bool))

    def episode_end(self, inner: Any, done: chex.Array, info: Mapping[str, Any]) -> tuple[chex.Array, ...]:
        alive = inner.state.unit_alive  # [allies + enemies], allies first
        allies_dead = ~jnp.any(alive[: self.num_agents])
        enemies_dead = ~jnp.any(alive[self.num_agents :])
        battle_end = allies_dead | enemies_dead
        # Both sides dead at once is a draw: terminated, not won (jaxmarl pays no win bonus either).
        return done & battle_end, done & ~battle_end, enemies_dead & ~allies_dead


def make_smax(full_name: str, env_kwargs: Mapping[str, Any], map_name: str) -> SMAXEnv:
    kwargs = dict(env_kwargs)
    if "scenario" in kwargs:
        raise ValueError("env_kwargs['scenario'] is refused for SMAX: choose the scenario with map_name (--map)")
    env = jaxmarl.make(full_name, scenario=map_name_to_scenario(map_name), **kwargs)
    return check_spaces(full_name, SMAXEnv(name=full_name, env=env, map_name=map_name))


FAMILY = EnvFamily(
    name="smax",
    envs=("HeuristicEnemySMAX",),
    make=make_smax,
    aliases={"smax": "HeuristicEnemySMAX"},
    # JaxMARL's SMAX baselines and the PERLA paper's MAPPO are recurrent.
    default_network="rnn",
    maps=map_names,
)
