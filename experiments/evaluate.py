"""Evaluate the policies of a run folder written by run.py, and optionally draw them.

Loads the latest (or ``--checkpoint STEP``) checkpoint, plays ``--episodes`` episodes per seed with greedy
(argmax) or stochastic actions, prints the mean team return (and on SMAX the win rate) with a 95% CI over seeds and writes
``eval.json`` to the run folder (see ``perla_jax.evaluation.summarise``). ``--render N`` also writes a GIF
of N episodes of seed 0. Example::

    python experiments/evaluate.py runs/mpe-perla_mappo-k16-20260101-120000 --episodes 32 --render 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

from perla_jax import checkpoints, make_trainer, recording
from perla_jax.evaluation import EVAL_FILE, make_evaluator, summarise
from perla_jax.rendering import draw_frames, record_episodes, write_gif

RENDER_KEY = 1  # folded into the evaluation key, so rendered episodes are drawn apart from evaluated ones


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate a run's checkpointed policies; writes eval.json (and a GIF with --render).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="run folder written by run.py")
    parser.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                        help="update count of the checkpoint to evaluate (default: the latest)")
    parser.add_argument("--episodes", type=int, default=32, help="episodes per seed")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--greedy", dest="mode", action="store_const", const="greedy", help="argmax actions (default)")
    modes.add_argument("--stochastic", dest="mode", action="store_const", const="stochastic",
                       help="actions sampled from the policies")
    parser.set_defaults(mode="greedy")
    parser.add_argument("--render", type=int, default=0, metavar="N", help="write a GIF of N episodes of seed 0")
    parser.add_argument("--eval-seed", type=int, default=0, help="PRNG seed of the evaluation episodes")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Evaluates as ``argv`` says; returns the dict written to eval.json."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, low in (("episodes", 1), ("render", 0), ("eval_seed", 0)):
        if getattr(args, name) < low:
            parser.error(f"{name}={getattr(args, name)} is invalid: allowed is an integer >= {low}")
    run_dir: Path = args.run_dir
    if not (run_dir / recording.CONFIG_FILE).is_file():
        parser.error(f"run_dir={str(run_dir)!r} holds no {recording.CONFIG_FILE}: allowed is a folder written by run.py")
    manager = checkpoints.open_manager(run_dir, read_only=True)
    try:
        cfg = recording.read_config(run_dir)
        available = checkpoints.steps(manager)
        if not available:
            parser.error(f"run_dir={str(run_dir)!r} holds no checkpoints: train (or resume) it with run.py first")
        step = available[-1] if args.checkpoint is None else args.checkpoint
        checkpoints.check_meta_config(checkpoints.read_meta(manager, step), cfg.to_dict(), step)
    except ValueError as e:
        manager.close()
        parser.error(str(e))
    trainer = make_trainer(cfg)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
    try:
        state = checkpoints.restore_state(manager, step, jax.eval_shape(jax.vmap(trainer.init), keys))
    finally:
        manager.close()
    key = jax.random.PRNGKey(args.eval_seed)
    evaluate = make_evaluator(trainer.env, trainer.agents, args.episodes, args.mode)
    result = summarise(evaluate(state.actor.params, key), args.mode, step, args.eval_seed)
    recording.atomic_write_text(run_dir / EVAL_FILE, json.dumps(result, indent=2) + "\n")
    ret = result["metrics"]["team_return"]
    print(f"checkpoint {step}/{cfg.num_updates} updates, {args.mode}, {args.episodes} episodes x {cfg.num_seeds} seeds")
    print(f"team return (95% CI over seeds): {recording.format_mean_ci(ret['mean'], ret['ci95'] or float('nan'))}")
    if "win_rate" in result["metrics"]:
        win = result["metrics"]["win_rate"]
        print(f"win rate (95% CI over seeds): {recording.format_mean_ci(win['mean'], win['ci95'] or float('nan'))}")
    print(f"wrote {run_dir / EVAL_FILE}")
    if args.render:
        seed0 = jax.tree.map(lambda x: x[0], state.actor.params)
        rec = record_episodes(trainer.env, trainer.agents, seed0, jax.random.fold_in(key, RENDER_KEY), args.render, args.mode)
        path = write_gif(run_dir / f"episodes-{step}-{args.mode}.gif", draw_frames(trainer.env, rec))
        print(f"wrote {path} ({args.render} episodes of seed 0)")
    return result


if __name__ == "__main__":
    main()
