"""Where one training update's time goes: the fused ``train_step`` taken apart by ablation, timed interleaved.

Timing the parts as separate jitted programs misleads (XLA fuses and schedules the whole step as one program), so
each configuration is compiled several ways and they are timed in turn, round after round, in one process: the
step as configured (returning its metrics, as a run does), the same step with one PPO epoch, (PERLA) with K = 1,
and the step's first stages alone: the rollout; the rollout and the critic's estimates (values or the K-sample
marginal, and GAE); those and the policy-gradient spread (``pg_var``, ``pg_snr``). Then

    per epoch          = (full - one epoch) / (epochs - 1)     the minibatch losses, gradients and Adam steps
    outside the epochs = one epoch - per epoch                 rollout, critic estimates, GAE, diagnostics
    rollout, estimates + GAE, pg spread                        differences of the stage programs
    K samples          = full - (K = 1)                        what the K-sample marginal adds over one sample

    python experiments/profile_step.py --seeds 8
    python experiments/profile_step.py --seeds 1 --write BENCHMARKS.md --section profile-mpe-1
    python experiments/profile_step.py --config '{"env": "credit", "env_kwargs": {"num_agents": 32}}' --ks 16
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python experiments/profile_step.py`: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import bench, sections  # noqa: E402

COLUMNS = ("algo", "K", "seeds", "ms / update", "rollout", "critic estimates + GAE", "pg spread",
           "outside the epochs", "per epoch (x epochs)", "K samples", "vs mappo")
STAGES = ("rollout", "estimates", "spread")  # programs of the step's first stages, each including the ones before


def variants(algo: str, k: int, base: dict) -> dict[str, dict]:
    """The ablations of one configuration, by name: its Config fields."""
    out = {"full": dict(base), "one epoch": dict(base, update_epochs=1)}
    if algo.startswith("perla") and k > 1:
        out["k1"] = dict(base)
    return out


def stage_program(algo: str, k: int, seeds: int, base: dict, stage: str):
    """(jitted ``fn(state)``, initial vmapped state) computing the update's stages up to ``stage`` (``STAGES``) of
    a fresh state, as ``train_step`` computes them; the outputs are returned, so nothing is dropped."""
    import jax

    from perla_jax import make_trainer

    cfg = bench.row_config(algo, k, base)
    trainer = make_trainer(cfg)
    run = trainer.stages

    def stages(s):
        traj = run.collect(s, s.key)[2]
        if stage == "rollout":
            return traj
        est = run.estimate(s, traj, s.key)
        if stage == "estimates":
            return traj, est
        return est, run.spread(s, traj, est)

    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), seeds)
    return jax.jit(jax.vmap(stages)), jax.jit(jax.vmap(trainer.init))(keys)


def profile(rows: list[tuple[str, int]], seeds: int, base: dict, rounds: int, options: dict | None = None) -> list[dict]:
    """The parts of an update (``split_time``) of every ``(algo, K)`` row, from the median ms of its ablations and
    stage programs timed interleaved; ``options`` are XLA compiler options (the tests compile faster)."""
    import jax

    built = []  # [key, compiled, argument, whether the output is the next call's state]
    for algo, k in rows:
        for name, fields in variants(algo, k, base).items():
            fn, state, _ = bench._build(algo, 1 if name == "k1" else k, seeds, 1, fields, options)
            compiled = fn.lower(state).compile(options)
            built.append([(algo, k, name), compiled, jax.block_until_ready(compiled(state))[0], True])
        for stage in STAGES:
            fn, state = stage_program(algo, k, seeds, base, stage)
            compiled = fn.lower(state).compile(options)
            jax.block_until_ready(compiled(state))
            built.append([(algo, k, stage), compiled, state, False])
    times = {entry[0]: [] for entry in built}
    for _ in range(rounds):
        for entry in built:
            t0 = time.perf_counter()
            out = jax.block_until_ready(entry[1](entry[2]))
            times[entry[0]].append(1000 * (time.perf_counter() - t0))
            entry[2] = out[0] if entry[3] else entry[2]
    epochs = bench.cfg_field(base, "update_epochs")
    return [
        dict(algo=algo, k=k, seeds=seeds, **split_time(
            {name: statistics.median(times[(algo, k, name)]) for name in [*variants(algo, k, base), *STAGES]},
            epochs))
        for algo, k in rows
    ]


def split_time(ms: dict[str, float], epochs: int) -> dict:
    """Median ms of the ablations (``full``, ``one epoch``, optionally ``k1``) and of the stage programs
    (``STAGES``, optional) -> the parts of the update."""
    per_epoch = (ms["full"] - ms["one epoch"]) / max(epochs - 1, 1)
    stages = {}
    if all(stage in ms for stage in STAGES):
        stages = dict(rollout=ms["rollout"], estimates=ms["estimates"] - ms["rollout"],
                      spread=ms["spread"] - ms["estimates"])
    return dict(full=ms["full"], outside=ms["one epoch"] - per_epoch, per_epoch=per_epoch, epochs=epochs,
                k_samples=ms["full"] - ms["k1"] if "k1" in ms else None, **stages)


def format_table(rows: list[dict]) -> str:
    reference = next((r["full"] for r in rows if r["algo"] == "mappo"), rows[0]["full"])
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    cell = lambda r, name: "-" if r.get(name) is None else f"{r[name]:.0f}"
    for r in rows:
        perla = r["algo"].startswith("perla")
        lines.append(
            f"| {r['algo']} | {r['k'] if perla else '-'} | {r['seeds']} | {r['full']:.0f} | {cell(r, 'rollout')} | "
            f"{cell(r, 'estimates')} | {cell(r, 'spread')} | {r['outside']:.0f} | {r['per_epoch']:.0f} "
            f"(x {r['epochs']}) | {cell(r, 'k_samples')} | {reference / r['full']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", default=["mappo", "ippo", "perla_mappo"])
    p.add_argument("--ks", nargs="+", type=int, default=[16, 64], help="K values of the perla_* rows")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--config", type=json.loads, default={}, help="Config fields for every row (JSON)")
    p.add_argument("--preset", default=None, help="a --preset's settings (e.g. jaxmarl) under --config's fields")
    p.add_argument("--write", help="markdown file whose section --section gets the table")
    p.add_argument("--section", default="profile-step")
    args = p.parse_args(argv)
    rows = [(a, k) for a in args.algos for k in (args.ks if a.startswith("perla") else [1])]
    base = dict(args.config)
    if args.preset is not None:  # the preset's fields for the env's family, under the ones --config gives
        from perla_jax.presets import preset_fields

        base = preset_fields(args.preset, base)
    load_before = os.getloadavg()[0]
    table = format_table(profile(rows, args.seeds, base, args.rounds))
    print(table)
    if args.write:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = shlex.join(["python", "experiments/profile_step.py"] + (sys.argv[1:] if argv is None else argv))
        body = "\n".join([table, "", f"Command: `{command}`  ", f"Date: {now}  ", f"Machine: {bench.machine_info()}  ",
                          f"Load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}"])
        sections.write_marked_section(args.write, args.section, body)


if __name__ == "__main__":
    main()
