"""Train PERLA / MAPPO / IPPO from the command line and record the run.

Every ``perla_jax.Config`` field is an option (``num_seeds`` is ``--seeds``); the Config is built and
validated before anything compiles. Seeds train in parallel (vmap); updates run in compiled chunks of
the same size, so the chunk function compiles once. Example::

    python experiments/run.py --env mpe --algo perla_mappo --k 8 --seeds 4 --total-timesteps 2e6
    python experiments/run.py --env smax --map 2s3z --k 16 --seeds 8

Writes ``config.json``, ``metrics.csv`` (appended after each chunk) and ``learning_curve.png`` to
``--out`` (see ``perla_jax.outputs.recording``), and after each chunk a checkpoint in ``checkpoints/`` (see
``perla_jax.outputs.checkpoints``). ``--resume RUN_DIR`` continues from the latest checkpoint and gives the same
numbers as an uninterrupted run; SIGINT/SIGTERM stop after the running chunk's checkpoint (a second
signal stops at once, keeping the previous checkpoint).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import signal
import sys
import threading
import time
import typing
from pathlib import Path

import jax
from tqdm.auto import tqdm

from perla_jax import Config, checkpoints, make_trainer, recording
from perla_jax.config import ACTIVATIONS, ADVANTAGES, ALGOS, CRITIC_ACTION_LAYERS
from perla_jax.envs.registry import ALIASES, SUPPORTED
from perla_jax.evaluation import PERIODIC_FILE, append_periodic, make_evaluator
from perla_jax.outputs.loggers import LOGGERS, make_loggers, parse_kinds
from perla_jax.sharding import maybe_initialize_distributed, seed_sharding, shard_seeds, to_host

OPTION_NAMES = {"num_seeds": "seeds", "map_name": "map"}  # field -> option name where it differs from the field's
CHOICES = {
    "algo": ALGOS,
    "advantage": ADVANTAGES,
    "activation": ACTIVATIONS,
    "critic_action_layer": CRITIC_ACTION_LAYERS,
}
TARGET_CALLS = 50
HELP = {  # one line per Config field; a field missing here still gets an option
    "env": "environment: "
    + ", ".join(f"{alias} (= {full})" for alias, full in ALIASES.items())
    + ", or a supported jaxmarl name: "
    + ", ".join(SUPPORTED),
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
    "critic_action_layer": "Q-critic hidden layer the others' actions enter: first (COMA input) or last (cheaper in K)",
    "activation": "hidden-layer activation",
    "network": "ff (MLPs) or rnn (GRU after the first layer; sequence minibatches); default: rnn on SMAX, ff elsewhere",
    "actor_agent_id": "append a one-hot agent id to actor observations",
    "share_actor": "one actor network shared by all agents",
    "critic_time_chunk": "time steps of the K-sample critic batch evaluated at once (memory, not results)",
    "eval_every": "evaluate greedy policies every this many updates into eval.csv (0: off)",
    "eval_episodes": "episodes per seed of each periodic evaluation",
    "own_action_samples": "M own-action samples for PERLA's V^(s) on continuous actions (MABrax), >= 1",
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




def build_parser(config_defaults: bool = True) -> argparse.ArgumentParser:
    """One option per Config field (defaults from the dataclass), plus the run options. With
    ``config_defaults=False`` the Config options default to None, so only options given on the command line
    come back set (``--resume`` compares those with the stored config)."""
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Train PERLA/MAPPO/IPPO on a cooperative MPE task and record the run.",
        formatter_class=_HelpFormatter,
    )
    group = parser.add_argument_group("config (perla_jax.Config fields)")
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        action = _add_field(group, field, hints[field.name])
        if not config_defaults:
            action.default = None  # no Config field accepts None, so None means "not given"
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<env>-<algo>-k<K>-<time>)")
    run.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="UPDATES",
        help=f"updates per compiled call, a divisor of num_updates (default: the largest divisor <= "
        f"num_updates//{TARGET_CALLS}, i.e. about {TARGET_CALLS} calls); a checkpoint is saved after each",
    )
    run.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its latest checkpoint, with its config.json")
    run.add_argument("--stop-after", type=int, default=None, metavar="UPDATES",
                     help="stop (resumably) at the first checkpoint with at least UPDATES updates done")
    run.add_argument("--log", default="", metavar="KINDS",
                     help=f"extra loggers, comma-separated: {', '.join(LOGGERS)} (metrics.csv is always written)")
    run.add_argument("--keep-checkpoints", type=int, default=2, metavar="N", help="newest checkpoints kept")
    run.add_argument("--keep-every", type=int, default=None, metavar="UPDATES",
                     help="also keep every checkpoint whose update count is a multiple of UPDATES")
    return parser


def choose_chunk_size(num_updates: int, target_calls: int = TARGET_CALLS) -> int:
    """The largest divisor of ``num_updates`` that is <= ``max(1, num_updates // target_calls)``:
    about ``target_calls`` equal chunks (at least that many), so one compiled function serves them all."""
    cap = max(1, num_updates // target_calls)
    return next(d for d in range(cap, 0, -1) if num_updates % d == 0)


class Plan(typing.NamedTuple):
    """What to train: the config, the run folder, the chunk size and the checkpoint to start from."""

    cfg: Config
    out: Path
    chunk: int
    start: int  # updates already done (the checkpoint to restore; 0 = start afresh)
    sharding: typing.Any = None  # of the seed axis over devices; None on one device
    log_kinds: tuple[str, ...] = ()  # extra loggers (perla_jax.outputs.loggers)


def main(argv: list[str] | None = None) -> Path:
    """Parses ``argv`` (default ``sys.argv[1:]``), trains (or resumes) and records; returns the run folder."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("stop_after", "keep_checkpoints", "keep_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"{name}={value} is invalid: allowed is an integer >= 1")
    try:
        log_kinds = parse_kinds(args.log)
    except ValueError as e:
        parser.error(str(e))
    plan = _resume_plan(parser, args, argv) if args.resume is not None else _fresh_plan(parser, args)
    try:
        plan = plan._replace(sharding=seed_sharding(plan.cfg.num_seeds), log_kinds=log_kinds)
    except ValueError as e:
        parser.error(str(e))
    manager = checkpoints.open_manager(plan.out, args.keep_checkpoints, args.keep_every)
    try:
        return _train(plan, manager, args.stop_after)
    finally:
        manager.close()


def _fresh_plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Plan:
    try:
        cfg = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    except ValueError as e:
        parser.error(str(e))
    chunk = choose_chunk_size(cfg.num_updates) if args.chunk_size is None else args.chunk_size
    if chunk < 1 or cfg.num_updates % chunk:
        parser.error(f"chunk_size={chunk} is invalid: allowed are divisors of num_updates={cfg.num_updates}")
    out = args.out if args.out is not None else recording.default_run_dir(cfg)
    for name in (recording.METRICS_FILE, checkpoints.CHECKPOINT_DIR):
        if (out / name).exists():
            parser.error(f"out={str(out)!r} already holds {name}: choose a new folder, or --resume {out}")
    out.mkdir(parents=True, exist_ok=True)
    recording.write_config(out, cfg)
    return Plan(cfg, out, chunk, 0)


def _resume_plan(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> Plan:
    """Everything ``--resume`` checks happens here, before anything compiles."""
    out: Path = args.resume
    if args.out is not None:
        parser.error(f"--out={str(args.out)!r} cannot be combined with --resume: the run folder is RUN_DIR")
    if not (out / recording.CONFIG_FILE).is_file():
        parser.error(f"resume={str(out)!r} holds no {recording.CONFIG_FILE}: allowed is a folder written by run.py")
    try:
        stored = recording.read_config(out)
        given = vars(build_parser(config_defaults=False).parse_args(sys.argv[1:] if argv is None else argv))
        requested = stored.replace(**{f.name: given[f.name] for f in dataclasses.fields(Config)
                                      if given[f.name] is not None})
    except ValueError as e:
        parser.error(str(e))
    diff = checkpoints.config_differences(stored.to_dict(), requested.to_dict())
    if diff:
        parser.error(f"options differ from {out / recording.CONFIG_FILE} (stored != given): {'; '.join(diff)}")
    manager = checkpoints.open_manager(out, read_only=True)
    try:
        start = checkpoints.latest_step(manager) or 0
        meta = checkpoints.read_meta(manager, start) if start else {}
        if start:
            checkpoints.check_meta_config(meta, stored.to_dict(), start)
    except ValueError as e:
        parser.error(str(e))
    finally:
        manager.close()
    chunk = meta.get("chunk_size") or args.chunk_size or choose_chunk_size(stored.num_updates)
    if args.chunk_size is not None and args.chunk_size != chunk:
        parser.error(f"chunk_size={args.chunk_size} differs from the run's chunk size {chunk}: allowed is {chunk}")
    if chunk < 1 or stored.num_updates % chunk:
        parser.error(f"chunk_size={chunk} is invalid: allowed are divisors of num_updates={stored.num_updates}")
    try:
        # Last: it rewrites metrics.csv, which only a resume that goes ahead may do.
        dropped = checkpoints.reconcile_metrics(out / recording.METRICS_FILE, start, stored.num_seeds)
    except ValueError as e:
        parser.error(str(e))
    if dropped:
        print(f"dropped {dropped} metrics rows written after checkpoint {start}", file=sys.stderr)
    return Plan(stored, out, chunk, start)


@functools.lru_cache(maxsize=2)
def _programs(cfg_json: str, chunk: int):
    """The jitted init and chunk functions of a config, kept so that another run of the same config in this
    process (a resume, a test) reuses their compilations. Keyed by JSON: Config holds a dict."""
    trainer = make_trainer(Config.from_dict(json.loads(cfg_json)))
    init = jax.jit(jax.vmap(trainer.init))
    run_chunk = jax.jit(jax.vmap(lambda s: trainer.run_updates(s, chunk)))
    return init, run_chunk


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the running chunk (whose rows and
    checkpoint are then written); a second one abandons the chunk at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signal.signal works only there
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after the running chunk and its checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)


def _train(plan: Plan, manager, stop_after: int | None) -> Path:
    cfg, out = plan.cfg, plan.out
    resume_hint = f"resume with: python experiments/run.py --resume {out}"
    progress = {"done": plan.start}
    with StopRequest() as stop:
        try:
            _run_chunks(plan, manager, stop, stop_after, progress)
        except KeyboardInterrupt:
            print(f"\nabandoned the running chunk; the last checkpoint in {out} holds {progress['done']}/"
                  f"{cfg.num_updates} updates; {resume_hint}", file=sys.stderr)
            _plot_if_any(out, cfg, progress["done"])
            raise SystemExit(128 + (stop.signum or signal.SIGINT)) from None
    done = progress["done"]
    _plot_if_any(out, cfg, done)
    if done < cfg.num_updates:
        why = signal.Signals(stop.signum).name if stop.signum else f"--stop-after {stop_after}"
        saved = f"checkpoint {done} saved" if done else "no checkpoint yet"
        print(f"stopped ({why}) after {done}/{cfg.num_updates} updates, {saved}; {resume_hint}", file=sys.stderr)
        if stop.signum:
            raise SystemExit(128 + stop.signum)
        return out
    final = recording.last_finite(recording.read_metrics(out / recording.METRICS_FILE)["return"])
    mean, half, n = recording.mean_ci(final)
    print(f"run folder: {out}")
    print(f"final return (last finite per seed, {int(n)} seeds, 95% CI): {recording.format_mean_ci(mean, half)}")
    return out


@functools.lru_cache(maxsize=2)
def _periodic_evaluator(cfg_json: str):
    cfg = Config.from_dict(json.loads(cfg_json))
    trainer = make_trainer(cfg)
    return make_evaluator(trainer.env, trainer.agents, cfg.eval_episodes, "greedy")


def _evaluate_periodically(plan: Plan, state, done: int) -> None:
    """Greedy evaluation of every seed's policy after update ``done``, appended to eval.csv. It runs after
    the checkpoint of ``done`` is saved and its key depends only on (seed, done), so a resumed run repeats
    it exactly; a row lost to a kill between the two is not rewritten."""
    cfg = plan.cfg
    evaluate = _periodic_evaluator(json.dumps(cfg.to_dict(), sort_keys=True))
    episodes = to_host(evaluate(state.actor.params, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), done)))
    append_periodic(plan.out / PERIODIC_FILE, episodes, done, done * cfg.batch_size)


def _plot_if_any(out: Path, cfg: Config, done: int) -> None:
    if done:
        recording.plot_learning_curve(out, cfg)


def _run_chunks(plan: Plan, manager, stop: StopRequest, stop_after: int | None, progress: dict) -> None:
    """Restores (or initialises) the state, then per chunk: train, append its CSV rows, save its checkpoint
    (in this order: see ``checkpoints.reconcile_metrics``, which ``_resume_plan`` has run), until done, a
    signal or ``stop_after``."""
    cfg, chunk, metrics_path = plan.cfg, plan.chunk, plan.out / recording.METRICS_FILE
    init, run_chunk = _programs(json.dumps(cfg.to_dict(), sort_keys=True), chunk)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    abstract_state = jax.eval_shape(init, keys)
    state = checkpoints.restore_state(manager, plan.start, abstract_state) if plan.start else init(keys)
    state = shard_seeds(state, plan.sharding)
    logger = make_loggers(plan.log_kinds, plan.out, cfg)
    steps_per_chunk = cfg.num_seeds * chunk * cfg.batch_size
    bar = tqdm(total=cfg.num_updates * cfg.batch_size * cfg.num_seeds, initial=plan.start * steps_per_chunk // chunk,
               unit="step", unit_scale=True, desc="env steps (all seeds)", dynamic_ncols=True)
    bar.set_postfix_str("compiling")
    try:
        # Compiled ahead of time, once: every chunk has the same size, so steps/s below excludes compilation.
        compiled = run_chunk.lower(state).compile()  # for the state's placement (sharded over devices or not)
        for first in range(plan.start + 1, cfg.num_updates + 1, chunk):
            if stop.signum or (stop_after is not None and progress["done"] >= stop_after):
                break
            start = time.perf_counter()
            state, metrics = compiled(state)
            metrics = to_host(metrics)  # waits for the chunk
            elapsed = time.perf_counter() - start
            recording.append_metrics(metrics_path, metrics, first)
            logger.log_chunk(metrics, first)
            done = first + chunk - 1
            meta = {"config": cfg.to_dict(), "updates_done": done, "num_updates": cfg.num_updates, "chunk_size": chunk}
            checkpoints.save(manager, state, meta)
            progress["done"] = done
            if cfg.eval_every and done // cfg.eval_every > (done - chunk) // cfg.eval_every:
                _evaluate_periodically(plan, state, done)
            mean_return = recording.mean_ci(metrics["return"].reshape(-1))[0]
            bar.set_postfix({"steps/s": f"{steps_per_chunk / elapsed:,.0f}", "return": f"{mean_return:.3f}"})
            bar.update(steps_per_chunk)
    finally:
        bar.close()
        logger.close()


if __name__ == "__main__":
    maybe_initialize_distributed()  # before any other JAX call; a no-op unless launched as several processes
    main()
