"""Names to environments: every family module declares an ``EnvFamily``, and ``FAMILIES`` lists them.

Adding a family is one module (subclass ``MultiAgentEnv`` where the base does not fit, declare ``FAMILY``)
and one line in ``FAMILIES``; see CONTRIBUTING.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from perla_jax.envs.base import TIME_LIMITS, EnvFamily, MultiAgentEnv
from perla_jax.envs.credit import FAMILY as CREDIT
from perla_jax.envs.custom import FAMILY as CUSTOM
from perla_jax.envs.mabrax import FAMILY as MABRAX
from perla_jax.envs.mpe import FAMILY as MPE
from perla_jax.envs.smax import FAMILY as SMAX

FAMILIES: tuple[EnvFamily, ...] = (MPE, SMAX, MABRAX, CREDIT, CUSTOM)

ALIASES: dict[str, str] = {alias: full for family in FAMILIES for alias, full in family.aliases.items()}
SUPPORTED: tuple[str, ...] = tuple(name for family in FAMILIES for name in family.envs)
REFUSED: dict[str, str] = {name: why for family in FAMILIES for name, why in family.refused.items()}


def resolve_env_name(name: str) -> str:
    """Maps an alias or full jaxmarl name to a supported jaxmarl name, or raises ValueError."""
    full = ALIASES.get(name, name)
    if full in SUPPORTED:
        return full
    if full in REFUSED:
        raise ValueError(f"env={name!r} is refused: {REFUSED[full]}; allowed are {_allowed()}")
    raise ValueError(f"env={name!r} is unknown: allowed are {_allowed()}")


def env_family(name: str) -> EnvFamily:
    """The family of the env ``name`` (alias or jaxmarl name); ValueError for an unknown or refused name."""
    full = resolve_env_name(name)
    return next(family for family in FAMILIES if full in family.envs)


def check_map(name: str, map_name: str) -> None:
    """A family with maps needs one of them; a map given to any other family is refused."""
    family = env_family(name)
    if family.maps is None:
        if map_name:
            with_maps = ", ".join(f"env={f.name}" for f in FAMILIES if f.maps is not None)
            raise ValueError(f"map_name={map_name!r} is refused for env={name!r}: maps exist only for {with_maps}")
        return
    allowed = ", ".join(family.maps())
    if not map_name:
        raise ValueError(
            f"map_name={map_name!r} is invalid with env={name!r}: {family.name.upper()} needs a map (--map): "
            f"allowed are {allowed}"
        )
    if map_name not in family.maps():
        raise ValueError(f"map_name={map_name!r} is unknown: allowed are {allowed}")


def check_time_limit(time_limit: str) -> None:
    """ValueError naming ``time_limit`` unless it is one of ``TIME_LIMITS``."""
    if not isinstance(time_limit, str) or time_limit not in TIME_LIMITS:
        raise ValueError(f"time_limit={time_limit!r} is invalid: allowed are {', '.join(TIME_LIMITS)}")


def make_env(
    name: str, env_kwargs: Mapping[str, Any] | None = None, map_name: str = "", time_limit: str = "bootstrap"
) -> MultiAgentEnv:
    """The environment ``name`` (alias or jaxmarl name); ``map_name`` is the map where the family has maps;
    ``time_limit`` what its time limit means to the critics (``envs.base.TIME_LIMITS``)."""
    check_map(name, map_name)
    check_time_limit(time_limit)
    kwargs = dict(env_kwargs or {})
    try:
        return dataclasses.replace(env_family(name).make(resolve_env_name(name), kwargs, map_name),
                                   time_limit=time_limit)
    except (TypeError, ValueError) as e:
        # jaxmarl's constructors check few of their arguments: name the field whatever they raise.
        if isinstance(e, ValueError) and str(e).startswith("env"):  # our own messages name the field already
            raise
        raise ValueError(f"env_kwargs={kwargs!r} is invalid for env={name!r}: {e}") from e


def _allowed() -> str:
    return ", ".join([f"{a} (= {f})" for a, f in ALIASES.items()] + list(SUPPORTED))
