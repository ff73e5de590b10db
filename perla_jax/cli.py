"""Command-line options for every ``Config`` field, so that any script can offer the whole Config.

``add_config_options(parser)`` adds one option per field (``num_seeds`` is ``--seeds``, ``map_name`` is
``--map``), typed from the dataclass, with the choices of the registries (algorithms, advantage estimators,
environments); ``config_from_args`` builds the validated Config from the parsed options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

from perla_jax.config import (
    ACTIVATIONS, ADVANTAGES, ALGOS, CRITIC_ACTION_LAYERS, CRITIC_ARCHS, CRITIC_POOLS, CRITIC_TARGETS, TIME_LIMITS, Config,
)
from perla_jax.envs.registry import ALIASES, SUPPORTED
from perla_jax.presets import PRESETS, preset_config

OPTION_NAMES = {"num_seeds": "seeds", "map_name": "map"}  # field -> option name where it differs from the field's
CHOICES = {
    "algo": ALGOS,
    "advantage": ADVANTAGES,
    "activation": ACTIVATIONS,
    "critic_action_layer": CRITIC_ACTION_LAYERS,
    "critic_arch": CRITIC_ARCHS,
    "critic_pool": CRITIC_POOLS,
    "critic_target": CRITIC_TARGETS,
    "time_limit": TIME_LIMITS,
}
HELP = {  # one line per Config field; a field missing here still gets an option
    "env": "environment: "
    + ", ".join(f"{alias} (= {full})" for alias, full in ALIASES.items())
    + ", or a supported jaxmarl name: "
    + ", ".join(name for name in SUPPORTED if name != "custom")
    + " (custom: your own environment object, given to make_train from Python)",
    "env_kwargs": "keyword arguments for the environment, as a JSON object",
    "map_name": "SMAX map from jaxmarl's scenario table, e.g. 3m, 2s3z (required with --env smax; none elsewhere)",
    "algo": "algorithm",
    "advantage": "advantage estimator",
    "k": "joint-action samples K for the marginalised critic",
    "num_envs": "parallel environments per seed",
    "num_steps": "rollout length per update",
    "total_timesteps": "env transitions per seed, summed over environments; 2e6 style accepted",
    "update_epochs": "PPO epochs per update",
    "num_minibatches": "minibatches per epoch (must divide num_envs*num_steps)",
    "actor_lr": "actor learning rate",
    "critic_lr": "critic learning rate",
    "anneal_lr": "anneal learning rates linearly to 0",
    "gamma": "discount factor",
    "gae_lambda": "GAE lambda",
    "clip_eps": "PPO clip range (also clips the value loss)",
    "ent_coef": "entropy bonus coefficient",
    "vf_coef": "value loss coefficient",
    "max_grad_norm": "global gradient-norm clip",
    "actor_hidden": "actor hidden layer sizes, comma-separated",
    "critic_hidden": "critic hidden layer sizes, comma-separated",
    "critic_arch": "PERLA Q-critic: factored (shared per-agent encoder pooled over the others) or mlp (one MLP on "
    "state and others' actions); default factored; refused for mappo/ippo",
    "critic_rank": "factored Q-critic: width of each agent's encoding phi(o_j, a_j, id_j)",
    "critic_others_scale": "factored Q-critic: initial scale of phi's output layer (0: the others' part starts at zero)",
    "critic_state_path": "factored Q-critic of perla_mappo: agent i's own path also reads the global state",
    "critic_pool": "factored Q-critic: how agent i pools the others, mean over j != i or attention (weights from "
    "their observations and ids)",
    "critic_out_scale": "initial scale of every critic's output layer",
    "critic_action_layer": "mlp Q-critic: hidden layer the others' actions enter: first (COMA input) or last (cheaper in K)",
    "critic_target": "what the PERLA Q-critic regresses: marginal (Algorithm 1: the K-sample mean Q^) or joint "
    "(Q at the joint action taken)",
    "value_norm": "every critic regresses targets standardised by running statistics (MAPPO's ValueNorm)",
    "activation": "hidden-layer activation",
    "network": "ff (MLPs) or rnn (GRU after the first layer; sequence minibatches); default: rnn on SMAX, ff elsewhere",
    "time_limit": "a step at the time limit: bootstrap (truncation), terminal (no bootstrap) or observe (terminal, "
    "time left in the critic's input); default: the env family's (see README)",
    "actor_agent_id": "append a one-hot agent id to actor observations",
    "share_actor": "one actor network shared by all agents",
    "critic_time_chunk": "time steps of the K-sample critic batch evaluated at once (memory, not results)",
    "pg_spread_every": "compute pg_var and pg_snr at every this many updates, NaN between (they cost ~15%% of an "
    "update at 8 seeds)",
    "eval_every": "evaluate greedy policies every this many updates into eval.csv (0: off)",
    "eval_episodes": "episodes per seed of each periodic evaluation",
    "own_action_samples": "M own-action samples for PERLA's V^(s) on continuous actions (MABrax), >= 1",
    "num_seeds": "seeds trained in parallel (vmap)",
    "seed": "base PRNG seed; seed i uses split(PRNGKey(seed), seeds)[i]",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default except None (whose meaning the option's help spells out)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def option_name(field: str) -> str:
    """``total_timesteps`` -> ``--total-timesteps`` (``num_seeds`` -> ``--seeds``)."""
    return "--" + OPTION_NAMES.get(field, field).replace("_", "-")


def whole_number(text: str) -> int | float:
    """An int from ``"2000000"`` or ``"2e6"``; non-whole floats pass through for Config to refuse."""
    try:
        return int(text)
    except ValueError:
        value = float(text)  # ValueError here becomes argparse's "invalid whole_number value"
        return int(value) if value.is_integer() else value


def int_tuple(text: str) -> tuple[int, ...]:
    """``"64,64"`` -> ``(64, 64)``."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers, e.g. 64,64") from None


def json_object(text: str) -> dict:
    """A JSON object such as ``'{"max_steps": 50}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({e.msg})") from None
    except (RecursionError, ValueError) as e:  # nesting too deep; an int past Python's digit limit
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a usable JSON object ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
    return value


def _add_field(group: argparse._ArgumentGroup, field: dataclasses.Field, hint) -> argparse.Action:
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    flag, kw = option_name(field.name), {"dest": field.name, "help": HELP.get(field.name, field.name)}
    if hint is bool:
        return group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kw)
    if field.name == "total_timesteps":
        kw.update(type=whole_number, default=default, metavar="N")
    elif hint in (int, float, str):
        kw.update(type=hint, default=default)
    elif typing.get_origin(hint) is tuple:
        # A string default is parsed by ``type`` too, so help shows 64,64 and the value is a tuple.
        kw.update(type=int_tuple, default=",".join(map(str, default)), metavar="H1,H2,...")
    else:  # Mapping[str, Any]
        kw.update(type=json_object, default=json.dumps(default), metavar="JSON")
    if field.name in CHOICES:
        kw["metavar"] = "{" + ",".join(CHOICES[field.name]) + "}"
    return group.add_argument(flag, **kw)


def add_config_options(parser: argparse.ArgumentParser, config_defaults: bool = True) -> None:
    """One option per Config field, in a group of their own. With ``config_defaults=False`` they default to
    None, so only the options given on the command line come back set."""
    group = parser.add_argument_group("config (perla_jax.Config fields)")
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        action = _add_field(group, field, hints[field.name])
        if not config_defaults:
            action.default = None  # no Config field accepts None, so None means "not given"
    group.add_argument("--preset", choices=tuple(PRESETS), default=None,
                       help="start from a reference configuration for the env's family (jaxmarl: JaxMARL's "
                            "baseline yaml; see perla_jax/presets.py); options given explicitly override it")


def config_from_args(args: argparse.Namespace, given: dict | None = None) -> Config:
    """The Config of parsed options (ValueError naming the field for a refused value). With ``--preset``, the
    preset's values replace the defaults and ``given`` (the options given on the command line, i.e. parsed with
    ``config_defaults=False``) override them."""
    if getattr(args, "preset", None):
        if given is None:
            raise ValueError("preset needs the options given on the command line (parse with config_defaults=False)")
        names = {f.name for f in dataclasses.fields(Config)}
        cfg = preset_config(args.preset, {k: v for k, v in given.items() if k in names and v is not None})
    else:
        cfg = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    check_given_apply(cfg, given or {})
    return cfg


def check_given_apply(cfg: Config, given: dict) -> None:
    """Refuses an option given on the command line that ``cfg``'s critic never reads, even at its default value
    (``--algo mappo --k 16``): Config itself can only refuse values that differ from the default."""
    for name, applies_to in cfg.inapplicable().items():
        if given.get(name) is not None:
            raise ValueError(
                f"{option_name(name)} {given[name]!r} does nothing with algo={cfg.algo!r}: it applies to {applies_to}"
            )
