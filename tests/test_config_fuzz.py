"""Property-based tests (hypothesis) of Config and the CLI over every Config field: any value either builds a
Config whose tiny train step compiles and runs, or is refused by a ValueError that names the field, before
anything compiles; nothing in between (no TypeError, OverflowError, ... and no traceback from inside jax).

The strategies are a table keyed by field name and checked against ``dataclasses.fields(Config)``, so a new
field without one fails ``test_every_field_has_a_strategy``. Every property runs derandomised (a fixed
sequence of examples, no example database), so CI sees the same cases every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import re
import typing
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from programs import load_script

from perla_jax import METRICS, Config, make_trainer
from perla_jax.config import (
    ACTIVATIONS,
    ADVANTAGES,
    ALGOS,
    CRITIC_ACTION_LAYERS,
    CRITIC_ARCHS,
    CRITIC_POOLS,
    CRITIC_TARGETS,
    MAX_INT,
    MAX_SEED,
    NETWORKS,
    TIME_LIMITS,
)
from perla_jax.command import build_train_parser
from perla_jax.envs.registry import ALIASES, REFUSED, SUPPORTED

FIELDS = tuple(f.name for f in dataclasses.fields(Config))
HINTS = typing.get_type_hints(Config)
SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "run.py"

# Values of the wrong type, out of range or odd (NaN, huge ints, numpy scalars) for most fields; each field's
# strategy mixes them with its own valid and near-valid values.
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.sampled_from(
        [
            math.nan, math.inf, -math.inf, 0, -1, 2**31, 2**32, 2**63, 2**64, 10**400, -(10**400), 1e300, -0.0,
            (), [], {}, (0,), (-1, 8), (8, 0), [1, None], (True, 2), (2.0,), "64,64", {"a": 1}, {1: 2},
            np.int64(4), np.float32(0.5), np.bool_(True), np.array([1, 2]),
        ]
    ),
    st.lists(st.integers(-3, 3), max_size=3),
    st.tuples(st.integers(-2, 2)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
INT_EDGES = st.sampled_from([0, -1, 1, MAX_INT, MAX_INT + 1, MAX_SEED, MAX_SEED + 1, 2**63, 10**30])
FLOAT_EDGES = st.sampled_from([0.0, -0.0, 1.0, 1.0 + 1e-12, -1e-12, 1e-30, 3.4e38, 3.5e38, 1e300, 10**40])


def _choice(allowed: tuple[str, ...], unknown: tuple[str, ...] = ("", "bogus", "TANH", "td ")):
    return st.one_of(st.sampled_from(allowed), st.sampled_from(unknown), st.text(max_size=6), HOSTILE)


def _int(low: int, high: int):
    return st.one_of(st.integers(low, high), INT_EDGES, st.integers(), HOSTILE)


def _float(low: float, high: float):
    return st.one_of(
        st.floats(low, high), FLOAT_EDGES, st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2), HOSTILE
    )


def _bool():
    return st.one_of(st.booleans(), st.sampled_from([0, 1, "yes", "False", None, np.bool_(False)]), HOSTILE)


_width = st.one_of(st.integers(1, 64), st.integers(-2, 2), st.booleans(), st.floats(), st.just(MAX_INT + 1), st.none())
SIZES = st.one_of(
    st.lists(st.integers(1, 64), min_size=1, max_size=3).map(tuple),
    st.lists(st.integers(1, 64), min_size=1, max_size=3),
    st.lists(_width, max_size=3).map(tuple),
    st.lists(_width, max_size=3),
    HOSTILE,
)
ENV_KWARGS = st.one_of(
    st.just({}),
    st.fixed_dictionaries({}, optional={"max_steps": st.integers(1, 50), "num_agents": st.integers(2, 4)}),
    st.dictionaries(
        st.one_of(st.text(max_size=4), st.integers(), st.none(), st.sampled_from(["max_steps", "a b", "1x"])),
        st.one_of(st.integers(), st.text(max_size=2), st.floats()),
        max_size=2,
    ),
    HOSTILE,
)

STRATEGIES: dict[str, st.SearchStrategy] = {
    "env": st.one_of(
        st.sampled_from(tuple(ALIASES) + SUPPORTED),
        st.sampled_from(tuple(REFUSED)),
        st.sampled_from(["atari", "", "MPE", "smax ", "SMAX"]),
        HOSTILE,
    ),
    "env_kwargs": ENV_KWARGS,
    "map_name": st.one_of(st.sampled_from(["", "3m", "2s3z", "25m", "4m", " 3m"]), HOSTILE),
    "algo": _choice(ALGOS),
    "advantage": _choice(ADVANTAGES),
    "k": _int(1, 64),
    "num_envs": _int(1, 64),
    "num_steps": _int(1, 256),
    "total_timesteps": st.one_of(
        st.integers(1, 10**8), st.sampled_from([2e6, 1e7, 1.5, 2.0**31, 2**31 - 1, 1e300]), _float(1.0, 1e8)
    ),
    "update_epochs": _int(1, 8),
    "num_minibatches": _int(1, 16),
    "actor_lr": _float(1e-6, 1e-2),
    "critic_lr": _float(1e-6, 1e-2),
    "anneal_lr": _bool(),
    "gamma": _float(0.0, 1.0),
    "gae_lambda": _float(0.0, 1.0),
    "clip_eps": _float(1e-3, 1.0),
    "ent_coef": _float(0.0, 0.1),
    "vf_coef": _float(0.0, 2.0),
    "max_grad_norm": _float(1e-3, 10.0),
    "actor_hidden": SIZES,
    "critic_hidden": SIZES,
    "critic_action_layer": _choice(CRITIC_ACTION_LAYERS),
    "critic_arch": _choice(("",) + CRITIC_ARCHS),
    "critic_rank": _int(1, 32),
    "critic_others_scale": _float(0.0, 2.0),
    "critic_state_path": _bool(),
    "value_norm": _bool(),
    "critic_pool": _choice(CRITIC_POOLS),
    "critic_out_scale": _float(0.0, 2.0),
    "critic_target": _choice(CRITIC_TARGETS),
    "activation": _choice(ACTIVATIONS),
    "network": _choice(("",) + NETWORKS),
    "time_limit": _choice(("",) + TIME_LIMITS),
    "actor_agent_id": _bool(),
    "share_actor": _bool(),
    "critic_time_chunk": _int(1, 64),
    "pg_spread_every": _int(1, 64),
    "eval_every": _int(0, 100),
    "eval_episodes": _int(1, 32),
    "own_action_samples": _int(1, 8),
    "num_seeds": _int(1, 8),
    "seed": _int(0, MAX_SEED),
}
# A random subset of the fields, each with a value from its strategy; the rest keep their defaults. Half the
# examples set a few fields (so that most refusals have one cause and many Configs build), half set about half.
CONFIG_VALUES = st.one_of(
    st.lists(st.sampled_from(FIELDS), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: STRATEGIES[name] for name in names})
    ),
    st.fixed_dictionaries({}, optional={name: STRATEGIES[name] for name in FIELDS}),
)


def _names_field(message: str, names) -> bool:
    """Whether ``message`` names one of ``names`` as a word (``k`` is not named by ``keyword``)."""
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) for name in names)


def _build_or_refusal(values: dict) -> Config | None:
    """The Config of ``values``, or None when it is refused by a ValueError naming one of the given fields; any
    other exception (or a refusal naming no given field) fails the calling test."""
    try:
        return Config(**values)
    except ValueError as e:
        assert _names_field(str(e), values), f"ValueError names none of {sorted(values)}: {e}"
        return None


def test_every_field_has_a_strategy():
    assert set(STRATEGIES) == set(FIELDS), (
        f"fields without a strategy: {sorted(set(FIELDS) - set(STRATEGIES))}; "
        f"strategies without a field: {sorted(set(STRATEGIES) - set(FIELDS))}"
    )


# Property 1: construction alone, many examples (it is cheap: nothing compiles).
@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(CONFIG_VALUES)
def test_config_builds_or_refuses_naming_a_field(values):
    cfg = _build_or_refusal(values)
    event("built" if cfg is not None else "refused")
    if cfg is not None:  # what was built round-trips through config.json (NaN included) and is valid again
        text = json.dumps(cfg.to_dict(), sort_keys=True)
        assert json.dumps(Config.from_dict(json.loads(text)).to_dict(), sort_keys=True) == text


# Property 2: tiny configurations compile and run one train step, or are refused before anything compiles.
@st.composite
def tiny_values(draw) -> dict:
    num_envs, num_steps = draw(st.integers(1, 4)), draw(st.integers(2, 8))
    batch = num_envs * num_steps
    divisors_of_envs = [d for d in range(1, num_envs + 1) if num_envs % d == 0]
    width = st.integers(1, 8)
    values = dict(
        env="mpe",
        env_kwargs=draw(st.sampled_from([{}, {"max_steps": 3}, {"num_agents": 2, "num_landmarks": 2}])),
        algo=draw(st.sampled_from(ALGOS)),
        advantage=draw(st.sampled_from(ADVANTAGES)),
        k=draw(st.integers(1, 3)),
        num_envs=num_envs,
        num_steps=num_steps,
        total_timesteps=batch * draw(st.integers(1, 2)),
        update_epochs=1,
        # Mostly divisors of num_envs (valid for either network), sometimes anything small (may be refused).
        num_minibatches=draw(st.one_of(st.sampled_from(divisors_of_envs), st.integers(1, 4))),
        actor_hidden=tuple(draw(st.lists(width, min_size=1, max_size=3))),
        critic_hidden=tuple(draw(st.lists(width, min_size=1, max_size=3))),
        critic_action_layer=draw(st.sampled_from(CRITIC_ACTION_LAYERS)),
        critic_rank=draw(st.integers(1, 4)),
        critic_pool=draw(st.sampled_from(CRITIC_POOLS)),
        critic_others_scale=draw(st.sampled_from([0.0, 0.5])),
        critic_out_scale=draw(st.sampled_from([0.01, 1.0])),
        critic_target=draw(st.sampled_from(CRITIC_TARGETS)),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        network=draw(st.sampled_from(("", "ff", "rnn", "rnn"))),
        time_limit=draw(st.sampled_from(("",) + TIME_LIMITS)),
        critic_time_chunk=draw(st.integers(1, 16)),
        num_seeds=draw(st.integers(1, 2)),
        seed=draw(st.one_of(st.integers(0, 100), st.just(MAX_SEED))),
    )
    for name in ("anneal_lr", "actor_agent_id", "share_actor", "critic_state_path", "value_norm"):
        values[name] = draw(st.booleans())
    if values["algo"] in ("perla_mappo", "perla_ippo"):  # a V-critic refuses any architecture
        values["critic_arch"] = draw(st.sampled_from(("",) + CRITIC_ARCHS))
    # Valid hyperparameters, edges included; out-of-range ones are property 1's.
    for name, low, high in [
        ("actor_lr", 1e-6, 1.0), ("critic_lr", 1e-6, 1.0), ("gamma", 0.0, 1.0), ("gae_lambda", 0.0, 1.0),
        ("clip_eps", 1e-3, 1.0), ("ent_coef", 0.0, 1.0), ("vf_coef", 0.0, 2.0), ("max_grad_norm", 1e-3, 10.0),
    ]:
        values[name] = draw(st.one_of(st.floats(low, high), st.sampled_from([low, high])))
    return values


# Every example's update is traced (where shape and type errors surface, before XLA compiles) and its metrics'
# shapes checked; the first feed-forward example also compiles and runs a step. On 2 cores compiling costs about
# 8 s a feed-forward example and 20 s a recurrent PERLA one, tracing 1-3 s, so compiling one example keeps the
# property near half a minute (tests/test_train.py and tests/test_recurrent.py compile and run both networks).
_ran: dict[str, str] = {}  # network -> the config JSON that compiled and ran a step


def _check_train_step(cfg: Config) -> None:
    """One jitted train step of ``cfg`` over its seeds, as experiments/run.py runs them (vmap); any exception
    here is a validation gap (Config built a configuration that cannot train)."""
    trainer = make_trainer(cfg)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    init, train_step = jax.jit(jax.vmap(trainer.init)), jax.jit(jax.vmap(trainer.train_step))
    _, abstract_metrics = train_step.trace(jax.eval_shape(init, keys)).out_info  # traces the whole update
    assert {name: v.shape for name, v in abstract_metrics.items()} == {name: (cfg.num_seeds,) for name in METRICS}
    if cfg.network != "ff" or cfg.network in _ran:
        return
    _ran[cfg.network] = json.dumps(cfg.to_dict())
    _, metrics = train_step(init(keys))
    metrics = jax.device_get(metrics)
    assert {name: np.shape(v) for name, v in metrics.items()} == {name: (cfg.num_seeds,) for name in METRICS}
    assert (metrics["env_steps"] == cfg.batch_size).all()
    for name in ("actor_loss", "critic_loss", "entropy"):
        assert np.isfinite(metrics[name]).all(), (name, metrics[name])


TINY_RNN_PERLA = dict(
    env="mpe", env_kwargs={"max_steps": 3}, algo="perla_mappo", advantage="sarsa", k=2, num_envs=2, num_steps=3,
    total_timesteps=6, update_epochs=1, num_minibatches=2, actor_hidden=(3,), critic_hidden=(4, 2),
    critic_action_layer="last", activation="relu", network="rnn", critic_time_chunk=2, num_seeds=1, seed=0,
)


@settings(max_examples=6, derandomize=True, database=None, deadline=None)
@given(tiny_values())
@example(TINY_RNN_PERLA)
def test_tiny_config_trains_or_is_refused_before_compiling(values):
    cfg = _build_or_refusal(values)
    event("refused" if cfg is None else f"built: {'Q' if cfg.uses_q_critic else 'V'}-critic, {cfg.network}")
    if cfg is not None:
        _check_train_step(cfg)


# Property 3: the CLI. Options come from experiments/run.py's parser; each case ends in a Config, in argparse's
# exit 2 naming the option, or in the ValueError naming the field that experiments/run.py turns into exit 2.
cli = load_script("perla_run_cli_fuzz", "experiments/run.py")
PARSER = build_train_parser(prog="run.py")
# field -> its option (the first option string of the action that stores it), read from the parser itself
FLAGS = {a.dest: a.option_strings[0] for a in PARSER._actions if a.dest in FIELDS and a.option_strings}

GARBAGE_TEXT = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            "", " ", "nan", "NaN", "inf", "-inf", "1e400", "1e20", "2e6", "1.5", "0", "-1", "-0", "1_000", "0x10",
            "\u0663", "1" * 5000, "8,8", "8,,8", "8, 8", ",", "[8]", "()", "{}", "[]", "null", "true", "True", "yes",
            '{"max_steps": 5}', '{"1": 2}', '{"a b": 1}', '{"a": NaN}', '{"a": {"b": []}}', "rnn", "smax", "3m",
            "--k", "-x", "=", "[" * 100_000 + "]" * 100_000,
        ]
    ),
)


def _as_text(value) -> str:
    """A value of a field's strategy as a user would type it."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _option_args(name: str) -> st.SearchStrategy[list[str]]:
    flag = FLAGS[name]
    if HINTS[name] is bool:  # BooleanOptionalAction: --x, --no-x; an explicit value is an error
        return st.one_of(
            st.just([flag]), st.just(["--no-" + flag[2:]]), GARBAGE_TEXT.map(lambda t: [f"{flag}={t}"])
        )
    text = st.one_of(STRATEGIES[name].map(_as_text), GARBAGE_TEXT)
    return st.one_of(text.map(lambda t: [f"{flag}={t}"]), text.map(lambda t: [flag, t]))


# As CONFIG_VALUES: half the examples give a few options, half about half of them.
CLI_ARGS = st.one_of(
    st.lists(st.sampled_from(sorted(FLAGS)), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: _option_args(name) for name in names})
    ),
    st.fixed_dictionaries({}, optional={name: _option_args(name) for name in FIELDS if name in FLAGS}),
)


def test_every_field_is_a_cli_option():
    assert set(FLAGS) == set(FIELDS), f"fields without an option: {sorted(set(FIELDS) - set(FLAGS))}"


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(CLI_ARGS)
def test_cli_builds_config_or_exits_naming_the_option(options):
    argv = [arg for args in options.values() for arg in args]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = PARSER.parse_args(argv)
    except SystemExit as e:
        assert e.code == 2, (argv, e.code)
        message = stderr.getvalue()
        flags = [FLAGS[name] for name in options]
        assert any(flag in message for flag in flags), f"{argv}: argparse's message names no option given: {message}"
        event("argparse exit 2")
        return
    # As perla_jax.command.train_main builds it (which turns the ValueError into parser.error, exit 2).
    try:
        Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    except ValueError as e:
        assert _names_field(str(e), options), f"{argv}: ValueError names no field given: {e}"
        event("refused by Config")
    else:
        event("built")


@pytest.mark.parametrize("name", [n for n in FIELDS if HINTS[n] is not bool])
def test_cli_default_is_the_config_default(name):
    """Unset options give Config's defaults (a parsed default, e.g. the hidden sizes' "64,64", included); the
    fields whose empty default the env family resolves stay empty on the command line."""
    args = PARSER.parse_args([])
    # network and time_limit: the env family resolves them; critic_arch: the algorithm's critic
    resolved_by_family = name in ("network", "time_limit", "critic_arch") and getattr(args, name) == ""
    assert getattr(args, name) == getattr(Config(), name) or resolved_by_family
