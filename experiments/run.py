"""Train PERLA / MAPPO / IPPO from the command line and record the run.

Every ``perla_jax.Config`` field is an option (``num_seeds`` is ``--seeds``); the Config is built and
validated before anything compiles. Seeds train in parallel (vmap); updates run in compiled chunks of
the same size, so the chunk function compiles once. Example::

    python experiments/run.py --env mpe --algo perla_mappo --k 8 --seeds 4 --total-timesteps 2e6

Writes ``config.json``, ``metrics.csv`` (appended after each chunk) and ``learning_curve.png`` to
``--out`` (see ``perla_jax.recording``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from perla_jax import Config, make_trainer, recording
from perla_jax.config import ACTIVATIONS, ADVANTAGES, ALGOS, CRITIC_ACTION_LAYERS

OPTION_NAMES = {"num_seeds": "seeds"}  # field -> option name where it differs from the field's
CHOICES = {
    "algo": ALGOS,
    "advantage": ADVANTAGES,
    "activation": ACTIVATIONS,
    "critic_action_layer": CRITIC_ACTION_LAYERS,
}
TARGET_CALLS = 50
HELP = {  # one line per Config field; a field missing here still gets an option
    "env": "environment: mpe or a supported jaxmarl MPE name",
    "env_kwargs": "keyword arguments for the environment, as a JSON object",
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
    "critic_action_layer": "Q-critic hidden layer the others' actions enter: first (COMA input) or last (cheaper in K)",
    "activation": "hidden-layer activation",
    "actor_agent_id": "append a one-hot agent id to actor observations",
    "share_actor": "one actor network shared by all agents",
    "critic_time_chunk": "time steps of the K-sample critic batch evaluated at once (memory, not results)",
    "num_seeds": "seeds trained in parallel (vmap)",
    "seed": "base PRNG seed; seed i uses split(PRNGKey(seed), seeds)[i]",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
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
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
    return value


def _add_field(group: argparse._ArgumentGroup, field: dataclasses.Field, hint) -> None:
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    flag, kw = option_name(field.name), {"dest": field.name, "help": HELP.get(field.name, field.name)}
    if hint is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kw)
        return
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
    group.add_argument(flag, **kw)


def build_parser() -> argparse.ArgumentParser:
    """One option per Config field (defaults from the dataclass), plus ``--out`` and ``--chunk-size``."""
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Train PERLA/MAPPO/IPPO on a cooperative MPE task and record the run.",
        formatter_class=_HelpFormatter,
    )
    group = parser.add_argument_group("config (perla_jax.Config fields)")
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        _add_field(group, field, hints[field.name])
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<env>-<algo>-k<K>-<time>)")
    run.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="UPDATES",
        help=f"updates per compiled call, a divisor of num_updates (default: the largest divisor <= "
        f"num_updates//{TARGET_CALLS}, i.e. about {TARGET_CALLS} calls)",
    )
    return parser


def choose_chunk_size(num_updates: int, target_calls: int = TARGET_CALLS) -> int:
    """The largest divisor of ``num_updates`` that is <= ``max(1, num_updates // target_calls)``:
    about ``target_calls`` equal chunks (at least that many), so one compiled function serves them all."""
    cap = max(1, num_updates // target_calls)
    return next(d for d in range(cap, 0, -1) if num_updates % d == 0)


def main(argv: list[str] | None = None) -> Path:
    """Parses ``argv`` (default ``sys.argv[1:]``), trains and records; returns the run folder."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    except ValueError as e:
        parser.error(str(e))
    chunk = choose_chunk_size(cfg.num_updates) if args.chunk_size is None else args.chunk_size
    if chunk < 1 or cfg.num_updates % chunk:
        parser.error(f"chunk_size={chunk} is invalid: allowed are divisors of num_updates={cfg.num_updates}")
    out = args.out if args.out is not None else recording.default_run_dir(cfg)
    if (out / recording.METRICS_FILE).exists():
        parser.error(f"out={str(out)!r} already holds {recording.METRICS_FILE}: choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    recording.write_config(out, cfg)

    trainer = make_trainer(cfg)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    steps_per_chunk = cfg.num_seeds * chunk * cfg.batch_size
    done = 0
    bar = tqdm(total=cfg.num_updates * cfg.batch_size * cfg.num_seeds, unit="step", unit_scale=True,
               desc="env steps (all seeds)", dynamic_ncols=True)
    bar.set_postfix_str("compiling")
    try:
        state = jax.jit(jax.vmap(trainer.init))(keys)
        # Compiled ahead of time, once: every chunk has the same size, so steps/s below excludes compilation.
        run_chunk = jax.jit(jax.vmap(lambda s: trainer.run_updates(s, chunk))).lower(state).compile()
        for first in range(1, cfg.num_updates + 1, chunk):
            start = time.perf_counter()
            state, metrics = run_chunk(state)
            metrics = jax.tree.map(np.asarray, metrics)  # waits for the chunk
            elapsed = time.perf_counter() - start
            recording.append_metrics(out / recording.METRICS_FILE, metrics, first)
            done = first + chunk - 1
            mean_return = recording.mean_ci(metrics["return"].reshape(-1))[0]
            bar.set_postfix({"steps/s": f"{steps_per_chunk / elapsed:,.0f}", "return": f"{mean_return:.3f}"})
            bar.update(steps_per_chunk)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted after {done}/{cfg.num_updates} updates; finished rows are in {out}", file=sys.stderr)
        if done:
            recording.plot_learning_curve(out, cfg)
        raise SystemExit(130) from None
    bar.close()

    recording.plot_learning_curve(out, cfg)
    final = recording.last_finite(recording.read_metrics(out / recording.METRICS_FILE)["return"])
    mean, half, n = recording.mean_ci(final)
    print(f"run folder: {out}")
    print(f"final return (last finite per seed, {int(n)} seeds, 95% CI): {recording.format_mean_ci(mean, half)}")
    return out


if __name__ == "__main__":
    main()
