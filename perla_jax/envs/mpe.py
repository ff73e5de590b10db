"""MPE (JaxMARL's multi-particle environments): the cooperative scenarios.

The base ``MultiAgentEnv`` is MPE's behaviour: the critic's global state is the concatenated observations,
every action of an agent is available, and episodes end only at the time limit (a truncation). In
speaker_listener the agents differ (speaker: 3 numbers seen, 3 actions; listener: 11 and 5): the speaker's
observation is zero-padded to 11 and its actions 3 and 4 are unavailable (see ``MultiAgentEnv``).
"""

from __future__ import annotations

from typing import Any, Mapping

import jaxmarl

from perla_jax.envs.base import EnvFamily, MultiAgentEnv, check_spaces


def make_mpe(full_name: str, env_kwargs: Mapping[str, Any], map_name: str) -> MultiAgentEnv:
    del map_name  # MPE has no maps (the registry refuses one before this is called)
    return check_spaces(full_name, MultiAgentEnv(name=full_name, env=jaxmarl.make(full_name, **dict(env_kwargs))))


FAMILY = EnvFamily(
    name="mpe",
    envs=("MPE_simple_spread_v3", "MPE_simple_reference_v3", "MPE_simple_v3", "MPE_simple_speaker_listener_v4"),
    make=make_mpe,
    aliases={"mpe": "MPE_simple_spread_v3"},
    # Measured (BENCHMARKS.md, timelimit-mpe, 8 seeds, 1e6 steps): the time left in the critic's state beats
    # bootstrapping at the limit by 0.23 return and halves pg_var; JaxMARL's terminal-without-time loses 1.5-2.1.
    default_time_limit="observe",
    refused={
        "MPE_simple_tag_v3": "competitive (predators against prey)",
        "MPE_simple_world_comm_v3": "competitive (predators against prey)",
        "MPE_simple_adversary_v3": "competitive (an adversary against the agents)",
        "MPE_simple_crypto_v3": "competitive (an eavesdropper against the speakers)",
        "MPE_simple_push_v3": "competitive (an adversary against the agent)",
    },
)
