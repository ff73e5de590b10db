"""Compares PERLA variants (advantage estimator, where the critic takes the others' actions) and the
MAPPO baseline on MPE at one budget.

Final return per seed = mean team return over the last 10% of updates; reported as mean and a 95%
t-interval over seeds. With ``--write BENCHMARKS.md`` the table replaces the section between
``<!-- SECTION:start -->`` and ``<!-- SECTION:end -->`` (``--section``, default ``advantages``).

    python experiments/compare_advantages.py                       # the three estimators and mappo
    python experiments/compare_advantages.py --runs td:first,td:last,mappo --section action-layer
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


def parse_run(spec: str, k: int) -> dict:
    """``"td:last"`` -> perla_mappo Config fields; ``"mappo"`` -> the V-critic baseline."""
    if spec == "mappo":
        return dict(algo="mappo", k=1)
    parts = spec.split(":")
    if len(parts) != 2:
        raise SystemExit(f"run {spec!r} is invalid: allowed are ADVANTAGE:ACTION_LAYER (e.g. td:last) or mappo")
    return dict(algo="perla_mappo", advantage=parts[0], critic_action_layer=parts[1], k=k)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--total-timesteps", type=float, default=3e5)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="actor and critic learning rate")
    p.add_argument(
        "--runs",
        default="counterfactual:first,td:first,sarsa:first,mappo",
        help="comma-separated runs: ADVANTAGE:ACTION_LAYER for perla_mappo, or mappo",
    )
    p.add_argument("--write", default=None, help="markdown file whose section is replaced")
    p.add_argument("--section", default="advantages", help="marked section of --write to replace")
    args = p.parse_args(argv)
    base = dict(
        total_timesteps=int(args.total_timesteps), num_seeds=args.seeds, actor_lr=args.lr, critic_lr=args.lr
    )
    try:  # every run's Config is validated before the first one trains
        configs = [Config(**parse_run(spec, args.k), **base) for spec in args.runs.split(",")]
    except ValueError as e:
        p.error(str(e))
    rows = [
        "| algo | advantage | critic action layer | K | final return (mean ± 95% CI) | seeds | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for cfg in configs:
        finals, wall = final_returns(cfg)
        mean, half = t_interval(finals)
        perla = cfg.uses_q_critic
        label, layer = (cfg.advantage, cfg.critic_action_layer) if perla else ("(V-critic GAE)", "-")
        rows.append(
            f"| {cfg.algo} | {label} | {layer} | {cfg.k} | {mean:.2f} ± {half:.2f} | {args.seeds} | {wall:.0f} |"
        )
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
        recording.write_marked_section(args.write, args.section, body)
    return body


if __name__ == "__main__":
    print(main())
