"""The training run as a user runs it: chunks, checkpoints, resume, the divergence policy, periodic evaluation and
loggers around ``make_trainer``. ``run_experiment(config, out=...)`` is the whole of it; ``perla-jax train`` and
experiments/run.py are its command line (``perla_jax.cli``).

Seeds train in parallel (vmap, sharded over devices where there are several); updates run in compiled chunks of one
size, so the chunk function compiles once. A run folder holds ``config.json``, ``metrics.csv`` (appended after each
chunk) and ``learning_curve.png`` (``perla_jax.outputs.recording``), and after each chunk a checkpoint in
``checkpoints/`` (``perla_jax.outputs.checkpoints``). A resumed run gives the same numbers as an uninterrupted one;
SIGINT/SIGTERM stop after the running chunk's checkpoint (a second signal stops at once, keeping the previous one).
Exits like the command: ``SystemExit`` 128 + the signal after a stop by signal, ``DIVERGED_EXIT`` after a divergence
with ``on_divergence="stop"``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import sys
import time
import typing
from pathlib import Path
from typing import Any, Mapping

import jax

from perla_jax.cli import check_given_apply
from perla_jax.config import Config
from perla_jax.evaluation import PERIODIC_FILE, append_periodic, make_evaluator
from perla_jax.outputs import checkpoints, divergence, recording
from perla_jax.outputs.divergence import EXIT_CODE as DIVERGED_EXIT
from perla_jax.outputs.divergence import ON_DIVERGENCE
from perla_jax.outputs.loggers import make_loggers, parse_kinds
from perla_jax.outputs.progress import Progress, StopRequest
from perla_jax.sharding import seed_sharding, shard_seeds, sync_processes, to_host
from perla_jax.train import make_trainer

TARGET_CALLS = 50
RESUME_HINT = "resume with: python experiments/run.py --resume"  # ends every interrupted launch's log


def choose_chunk_size(num_updates: int, target_calls: int = TARGET_CALLS, multiple_of: int = 1) -> int:
    """The largest allowed chunk size that is <= ``max(1, num_updates // target_calls)`` (else the smallest
    allowed): about ``target_calls`` equal chunks (at least that many), so one compiled function serves them all.
    Allowed are the divisors of ``num_updates`` that are multiples of ``multiple_of`` (``Config.pg_spread_every``,
    so the spread falls on the same updates in every chunk), and ``num_updates`` itself."""
    cap = max(1, num_updates // target_calls)
    allowed = [d for d in range(1, num_updates + 1) if _allowed_chunk(d, num_updates, multiple_of)]
    below = [d for d in allowed if d <= cap]
    return max(below) if below else min(allowed)


def _allowed_chunk(chunk: int, num_updates: int, multiple_of: int) -> bool:
    return chunk >= 1 and num_updates % chunk == 0 and (chunk % multiple_of == 0 or chunk == num_updates)


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


def run_experiment(
    config: Config | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    given: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    stop_after: int | None = None,
    log: str = "",
    keep_checkpoints: int = 2,
    keep_every: int | None = None,
    on_divergence: str = "stop",
) -> Path:
    """Trains ``config`` into ``out`` (default ``runs/<env>-<algo>[-k<K>]-<time>``), or continues the run in ``resume``
    from its latest checkpoint with its stored config (``given``: Config fields that must equal the stored ones);
    returns the run folder. Every check (ValueError naming the value and the allowed ones) happens before anything
    compiles. ``stop_after``: stop resumably at the first checkpoint with that many updates; ``log``: extra loggers,
    comma-separated (``perla_jax.outputs.loggers``); ``keep_checkpoints`` newest kept, plus every ``keep_every``-th;
    ``on_divergence``: ``stop`` or ``freeze`` the diverged seeds (``perla_jax.outputs.divergence``)."""
    for name, value in (("stop_after", stop_after), ("keep_checkpoints", keep_checkpoints), ("keep_every", keep_every)):
        if value is not None and value < 1:
            raise ValueError(f"{name}={value} is invalid: allowed is an integer >= 1")
    if on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"on_divergence={on_divergence!r} is invalid: allowed are {', '.join(ON_DIVERGENCE)}")
    if (config is None) == (resume is None):
        raise ValueError("give either a config (a new run) or resume (a run folder), not both or neither")
    log_kinds = parse_kinds(log)
    writer = jax.process_index() == 0
    if resume is not None:
        if out is not None:
            raise ValueError(f"--out={str(out)!r} cannot be combined with --resume: the run folder is RUN_DIR")
        plan = resume_plan(Path(resume), dict(given or {}), chunk_size, writer)
    else:
        plan = fresh_plan(config, None if out is None else Path(out), chunk_size, writer)
    plan = plan._replace(sharding=seed_sharding(plan.cfg.num_seeds), log_kinds=log_kinds, on_divergence=on_divergence)
    manager = checkpoints.open_manager(plan.out, keep_checkpoints, keep_every)
    try:
        return _train(plan, manager, stop_after)
    finally:
        manager.close()


def _checked_chunk(chunk: int, cfg: Config) -> int:
    """``chunk``, or ValueError unless it divides ``num_updates`` (one compiled chunk size serves the whole run)
    and is a multiple of ``pg_spread_every`` (or the whole run)."""
    if chunk < 1 or cfg.num_updates % chunk:
        raise ValueError(f"chunk_size={chunk} is invalid: allowed are divisors of num_updates={cfg.num_updates}")
    if not _allowed_chunk(chunk, cfg.num_updates, cfg.pg_spread_every):
        raise ValueError(f"chunk_size={chunk} is invalid with pg_spread_every={cfg.pg_spread_every}: allowed are "
                         f"divisors of num_updates={cfg.num_updates} that are multiples of {cfg.pg_spread_every}, "
                         "and num_updates itself")
    return chunk


def fresh_plan(cfg: Config, out: Path | None, chunk_size: int | None, writer: bool) -> Plan:
    """A new run of ``cfg`` in ``out``, whose config.json is written here; the folder must not hold a run."""
    default = choose_chunk_size(cfg.num_updates, multiple_of=cfg.pg_spread_every)
    chunk = _checked_chunk(default if chunk_size is None else chunk_size, cfg)
    out = out if out is not None else recording.default_run_dir(cfg)
    for name in (recording.METRICS_FILE, checkpoints.CHECKPOINT_DIR):
        if (out / name).exists():
            raise ValueError(f"out={str(out)!r} already holds {name}: choose a new folder, or --resume {out}")
    sync_processes("perla_jax: run folder checked")  # before process 0 creates what the others check for
    out.mkdir(parents=True, exist_ok=True)
    if writer:
        recording.write_config(out, cfg)
    return Plan(cfg, out, chunk, 0, writer=writer)


def resume_plan(out: Path, given: dict[str, Any], chunk_size: int | None, writer: bool) -> Plan:
    """The run in ``out`` from its latest checkpoint. ``given`` (Config fields) must equal the stored config; the
    metrics rows written after the checkpoint are dropped (last: only a resume that goes ahead may rewrite them)."""
    stored = recording.read_run_config(out, "resume")
    requested = stored.replace(**{f.name: given[f.name] for f in dataclasses.fields(Config)
                                  if given.get(f.name) is not None})
    check_given_apply(requested, given)
    diff = checkpoints.config_differences(stored.to_dict(), requested.to_dict())
    if diff:
        raise ValueError(f"options differ from {out / recording.CONFIG_FILE} (stored != given): {'; '.join(diff)}")
    manager = checkpoints.open_manager(out, read_only=True)
    try:
        start = checkpoints.latest_step(manager) or 0
        meta = checkpoints.read_meta(manager, start) if start else {}
        if start:
            checkpoints.check_meta_config(meta, stored.to_dict(), start)
    finally:
        manager.close()
    chunk = meta.get("chunk_size") or chunk_size or choose_chunk_size(stored.num_updates,
                                                                      multiple_of=stored.pg_spread_every)
    if chunk_size is not None and chunk_size != chunk:
        raise ValueError(f"chunk_size={chunk_size} differs from the run's chunk size {chunk}: allowed is {chunk}")
    _checked_chunk(chunk, stored)
    dropped = checkpoints.reconcile_metrics(out / recording.METRICS_FILE, start, stored.num_seeds) if writer else 0
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

