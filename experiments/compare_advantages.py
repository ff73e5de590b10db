"""Compares PERLA's three advantage estimators (and the MAPPO baseline) on MPE at one budget.

Final return per seed = mean team return over the last 10% of updates; reported as mean and a 95%
t-interval over seeds. With ``--write BENCHMARKS.md`` the table replaces the section between
``<!-- advantages:start -->`` and ``<!-- advantages:end -->``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import jax
import numpy as np
from scipy import stats

from perla_jax import Config, make_train, recording


def final_returns(cfg: Config) -> tuple[np.ndarray, float]:
    """Per-seed final return ``[S]`` and wall seconds (compile included)."""
    start = time.time()
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    ret = np.asarray(jax.jit(jax.vmap(make_train(cfg)))(keys)["metrics"]["return"])
    tail = max(1, cfg.num_updates // 10)
    return np.nanmean(ret[:, -tail:], axis=1), time.time() - start


def t_interval(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--total-timesteps", type=float, default=3e5)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="actor and critic learning rate")
    p.add_argument("--write", default=None, help="markdown file whose advantages section is replaced")
    args = p.parse_args(argv)
    base = dict(
        total_timesteps=int(args.total_timesteps), num_seeds=args.seeds, actor_lr=args.lr, critic_lr=args.lr
    )
    runs = [("perla_mappo", adv, args.k) for adv in ("counterfactual", "td", "sarsa")] + [("mappo", "td", 1)]
    rows = ["| algo | advantage | K | final return (mean ± 95% CI) | seeds | wall s |", "|---|---|---|---|---|---|"]
    for algo, adv, k in runs:
        cfg = Config(algo=algo, advantage=adv, k=k, **base)
        finals, wall = final_returns(cfg)
        mean, half = t_interval(finals)
        label = adv if algo.startswith("perla") else "(V-critic GAE)"
        rows.append(f"| {algo} | {label} | {k} | {mean:.2f} ± {half:.2f} | {args.seeds} | {wall:.0f} |")
        print(rows[-1], flush=True)
    cmd = "python experiments/compare_advantages.py " + " ".join(sys.argv[1:] if argv is None else argv)
    body = "\n".join(
        rows
        + [
            "",
            f"Command: `{cmd.strip()}`; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
            f"{platform.processor() or platform.machine()}, jax {jax.__version__} on {jax.default_backend()}.",
        ]
    )
    if args.write:
        recording.write_marked_section(args.write, "advantages", body)
    return body


if __name__ == "__main__":
    print(main())
