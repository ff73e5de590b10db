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
import time
import typing
from pathlib import Path

import jax

from perla_jax import Config, checkpoints, make_trainer, recording
from perla_jax.cli import HelpFormatter, add_config_options, check_given_apply, config_from_args
from perla_jax.evaluation import PERIODIC_FILE, append_periodic, make_evaluator
from perla_jax.outputs import divergence
from perla_jax.outputs.divergence import EXIT_CODE as DIVERGED_EXIT
from perla_jax.outputs.divergence import ON_DIVERGENCE
from perla_jax.outputs.loggers import LOGGERS, make_loggers, parse_kinds
from perla_jax.outputs.progress import Progress, StopRequest
from perla_jax.sharding import maybe_initialize_distributed, seed_sharding, shard_seeds, to_host

TARGET_CALLS = 50
RESUME_HINT = "resume with: python experiments/run.py --resume"  # ends every interrupted launch's log


def build_parser(config_defaults: bool = True) -> argparse.ArgumentParser:
    """One option per Config field (defaults from the dataclass), plus the run options. With
    ``config_defaults=False`` the Config options default to None, so only options given on the command line
    come back set (``--resume`` compares those with the stored config)."""
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Train PERLA/MAPPO/IPPO on a cooperative MPE task and record the run.",
        formatter_class=HelpFormatter,
    )
    add_config_options(parser, config_defaults)
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
    run.add_argument("--on-divergence", choices=ON_DIVERGENCE, default="stop",
                     help="a seed whose parameters or losses become non-finite: stop the run (exit status "
                     f"{DIVERGED_EXIT}, its newest checkpoint finite), or freeze that seed and go on with the others")
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
    on_divergence: str = "stop"
    # Multi-host: only process 0 writes run outputs (config, metrics.csv, eval.csv, logs, plots, messages);
    # orbax coordinates the checkpoints of all processes itself.
    writer: bool = True


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
    writer = jax.process_index() == 0
    plan = _resume_plan(parser, args, argv, writer) if args.resume is not None else _fresh_plan(parser, args, argv, writer)
    try:
        plan = plan._replace(sharding=seed_sharding(plan.cfg.num_seeds), log_kinds=log_kinds,
                             on_divergence=args.on_divergence)
    except ValueError as e:
        parser.error(str(e))
    manager = checkpoints.open_manager(plan.out, args.keep_checkpoints, args.keep_every)
    try:
        return _train(plan, manager, args.stop_after)
    finally:
        manager.close()


def _fresh_plan(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None, writer: bool
) -> Plan:
    try:
        given = vars(build_parser(config_defaults=False).parse_args(sys.argv[1:] if argv is None else argv))
        cfg = config_from_args(args, given)
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
    if writer:
        recording.write_config(out, cfg)
    return Plan(cfg, out, chunk, 0, writer=writer)


def _resume_plan(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None, writer: bool
) -> Plan:
    """Everything ``--resume`` checks happens here, before anything compiles."""
    out: Path = args.resume
    if args.preset is not None:
        parser.error(f"--preset={args.preset} cannot be combined with --resume: the run's config.json holds the "
                     "values its preset set")
    if args.out is not None:
        parser.error(f"--out={str(args.out)!r} cannot be combined with --resume: the run folder is RUN_DIR")
    if not (out / recording.CONFIG_FILE).is_file():
        parser.error(f"resume={str(out)!r} holds no {recording.CONFIG_FILE}: allowed is a folder written by run.py")
    try:
        stored = recording.read_config(out)
        given = vars(build_parser(config_defaults=False).parse_args(sys.argv[1:] if argv is None else argv))
        requested = stored.replace(**{f.name: given[f.name] for f in dataclasses.fields(Config)
                                      if given[f.name] is not None})
        check_given_apply(requested, given)
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
        dropped = checkpoints.reconcile_metrics(out / recording.METRICS_FILE, start, stored.num_seeds) if writer else 0
    except ValueError as e:
        parser.error(str(e))
    if dropped:
        print(f"dropped {dropped} metrics rows written after checkpoint {start}", file=sys.stderr)
    return Plan(stored, out, chunk, start, writer=writer)


@functools.lru_cache(maxsize=2)
def _programs(cfg_json: str, chunk: int):
    """The jitted init and chunk functions of a config, kept so that another run of the same config in this
    process (a resume, a test) reuses their compilations. Keyed by JSON: Config holds a dict."""
    trainer = make_trainer(Config.from_dict(json.loads(cfg_json)))
    init = jax.jit(jax.vmap(trainer.init))
    run_chunk = jax.jit(jax.vmap(lambda s: trainer.run_updates(s, chunk)))
    return init, run_chunk, jax.jit(divergence.finite_parameters)


def _train(plan: Plan, manager, stop_after: int | None) -> Path:
    cfg, out = plan.cfg, plan.out
    resume_hint = f"{RESUME_HINT} {out}"
    say = functools.partial(_say, plan.writer)
    progress = {"done": plan.start}
    with StopRequest() as stop:
        try:
            _run_chunks(plan, manager, stop, stop_after, progress)
        except KeyboardInterrupt:
            say(f"\nabandoned the running chunk; the last checkpoint in {out} holds {progress['done']}/"
                f"{cfg.num_updates} updates; {resume_hint}")
            _plot_if_any(plan, progress["done"])
            raise SystemExit(128 + (stop.signum or signal.SIGINT)) from None
        except Diverged as diverged:
            _plot_if_any(plan, progress["done"])
            kept = f"checkpoint {progress['done']} (finite)" if progress["done"] else "no checkpoint"
            say(f"{diverged}\nstopped: divergence (--on-divergence stop) after {progress['done']}/{cfg.num_updates} "
                f"updates; kept {kept}. Change the config, or resume with --on-divergence freeze to go on with the "
                "other seeds.")
            raise SystemExit(DIVERGED_EXIT) from None
    done = progress["done"]
    _plot_if_any(plan, done)
    if done < cfg.num_updates:
        why = signal.Signals(stop.signum).name if stop.signum else f"--stop-after {stop_after}"
        saved = f"checkpoint {done} saved" if done else "no checkpoint yet"
        say(f"stopped ({why}) after {done}/{cfg.num_updates} updates, {saved}; {resume_hint}")
        if stop.signum:
            raise SystemExit(128 + stop.signum)
        return out
    if plan.writer:
        final = recording.last_finite(recording.read_metrics(out / recording.METRICS_FILE)["return"])
        mean, half, n = recording.mean_ci(final)
        print(f"run folder: {out}")
        print(f"final return (last finite per seed, {int(n)} seeds, 95% CI): {recording.format_mean_ci(mean, half)}")
    return out


def _say(writer: bool, message: str) -> None:
    """A message on stderr, from process 0 only."""
    if writer:
        print(message, file=sys.stderr, flush=True)


class Diverged(Exception):
    """A seed's parameters or losses became non-finite and the run stops (``--on-divergence stop``)."""


@functools.lru_cache(maxsize=2)
def _periodic_evaluator(cfg_json: str):
    cfg = Config.from_dict(json.loads(cfg_json))
    trainer = make_trainer(cfg)
    return make_evaluator(trainer.env, trainer.agents, cfg.eval_episodes, "greedy")


def _evaluate_periodically(plan: Plan, state, done: int) -> None:
    """Greedy evaluation of every seed's policy after update ``done``, appended to eval.csv (process 0). It runs
    after the checkpoint of ``done`` is saved and its key depends only on (seed, done), so a resumed run repeats
    it exactly; a row lost to a kill between the two is not rewritten."""
    cfg = plan.cfg
    evaluate = _periodic_evaluator(json.dumps(cfg.to_dict(), sort_keys=True))
    episodes = to_host(evaluate(state.actor.params, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), done)))
    if plan.writer:
        append_periodic(plan.out / PERIODIC_FILE, episodes, done, done * cfg.batch_size)


def _plot_if_any(plan: Plan, done: int) -> None:
    if done and plan.writer:
        recording.plot_learning_curve(plan.out, plan.cfg)


def _run_chunks(plan: Plan, manager, stop: StopRequest, stop_after: int | None, progress: dict) -> None:
    """Restores (or initialises) the state, then per chunk: train, check for divergence, append its CSV rows,
    save its checkpoint (in this order: see ``checkpoints.reconcile_metrics``, which ``_resume_plan`` has run),
    until done, a signal, a divergence (``--on-divergence stop``) or ``stop_after``."""
    cfg, chunk, metrics_path = plan.cfg, plan.chunk, plan.out / recording.METRICS_FILE
    init, run_chunk, finite = _programs(json.dumps(cfg.to_dict(), sort_keys=True), chunk)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    abstract_state = jax.eval_shape(init, keys)
    # A restored state is placed with the seed sharding already; a fresh one is sharded here.
    state = (checkpoints.restore_state(manager, plan.start, abstract_state, plan.sharding) if plan.start
             else shard_seeds(init(keys), plan.sharding))
    # Seeds frozen by the divergence guard, {seed: update it diverged at}, carried in the checkpoints.
    frozen = divergence.frozen_from_meta(checkpoints.read_meta(manager, plan.start)) if plan.start else {}
    logger = make_loggers(plan.log_kinds if plan.writer else (), plan.out, cfg)
    steps_per_chunk = cfg.num_seeds * chunk * cfg.batch_size
    devices = plan.sharding.device_set if plan.sharding else {jax.devices()[0]}
    platform = recording.platform_name(next(iter(devices)).device_kind, len(devices))
    bar = Progress(cfg.num_updates * cfg.batch_size * cfg.num_seeds, plan.start * steps_per_chunk // chunk,
                   enabled=plan.writer)
    try:
        # Compiled ahead of time, once: every chunk has the same size, so steps/s below excludes compilation.
        compiled = run_chunk.lower(state).compile()  # for the state's placement (sharded over devices or not)
        for first in range(plan.start + 1, cfg.num_updates + 1, chunk):
            if stop.signum or (stop_after is not None and progress["done"] >= stop_after):
                break
            start = time.perf_counter()
            last_finite = state
            state, metrics = compiled(state)
            metrics = to_host(metrics)  # waits for the chunk
            elapsed = time.perf_counter() - start
            new = divergence.find_divergences(metrics, to_host(finite(state)), first, ignore=set(frozen))
            frozen.update({d.seed: d.update for d in new})
            mask = divergence.diverged_mask(frozen, cfg.num_seeds, first, chunk)
            metrics = divergence.mark_frozen(metrics, mask, first, cfg.batch_size)
            if plan.writer:
                recording.append_metrics(metrics_path, metrics, first)
                recording.append_timing(plan.out, first, chunk, elapsed, platform)
            logger.log_chunk(metrics, first)
            if new and plan.on_divergence == "stop":
                raise Diverged("; ".join(d.describe() for d in new))  # _train reports it
            # Frozen seeds are left out of find_divergences: each is reported once, in the chunk it diverged in.
            for d in new:
                _say(plan.writer, f"{d.describe()}; {divergence.frozen_note(d, first)}")
            state = divergence.freeze(state, last_finite, sorted(frozen))
            done = first + chunk - 1
            meta = {"config": cfg.to_dict(), "updates_done": done, "num_updates": cfg.num_updates, "chunk_size": chunk,
                    **divergence.frozen_meta(frozen)}
            checkpoints.save(manager, state, meta)
            progress["done"] = done
            if cfg.eval_every and done // cfg.eval_every > (done - chunk) // cfg.eval_every:
                _evaluate_periodically(plan, state, done)
            mean_return = recording.mean_ci(metrics["return"].reshape(-1))[0]
            figures = {"steps/s": f"{steps_per_chunk / elapsed:,.0f}", "return": f"{mean_return:.3f}"}
            bar.update(steps_per_chunk, figures | ({"frozen seeds": str(len(frozen))} if frozen else {}))
    finally:
        bar.close()
        logger.close()


if __name__ == "__main__":
    maybe_initialize_distributed()  # before any other JAX call; a no-op unless launched as several processes
    main()
