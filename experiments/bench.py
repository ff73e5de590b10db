"""Training throughput and peak host memory of the perla_jax trainers, in env steps per second.

Env steps follow the JaxMARL convention: transitions summed over the vectorised environments and
the vmapped seeds (one transition moves every agent once). Each configuration runs in its own
subprocess so that its peak resident memory (``ru_maxrss``) is its own.

    python experiments/bench.py                       # full grid, markdown table on stdout
    python experiments/bench.py --quick               # smoke test
    python experiments/bench.py --write BENCHMARKS.md --jaxmarl-baseline 12345
    python experiments/bench.py --config '{"env": "smax", "map_name": "2s3z"}' --ks 16 --seeds 4   # other envs
    python experiments/bench.py --interleaved 3 --preset jaxmarl --config '{"env": "ant_4x2"}' --seeds 8 --updates 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python experiments/bench.py`: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import sections  # noqa: E402  (plain text: the parent process imports no jax)

SECTION = "bench"
START, END = sections.markers(SECTION)
COLUMNS = ("algo", "K", "critic action layer", "seeds", "updates/call", "steps/s (median)", "min-max steps/s", "compile s", "peak MiB")
DEFAULT_CRITIC_ARCH = "factored"  # perla_jax.config.DEFAULT_CRITIC_ARCH (the package is imported in the children only)
RANDOM = "random"  # pseudo-algo: random-policy rollout ceiling of the same env
DEFAULTS = dict(ks=[1, 4, 16, 64], seeds=[1, 8, 32], updates=4, repeats=5)


def row_config(algo: str, k: int, base: dict):
    """The Config of one row: ``algo`` with ``base``'s fields, and K only for the Q-critics (Config refuses it
    elsewhere; the other rows keep the default)."""
    from perla_jax import Config

    return Config(algo=algo, **({"k": k} if algo.startswith("perla") else {}), **base)


def _build(algo: str, k: int, seeds: int, updates: int, base: dict, options: dict | None):
    """Returns ``(jitted fn, initial state, env steps per call)`` for one configuration; ``fn(state) -> (state,
    outputs)``: the outputs (the updates' metrics) are returned as a training run returns them, so that XLA
    cannot drop the work that only feeds them (the policy-gradient spread)."""
    import jax

    from perla_jax import make_env, make_trainer
    from perla_jax.acting import act_step

    cfg = row_config("mappo" if algo == RANDOM else algo, k, base)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), seeds)
    steps = updates * cfg.num_envs * cfg.num_steps * seeds
    if algo != RANDOM:
        trainer = make_trainer(cfg)
        state = jax.jit(jax.vmap(trainer.init)).lower(keys).compile(options)(keys)
        return jax.jit(jax.vmap(lambda s: trainer.run_updates(s, updates))), state, steps
    env = make_env(cfg.env, cfg.env_kwargs, cfg.map_name, cfg.time_limit)
    no_first = jax.numpy.zeros((cfg.num_envs,), bool)

    def env_step(carry, key):
        # The act step the rollout uses, with uniform actions and no networks.
        env_state, total = carry
        env_state, tr, _ = act_step(env, None, None, env_state, None, None, no_first, key, "random", cfg.num_envs)
        return (env_state, total + tr.reward.sum(axis=-1)), None

    def one_seed(carry):
        env_state, total, key = carry

        def block(c, _):
            env_state, total, key = c
            key, sub = jax.random.split(key)
            (env_state, total), _ = jax.lax.scan(env_step, (env_state, total), jax.random.split(sub, cfg.num_steps))
            return (env_state, total, key), None

        carry = jax.lax.scan(block, (env_state, total, key), None, updates)[0]
        return carry, carry[1]

    def init(key):
        _, env_state = jax.vmap(env.reset)(jax.random.split(key, cfg.num_envs))
        return env_state, jax.numpy.zeros(cfg.num_envs), key

    return jax.jit(jax.vmap(one_seed)), jax.jit(jax.vmap(init)).lower(keys).compile(options)(keys), steps


def measure(
    algo: str, k: int, seeds: int, updates: int, repeats: int, base: dict | None = None, options: dict | None = None
) -> dict:
    """Compiles one configuration, runs one warm-up call, times ``repeats`` calls; returns a result row.

    ``base`` overrides Config fields; ``options`` are XLA compiler options (tests use them to compile faster).
    """
    import jax

    fn, state, steps = _build(algo, k, seeds, updates, dict(base or {}), options)
    t0 = time.perf_counter()
    compiled = fn.lower(state).compile(options)
    compile_s = time.perf_counter() - t0
    state = jax.block_until_ready(compiled(state))[0]  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(compiled(state))[0]
        rates.append(steps / (time.perf_counter() - t0))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    device_stats = jax.devices()[0].memory_stats() or {}  # None on CPU
    return {
        "algo": algo, "K": k if algo.startswith("perla") else None, "seeds": seeds, "updates": updates,
        "layer": (base or {}).get("critic_action_layer", _default_layer()) if algo.startswith("perla") else None,
        "median": statistics.median(rates), "min": min(rates), "max": max(rates),
        "compile_s": compile_s, "peak_mib": peak_mib,
        "peak_device_mib": device_stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in device_stats else None,
        "critic_target": cfg_field(base, "critic_target") if algo.startswith("perla") else None,
    }


def _default_layer() -> str:
    return cfg_field(None, "critic_action_layer")


def cfg_field(base: dict | None, name: str):
    """``base[name]`` where given, else the Config default (a dataclass field's default is its class attribute)."""
    from perla_jax import Config

    return (base or {}).get(name, getattr(Config, name))


def interleaved(specs: list[dict], rounds: int, options: dict | None = None) -> list[dict]:
    """Times the configurations of ``specs`` (``algo``, ``k``, ``seeds``, ``updates``, ``base``) in one
    process, one call each per round, so that every round sees the same machine load; returns per spec the
    median steps/s and, per round, its rate relative to the first spec (the reference, e.g. mappo)."""
    import jax

    built = []
    for spec in specs:
        fn, state, steps = _build(spec["algo"], spec["k"], spec["seeds"], spec["updates"], dict(spec["base"]), options)
        compiled = fn.lower(state).compile(options)
        built.append([compiled, jax.block_until_ready(compiled(state))[0], steps])  # warm-up call
    rates = [[] for _ in specs]
    for _ in range(rounds):
        for i, entry in enumerate(built):
            t0 = time.perf_counter()
            entry[1] = jax.block_until_ready(entry[0](entry[1]))[0]
            rates[i].append(entry[2] / (time.perf_counter() - t0))
    rows = []
    for spec, r in zip(specs, rates):
        ratios = [a / b for a, b in zip(r, rates[0])]
        rows.append(dict(spec, median=statistics.median(r), ratio=statistics.median(ratios),
                         ratio_min=min(ratios), ratio_max=max(ratios)))
    return rows


def format_interleaved(rows: list[dict]) -> str:
    lines = ["| algo | K | critic | critic action layer | critic target | seeds | steps/s (median) | "
             "vs first row: median (min-max) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        perla = r["algo"].startswith("perla")
        arch = (r["base"].get("critic_arch") or DEFAULT_CRITIC_ARCH) if perla else "-"
        layer = r["base"].get("critic_action_layer", _default_layer()) if perla and arch == "mlp" else "-"
        target = r["base"].get("critic_target", cfg_field(None, "critic_target")) if perla else "-"
        lines.append(
            f"| {r['algo']} | {r['k'] if perla else '-'} | {arch} | {layer} | {target} | {r['seeds']} | {r['median']:,.0f} | "
            f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |"
        )
    return "\n".join(lines)


def run_isolated(spec: dict) -> dict:
    """Runs :func:`measure` in a fresh Python process and returns its row (peak memory is that process's)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench child failed for {spec}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict]) -> str:
    """Markdown table with one row per configuration."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = (
            r["algo"], "-" if r["K"] is None else str(r["K"]), r.get("layer") or "-", str(r["seeds"]), str(r["updates"]),
            f"{r['median']:,.0f}", f"{r['min']:,.0f}-{r['max']:,.0f}", f"{r['compile_s']:.1f}", f"{r['peak_mib']:.0f}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_checks(rows: list[dict], jaxmarl_baseline: float | None) -> list[str]:
    """The two ratio checks as markdown bullet lines."""
    lines = []
    rate = {(r["algo"], r["K"], r.get("layer"), r["seeds"]): r["median"] for r in rows}
    layers = sorted({r.get("layer") for r in rows if r.get("layer")})
    for seeds in sorted({r["seeds"] for r in rows}):
        mappo = rate.get(("mappo", None, None, seeds))
        for layer in layers:
            perla = rate.get(("perla_mappo", 16, layer, seeds))
            if perla and mappo:
                ok = "met" if perla / mappo >= 0.6 else "NOT met"
                lines.append(
                    f"- perla_mappo K=16 ({layer}-layer actions) / mappo at {seeds} seed(s): {perla / mappo:.2f} "
                    f"(target >= 0.6: {ok})"
                )
    mappo1 = rate.get(("mappo", None, None, 1))
    if mappo1 and jaxmarl_baseline:
        r = mappo1 / jaxmarl_baseline
        verdict = "met" if r >= 1.0 else "NOT met"
        lines.append(
            f"- mappo 1 seed / JaxMARL ippo_ff_mpe ({jaxmarl_baseline:,.0f} steps/s): {r:.2f} "
            f"(target >= 1.0: {verdict}; aim 1.5)"
        )
    elif mappo1:
        lines.append("- mappo 1 seed / JaxMARL ippo_ff_mpe: not computed (no --jaxmarl-baseline given)")
    return lines


def machine_info() -> str:
    """CPU model, core count, jax version, backend and devices, as one line."""
    import jax

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    devices = ", ".join(f"{d} {d.device_kind}" for d in jax.devices())
    return f"{model}, {os.cpu_count()} cores; jax {jax.__version__}, backend {jax.default_backend()} ({devices})"


def replace_section(text: str, body: str) -> str:
    """Returns ``text`` with the part between the bench markers replaced by ``body`` (markers appended if absent)."""
    return sections.replace_marked_section(text, SECTION, body)


def write_report(path: str, body: str) -> None:
    """Replaces the bench section of ``path``, creating the file if needed."""
    sections.write_marked_section(path, SECTION, body)


def preset_fields(preset: str, config: dict) -> dict:
    """``config``'s Config fields over ``preset``'s for its env family (``perla_jax.presets``)."""
    from perla_jax.presets import preset_fields as fields  # the package only where a preset is asked for

    return fields(preset, config)


def parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", default=["mappo", "perla_mappo"])
    p.add_argument("--ks", nargs="+", type=int, help="K values for perla_* algos (default 1 4 16 64)")
    p.add_argument("--seeds", nargs="+", type=int, help="seed counts (default 1 8 32)")
    p.add_argument("--updates", type=int, help="updates per timed call, n of run_updates (default 4)")
    p.add_argument("--repeats", type=int, help="timed calls R; the median is reported (default 5)")
    p.add_argument(
        "--action-layers", nargs="+", default=["first", "last"], help="critic_action_layer values for perla_* algos"
    )
    p.add_argument("--critic-targets", nargs="+", default=["joint", "marginal"],
                   help="critic_target values for perla_* rows of --interleaved (marginal, joint)")
    p.add_argument("--no-random", action="store_true", help="skip the random-policy rollout ceiling")
    p.add_argument("--config", type=json.loads, default={}, metavar="JSON",
                   help='Config fields for every row, e.g. \'{"env": "smax", "map_name": "2s3z"}\' (default: MPE)')
    p.add_argument("--preset", help="a preset's settings (e.g. jaxmarl) for --config's env, under --config's fields")
    p.add_argument("--quick", action="store_true", help="smoke-test defaults: 2 updates, seeds 1 2, K 1 4, 3 repeats")
    p.add_argument("--write", metavar="FILE", help="replace the bench section of FILE (e.g. BENCHMARKS.md)")
    p.add_argument("--jaxmarl-baseline", type=float, help="JaxMARL ippo_ff_mpe 1-seed steps/s on this machine")
    p.add_argument("--interleaved", type=int, metavar="ROUNDS",
                   help="instead of the grid: mappo, then every other --algos row (PERLA: each --critic-archs, --ks, "
                        "--critic-targets and, for mlp, --action-layers) at the first --seeds value, in one process, "
                        "calls alternating for ROUNDS rounds (robust to machine load)")
    p.add_argument("--critic-archs", nargs="+", default=["factored"], help="critic_arch values for perla_* rows of "
                   "--interleaved (factored, mlp)")
    p.add_argument("--section", default="bench-interleaved", help="marker name --interleaved --write replaces")
    p.add_argument("--one", help=argparse.SUPPRESS)  # child mode: JSON spec for measure()
    return p


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    args = parser().parse_args(argv)
    if args.one:
        print(json.dumps(measure(**json.loads(args.one))))
        return
    if args.preset:
        args.config = preset_fields(args.preset, args.config)
    defaults = dict(ks=[1, 4], seeds=[1, 2], updates=2, repeats=3) if args.quick else DEFAULTS
    for name, value in defaults.items():  # explicit flags win over --quick
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.interleaved:
        _main_interleaved(args, argv)
    else:
        _main_grid(args, argv)


def _main_grid(args: argparse.Namespace, argv: list[str] | None) -> None:
    """The throughput grid: every row in its own subprocess, then the table and the ratio checks."""
    specs = grid_specs(args)
    load_before = os.getloadavg()
    rows = []
    for spec in specs:
        rows.append(run_isolated(spec))
        print(f"done {spec['algo']} K={spec['k']} {spec['base']} seeds={spec['seeds']}: {rows[-1]['median']:,.0f} steps/s",
              file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    table = format_table(rows)
    checks = ratio_checks(rows, args.jaxmarl_baseline)
    print(table + "\n\n" + "\n".join(checks))
    if args.write:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = shlex.join(["python", os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else argv))
        body = "\n".join([
            table, "",
            f"Command: `{command}`  ",
            f"Date: {now}  ",
            f"Machine: {machine_info()}  ",
            "Load average (1 min) before/after: " + f"{load_before[0]:.2f} / {load_after[0]:.2f}", "",
            "Default Config (16 envs x 128 steps, MPE simple_spread); `random` is the random-policy rollout "
            "ceiling. Each row: compile, one warm-up call, then the median of R timed calls of "
            "`run_updates(state, n)`; peak MiB is ru_maxrss of the row's own subprocess.", "",
            *checks,
        ])
        write_report(args.write, body)


def grid_specs(args: argparse.Namespace) -> list[dict]:
    """One ``measure`` spec per row of the grid; ``args.config`` (Config fields) goes into every row's base."""
    specs = []
    for seeds in args.seeds:
        for algo in args.algos + ([] if args.no_random else [RANDOM]):
            perla = algo.startswith("perla")
            # the action layer is the MLP Q-critic's (Config refuses it for the factored one)
            mlp = (args.config.get("critic_arch") or DEFAULT_CRITIC_ARCH) == "mlp"
            for layer in args.action_layers if perla and mlp else [None]:
                base = {**args.config, **({"critic_action_layer": layer} if layer else {})}
                for k in args.ks if perla else [1]:
                    specs.append(
                        dict(algo=algo, k=k, seeds=seeds, updates=args.updates, repeats=args.repeats, base=base)
                    )
    return specs


def interleaved_specs(args: argparse.Namespace) -> list[dict]:
    """mappo first (every row's reference), then each other algorithm of ``args.algos``; PERLA rows for every
    critic architecture, K, critic target and (mlp critic only) action layer given, all at the first seed count."""
    seeds, base = args.seeds[0], dict(args.config)
    specs = [dict(algo="mappo", k=1, seeds=seeds, updates=args.updates, base=base)]
    for algo in args.algos:
        if algo == "mappo":
            continue
        if not algo.startswith("perla"):
            specs.append(dict(algo=algo, k=1, seeds=seeds, updates=args.updates, base=base))
            continue
        for arch in args.critic_archs:
            for layer in args.action_layers if arch == "mlp" else [None]:
                for target in args.critic_targets:
                    fields = {**base, "critic_arch": arch, "critic_target": target}
                    fields.update({"critic_action_layer": layer} if layer else {})
                    specs += [dict(algo=algo, k=k, seeds=seeds, updates=args.updates, base=fields) for k in args.ks]
    return specs


def _main_interleaved(args: argparse.Namespace, argv: list[str] | None) -> None:
    load_before = os.getloadavg()
    table = format_interleaved(interleaved(interleaved_specs(args), args.interleaved))
    load_after = os.getloadavg()
    print(table)
    if args.write:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = shlex.join(["python", os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else argv))
        body = "\n".join([
            table, "", f"Command: `{command}`  ", f"Date: {now}  ", f"Machine: {machine_info()}  ",
            "Load average (1 min) before/after: " + f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        ])
        sections.write_marked_section(args.write, args.section, body)


if __name__ == "__main__":
    main()
