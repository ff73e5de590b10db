"""Does a change keep behaviour and speed? Compares the working tree's package with the one at a git revision.

``fingerprint``: a few training updates of 13 configurations (MPE with every algorithm, estimator, critic layout
and network kind; SMAX 3m recurrent and feed-forward; a continuous toy env) from a fixed seed, once with each
package in its own process; prints whether the metrics and the final parameters are bit-identical.

``speed``: mappo and perla_mappo K=16 (MPE defaults, 16 envs x 128 steps, or the settings ``--config`` and
``--preset`` give) with both packages in one process, calls alternating for ROUNDS rounds, so both see the same
machine load; prints steps/s and the per-round ratio.

    python experiments/revision_check.py fingerprint --base HEAD~1
    python experiments/revision_check.py speed --base HEAD~1 --seeds 1 --updates 2 --rounds 8
    python experiments/revision_check.py speed --base HEAD~1 --preset jaxmarl --config '{"env": "ant_4x2"}'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_envs=4, num_steps=16, total_timesteps=64 * 3, actor_hidden=(16, 16), critic_hidden=(16, 16),
            num_minibatches=2, update_epochs=2)
RUNS = {
    "mpe_perla_td": dict(),
    "mpe_perla_cv": dict(advantage="perla_cv"),
    "mpe_perla_sarsa": dict(advantage="sarsa"),
    "mpe_perla_first_layer": dict(critic_arch="mlp", critic_action_layer="first"),
    "mpe_perla_ippo": dict(algo="perla_ippo"),
    "mpe_mappo": dict(algo="mappo"),
    "mpe_ippo_unshared_ids": dict(algo="ippo", share_actor=False, actor_agent_id=True),
    "mpe_perla_rnn": dict(network="rnn"),
    "smax_perla_rnn": dict(env="smax", map_name="3m"),
    "smax_mappo_ff": dict(env="smax", map_name="3m", algo="mappo", network="ff"),
    "toy_perla": dict(env="toy", own_action_samples=2),
    "toy_mappo": dict(env="toy", algo="mappo"),
    "toy_ippo": dict(env="toy", algo="ippo"),
}
UPDATES = 3


def extract(revision: str, into: Path, package: str) -> Path:
    """The package at ``revision`` as ``into/package`` (imports renamed when ``package`` is not perla_jax)."""
    archive = subprocess.run(["git", "archive", revision, "perla_jax"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    target = into / package
    if package != "perla_jax":
        (into / "perla_jax").rename(target)
        for path in target.rglob("*.py"):
            path.write_text(path.read_text().replace("perla_jax", package))
    return into


def fingerprint(out: Path) -> None:
    """Child mode: runs RUNS with whatever ``perla_jax`` is importable and writes their fingerprints to ``out``."""
    import jax
    import numpy as np

    from perla_jax import Config, make_trainer

    sys.path.insert(0, str(ROOT / "tests"))
    from toy_continuous import ToyContinuous

    try:
        from perla_jax.envs.mabrax import ContinuousMultiAgentEnv
    except ImportError:  # revisions before the envs/ package
        from perla_jax.continuous_envs import ContinuousMultiAgentEnv

    def digest(tree) -> str:
        h = hashlib.sha256()
        for leaf in jax.tree.leaves(tree):
            h.update(np.asarray(leaf).tobytes())
        return h.hexdigest()

    result = {}
    for name, changes in RUNS.items():
        perla = changes.get("algo", "perla").startswith("perla")  # K is refused for the V-critic algorithms
        kw, env = {**TINY, **({"k": 4} if perla else {}), **changes}, None
        if kw.get("env") == "toy":
            kw["env"], env = "mabrax", ContinuousMultiAgentEnv(name="toy", env=ToyContinuous(max_steps=5))
        trainer = make_trainer(Config(**kw), env)
        state, metrics = jax.jit(lambda k: trainer.run_updates(trainer.init(k), UPDATES))(jax.random.PRNGKey(7))
        result[name] = {
            "metrics": {k: np.asarray(v).tolist() for k, v in metrics.items()},
            "actor": digest(state.actor.params),
            "critic": digest(state.critic.params),
        }
    out.write_text(json.dumps(result, indent=1))


def largest_metric_gap(before: dict, after: dict) -> str:
    """Which metric moved most between two fingerprints, relative to its size over the updates (NaNs equal)."""
    import numpy as np

    gaps = {}
    for name, values in before.items():
        b, a = np.asarray(values, float), np.asarray(after.get(name, values), float)
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.abs(a - b))
        gaps[name] = float(np.nan_to_num(diff, nan=np.inf).max() / max(np.nanmax(np.abs(b), initial=0.0), 1e-12))
    worst = max(gaps, key=gaps.get)
    return f"(largest metric change: {worst}, {gaps[worst]:.1e} of its size)"


def compare_fingerprints(base: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        extract(base, tmp, "perla_jax")
        outs = {"base": tmp / "base.json", "tree": tmp / "tree.json"}
        for which, path in (("base", tmp), ("tree", ROOT)):
            env = {**os.environ, "PYTHONPATH": str(path)}
            subprocess.run([sys.executable, __file__, "_child", str(outs[which])], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        before, after = (json.loads(p.read_text()) for p in outs.values())
    differ = [name for name in RUNS if before[name] != after[name]]
    for name in RUNS:
        status = ("DIFFERENT  " + largest_metric_gap(before[name]["metrics"], after[name]["metrics"])
                  if name in differ else "identical")
        print(f"{name:26s} {status}")
    print(f"{len(RUNS) - len(differ)} of {len(RUNS)} configurations bit-identical to {base} "
          f"({UPDATES} updates each: metrics and final actor and critic parameters)")
    return 1 if differ else 0


def compare_speed(base: str, seeds: int, updates: int, rounds: int, fields: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(extract(base, Path(tmp), "perla_base")))
        import jax
        import perla_base

        import perla_jax

        def build(pkg, algo):
            cfg = pkg.Config(**{**fields, "algo": algo, **({"k": 16} if algo.startswith("perla") else {})})
            trainer = pkg.make_trainer(cfg)
            state = jax.jit(jax.vmap(trainer.init))(jax.random.split(jax.random.PRNGKey(0), seeds))
            # the metrics are returned as a run returns them, so XLA cannot drop the work that feeds only them
            fn = jax.jit(jax.vmap(lambda s: trainer.run_updates(s, updates)))
            return [fn, jax.block_until_ready(fn(state))[0], updates * cfg.batch_size * seeds]

        entries = {(w, a): build(p, a) for a in ("mappo", "perla_mappo") for w, p in (("base", perla_base), ("tree", perla_jax))}
        rates = {key: [] for key in entries}
        for _ in range(rounds):
            for key, entry in entries.items():
                t0 = time.perf_counter()
                entry[1] = jax.block_until_ready(entry[0](entry[1]))[0]
                rates[key].append(entry[2] / (time.perf_counter() - t0))
    for algo in ("mappo", "perla_mappo"):
        b, a = rates[("base", algo)], rates[("tree", algo)]
        ratios = [x / y for x, y in zip(a, b)]
        print(f"{algo:12s} seeds={seeds}: {base} {statistics.median(b):,.0f}, working tree {statistics.median(a):,.0f} "
              f"steps/s; tree/base per round: median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}), {rounds} rounds")


def speed_fields(config: dict, preset: str | None) -> dict:
    """The Config fields both packages are timed at: ``config``'s, over ``preset``'s for its env family if given."""
    from perla_jax.presets import preset_fields  # here: the fingerprint children import a revision's own package

    return dict(config) if preset is None else preset_fields(preset, config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        fingerprint(Path(argv[1]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("check", choices=("fingerprint", "speed"))
    p.add_argument("--base", default="HEAD", help="git revision to compare the working tree with")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--updates", type=int, default=2, help="updates per timed call")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--config", type=json.loads, default={}, help="speed: Config fields as JSON (default: MPE defaults)")
    p.add_argument("--preset", default=None, help="speed: a preset's settings (e.g. jaxmarl) under --config's fields")
    args = p.parse_args(argv)
    if args.check == "fingerprint":
        return compare_fingerprints(args.base)
    compare_speed(args.base, args.seeds, args.updates, args.rounds, speed_fields(args.config, args.preset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
