"""The algorithms as a table of traits, so no code reads an algorithm's traits from its name."""

from __future__ import annotations

import dataclasses

ALGO_CRITICS = ("q", "v")  # the critic kinds an AlgoSpec can name


@dataclasses.dataclass(frozen=True)
class AlgoSpec:
    """What sets an algorithm apart; the actor and the PPO update are the same for all.

    ``critic``: ``"q"`` is PERLA's joint-action critic Q(s, a_i, a_-i) marginalised over K samples of the
    others' actions; ``"v"`` a state-value critic. ``centralised``: the critic sees the environment's global
    state (else the agent's own observation). ``agent_id_in_critic``: a one-hot agent id joins the critic's
    input (a PERLA critic needs it to locate the agent's blank slot among the others' actions).
    """

    critic: str
    centralised: bool
    agent_id_in_critic: bool

    def __post_init__(self) -> None:
        if self.critic not in ALGO_CRITICS:
            raise ValueError(f"critic={self.critic!r} is invalid: allowed are {', '.join(ALGO_CRITICS)}")


ALGO_SPECS: dict[str, AlgoSpec] = {
    "perla_mappo": AlgoSpec(critic="q", centralised=True, agent_id_in_critic=True),
    "perla_ippo": AlgoSpec(critic="q", centralised=False, agent_id_in_critic=True),
    "mappo": AlgoSpec(critic="v", centralised=True, agent_id_in_critic=True),
    "ippo": AlgoSpec(critic="v", centralised=False, agent_id_in_critic=False),
}
ALGOS: tuple[str, ...] = tuple(ALGO_SPECS)
