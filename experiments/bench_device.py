"""The accelerator benchmark: one command that, on a GPU, measures in a few minutes what a user wants to know
before renting one, and writes it as JSON.

    python experiments/bench_device.py --out bench_device.json              # the suite (GPU: ~5-8 minutes)
    python experiments/bench_device.py --seeds 1 --ks 2 --tiny --out x.json  # the tests' CPU-sized run

Rows: ``mappo`` and ``perla_mappo`` at K in {1, 16, 64}, each at 1, 32 and 128 seeds, on the default Config
(MPE simple_spread, 16 envs x 128 steps): env steps/s (median of the timed calls), compile seconds, peak device
memory (``jax.devices()[0].memory_stats()["peak_bytes_in_use"]``; null on CPU, which has none) and peak host
memory. Each row runs in its own subprocess (``bench.py --one``), so its peak memory is its own. A row not started
before ``--budget-s`` runs out is listed under ``skipped``. Then the wall time of 32 seeds x 1e7 MPE steps of
``perla_mappo`` K=16, extrapolated from its measured 32-seed rate: compile + 1e7 * 32 / (steps/s).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python experiments/bench_device.py`: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.bench import machine_info, run_isolated  # noqa: E402

ALGOS = ("mappo", "perla_mappo")
TINY = dict(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, actor_hidden=(8,), critic_hidden=(8, 8))
EXTRAPOLATE = dict(seeds=32, steps_per_seed=10_000_000, k=16)


def extrapolate(rows: list[dict]) -> dict | None:
    """Wall seconds of ``EXTRAPOLATE`` from the matching row (None where that row was not measured)."""
    row = next((r for r in rows if r["algo"] == "perla_mappo" and r["K"] == EXTRAPOLATE["k"]
                and r["seeds"] == EXTRAPOLATE["seeds"]), None)
    if row is None:
        return None
    total = EXTRAPOLATE["seeds"] * EXTRAPOLATE["steps_per_seed"]
    return dict(EXTRAPOLATE, wall_s=row["compile_s"] + total / row["median"], from_steps_per_s=row["median"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 32, 128], help="seed counts")
    p.add_argument("--ks", nargs="+", type=int, default=[1, 16, 64], help="K values of perla_mappo")
    p.add_argument("--updates", type=int, default=2, help="updates per timed call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row (median reported)")
    p.add_argument("--budget-s", type=float, default=420.0, help="start no row after this many seconds")
    p.add_argument("--tiny", action="store_true", help="tiny networks and batches (the CPU test)")
    p.add_argument("--out", type=Path, required=True, help="JSON file written (rewritten after every row)")
    args = p.parse_args(argv)
    for name in ("seeds", "ks"):
        bad = [v for v in getattr(args, name) if v < 1]
        if bad:
            p.error(f"{name}={bad} is invalid: allowed are integers >= 1")
    base = TINY if args.tiny else {}
    specs = [dict(algo=algo, k=k, seeds=seeds, updates=args.updates, repeats=args.repeats, base=base)
             for seeds in args.seeds for algo in ALGOS for k in (args.ks if algo.startswith("perla") else [1])]
    start = time.time()
    result = {"command": "python experiments/bench_device.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              "machine": machine_info(), "config": base or "default Config (MPE simple_spread)",
              "rows": [], "skipped": [], "extrapolated": None}
    for spec in specs:
        if time.time() - start > args.budget_s:
            result["skipped"].append({k: spec[k] for k in ("algo", "k", "seeds")})
            continue
        row = run_isolated(spec)
        result["rows"].append(row)
        result["extrapolated"] = extrapolate(result["rows"])
        args.out.write_text(json.dumps(result, indent=1) + "\n")  # a cut-off run keeps every finished row
        print(f"{row['algo']} K={row['K']} seeds={row['seeds']}: {row['median']:,.0f} steps/s, compile "
              f"{row['compile_s']:.1f} s, device peak {row['peak_device_mib']} MiB", file=sys.stderr, flush=True)
    result["total_s"] = time.time() - start
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
