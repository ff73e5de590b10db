"""Times JaxMARL's own ``ippo_ff_mpe`` against our ``mappo`` (1 seed, same env steps) in one process.

JaxMARL's baseline scripts are not part of the ``jaxmarl`` package, so point ``--jaxmarl-dir`` at a folder
holding ``ippo_ff_mpe.py`` and ``config/ippo_ff_mpe.yaml`` from a checkout of FLAIROx/JaxMARL
(``baselines/IPPO``); nothing of it is kept in this repository. Calls alternate round by round so that drifts
in machine speed hit every program alike; the report gives per-round speed ratios.

    python experiments/jaxmarl_baseline.py --jaxmarl-dir /path/to/JaxMARL/baselines/IPPO --updates 60 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import jax
import yaml

from perla_jax import Config, make_train, make_trainer


def _stub_logging_modules() -> None:
    # The script imports wandb/hydra/omegaconf at module level; its per-update wandb.log becomes a no-op.
    for name in ("wandb", "hydra", "omegaconf"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["wandb"].log = lambda *a, **k: None
    sys.modules["hydra"].main = lambda **k: (lambda f: f)
    sys.modules["omegaconf"].OmegaConf = object


def programs(jaxmarl_dir: Path, updates: int) -> dict:
    """name -> (compiled function, argument) for JaxMARL's IPPO and our MAPPO run two ways."""
    _stub_logging_modules()
    sys.path.insert(0, str(jaxmarl_dir))
    import ippo_ff_mpe  # noqa: E402  (JaxMARL's script, from --jaxmarl-dir)

    steps = 16 * 128 * updates
    config = dict(yaml.safe_load((jaxmarl_dir / "config" / "ippo_ff_mpe.yaml").read_text()), TOTAL_TIMESTEPS=steps)
    key = jax.random.PRNGKey(30)
    cfg = Config(algo="mappo", total_timesteps=steps)
    trainer = make_trainer(cfg)
    state = jax.jit(jax.vmap(trainer.init))(key[None])
    fns = {
        "jaxmarl ippo_ff_mpe make_train": (ippo_ff_mpe.make_train(config), key),
        "perla_jax mappo make_train": (make_train(cfg), key),
        "perla_jax mappo vmap(run_updates)": (jax.vmap(lambda s: trainer.run_updates(s, updates)[0]), state),
    }
    out = {}
    for name, (fn, arg) in fns.items():
        compiled = jax.jit(fn).lower(arg).compile()
        jax.block_until_ready(compiled(arg))  # warm-up
        out[name] = (compiled, arg)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jaxmarl-dir", type=Path, required=True)
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    fns = programs(args.jaxmarl_dir, args.updates)
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, (compiled, arg) in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(arg))
            times[name].append(time.perf_counter() - start)
    steps = 16 * 128 * args.updates
    base = times["jaxmarl ippo_ff_mpe make_train"]
    for name, ts in times.items():
        ratio = statistics.median(b / t for b, t in zip(base, ts))
        print(f"{name}: {steps / statistics.median(ts):,.0f} env steps/s; speed vs JaxMARL (median of rounds) {ratio:.2f}")


if __name__ == "__main__":
    main()
