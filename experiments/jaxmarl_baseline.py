"""Training speed against JaxMARL's own ``ippo_ff_mpe`` (baselines/IPPO), timed interleaved in one process.

JaxMARL's baseline scripts are not part of the ``jaxmarl`` package, so point ``--jaxmarl-dir`` at a folder holding
``ippo_ff_mpe.py`` and ``config/ippo_ff_mpe.yaml`` from a checkout of FLAIROx/JaxMARL (``baselines/IPPO``); nothing
of it is kept in this repository. Every program trains MPE simple_spread for the same updates of JaxMARL's batch
(16 envs x 128 steps, 4 epochs x 4 minibatches), from whole-run functions ``jit(vmap(train))`` over the seeds:

- ``jaxmarl ippo_ff_mpe``: their ``make_train`` with their yaml (its per-update ``wandb.log`` callback stubbed out);
- ``ippo`` / ``mappo`` / ``perla_mappo`` with ``--preset jaxmarl`` (JaxMARL's yaml values; the time limit as a
  termination, no agent ids in the actor; IPPO's critic sees the own observation without an id, as theirs);
- ``mappo (our defaults)``: our MPE defaults (time limit bootstrapped, the time left observed, critic lr and init)
  at JaxMARL's batch sizes, to show what they cost.

What still differs with the preset: our actor and critic are two networks with two optimisers (each clips its own
gradient norm; JaxMARL's one ActorCritic clips both together), and every update computes our diagnostics
(``pg_var``, ``pg_snr``, ``critic_ev``, ...). Calls alternate round by round, so drifts in machine speed hit every
program alike; ratios are medians of per-round ratios against JaxMARL at the same seed count.

    python experiments/jaxmarl_baseline.py --jaxmarl-dir /path/to/JaxMARL/baselines/IPPO --seeds 1 8 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
import types
from pathlib import Path

if __package__ in (None, ""):  # `python experiments/jaxmarl_baseline.py`: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import yaml  # noqa: E402

from experiments import sections  # noqa: E402
from experiments.bench import machine_info  # noqa: E402
from perla_jax import Config, make_train  # noqa: E402
from perla_jax.presets import preset_config  # noqa: E402

JAXMARL = "jaxmarl ippo_ff_mpe"
OURS = {  # row name -> Config of ours (None: JaxMARL's preset with that algo)
    "ippo": dict(algo="ippo"),
    "mappo": dict(algo="mappo"),
    "perla_mappo K=16": dict(algo="perla_mappo", k=16),
    "ippo, pg spread every 10": dict(algo="ippo", pg_spread_every=10),
}
OUR_DEFAULTS = "mappo (our defaults)"
JAXMARL_BATCH = dict(num_envs=16, num_steps=128, update_epochs=4, num_minibatches=4)
SECTION = "jaxmarl-baseline"


def _stub_logging_modules() -> None:
    # The script imports wandb/hydra/omegaconf at module level; its per-update wandb.log becomes a no-op.
    for name in ("wandb", "hydra", "omegaconf"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["wandb"].log = lambda *a, **k: None
    sys.modules["hydra"].main = lambda **k: (lambda f: f)
    sys.modules["omegaconf"].OmegaConf = object


def steps_per_seed(updates: int) -> int:
    """Env steps of ``updates`` updates of JaxMARL's batch, per seed."""
    return JAXMARL_BATCH["num_envs"] * JAXMARL_BATCH["num_steps"] * updates


def our_config(name: str, steps: int, seeds: int) -> Config:
    if name == OUR_DEFAULTS:
        return Config(algo="mappo", total_timesteps=steps, num_seeds=seeds, **JAXMARL_BATCH)
    return preset_config("jaxmarl", dict(OURS[name], env="mpe", total_timesteps=steps, num_seeds=seeds))


def programs(jaxmarl_dir: Path, updates: int, seeds: int, rows: list[str]) -> dict:
    """row name -> (compiled whole-run function of ``seeds`` seeds, its keys)."""
    _stub_logging_modules()
    sys.path.insert(0, str(jaxmarl_dir))
    import ippo_ff_mpe  # noqa: E402  (JaxMARL's script, from --jaxmarl-dir)

    steps = steps_per_seed(updates)
    config = dict(yaml.safe_load((jaxmarl_dir / "config" / "ippo_ff_mpe.yaml").read_text()), TOTAL_TIMESTEPS=steps)
    keys = jax.random.split(jax.random.PRNGKey(30), seeds)
    fns = {JAXMARL: ippo_ff_mpe.make_train(config)}
    fns.update({name: make_train(our_config(name, steps, seeds)) for name in rows})
    out = {}
    for name, fn in fns.items():
        compiled = jax.jit(jax.vmap(fn)).lower(keys).compile()
        jax.block_until_ready(compiled(keys))  # warm-up
        out[name] = (compiled, keys)
    return out


def time_rows(fns: dict, rounds: int, steps: int) -> list[dict]:
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (compiled, keys) in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(keys))
            times[name].append(time.perf_counter() - start)
    base = times[JAXMARL]
    return [dict(name=name, rate=steps / statistics.median(ts),
                 ratios=sorted(b / t for b, t in zip(base, ts))) for name, ts in times.items()]


def format_table(results: dict[int, list[dict]]) -> str:
    lines = ["| program | seeds | env steps/s (all seeds) | vs JaxMARL (median of rounds) | min-max of rounds |",
             "|---|---|---|---|---|"]
    for seeds, rows in results.items():
        for r in rows:
            lines.append(f"| {r['name']} | {seeds} | {r['rate']:,.0f} | {statistics.median(r['ratios']):.2f}x | "
                         f"{r['ratios'][0]:.2f}-{r['ratios'][-1]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jaxmarl-dir", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    p.add_argument("--updates", type=int, default=20, help="updates per timed call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rows", nargs="+", default=[*OURS, OUR_DEFAULTS], choices=[*OURS, OUR_DEFAULTS])
    p.add_argument("--write", help="markdown file whose section jaxmarl-baseline gets the table")
    args = p.parse_args(argv)
    if not (args.jaxmarl_dir / "ippo_ff_mpe.py").is_file():
        p.error(f"--jaxmarl-dir={str(args.jaxmarl_dir)!r} holds no ippo_ff_mpe.py: allowed is JaxMARL's baselines/IPPO")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = {}
    for seeds in args.seeds:
        fns = programs(args.jaxmarl_dir, args.updates, seeds, args.rows)
        steps = steps_per_seed(args.updates) * seeds
        results[seeds] = time_rows(fns, args.rounds, steps)
        print(format_table({seeds: results[seeds]}), flush=True)
    table = format_table(results)
    command = shlex.join(["python", "experiments/jaxmarl_baseline.py"] + (sys.argv[1:] if argv is None else argv))
    body = "\n".join([table, "", f"Command: `{command}` ({args.updates} updates per call, {args.rounds} rounds)  ",
                      f"Date: {started}  ", f"Machine: {machine_info()}"])
    if args.write:
        sections.write_marked_section(args.write, SECTION, body)
    return body


if __name__ == "__main__":
    main()
