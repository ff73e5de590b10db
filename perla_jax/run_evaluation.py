"""Evaluation of a finished (or interrupted) run folder: its checkpointed policies play fresh episodes.

``evaluate_run(run_dir)`` restores the latest checkpoint (or ``checkpoint=STEP``), plays ``episodes`` episodes per
seed with greedy (argmax) or stochastic actions, writes ``eval.json`` into the run folder
(``perla_jax.evaluation.summarise``) and, with ``render=N``, a GIF of N episodes of seed 0. ``perla-jax eval`` and
experiments/evaluate.py are its command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import jax

from perla_jax.evaluation import EVAL_FILE, check_mode, make_evaluator, summarise
from perla_jax.outputs import checkpoints, recording
from perla_jax.rendering import draw_frames, record_episodes, write_gif
from perla_jax.train import make_trainer

RENDER_KEY = 1  # folded into the evaluation key, so rendered episodes are drawn apart from evaluated ones


def evaluate_run(run_dir: str | Path, checkpoint: int | None = None, episodes: int = 32, mode: str = "greedy",
                 render: int = 0, eval_seed: int = 0, say: Callable[[str], None] = print) -> dict:
    """Evaluates checkpoint ``checkpoint`` (default the latest) of the run in ``run_dir`` and returns what it wrote
    to eval.json. Every refusal (no such folder or checkpoint, a checkpoint of another config, bad counts) is a
    ValueError raised before anything compiles."""
    run_dir = Path(run_dir)
    for name, value, low in (("episodes", episodes, 1), ("render", render, 0), ("eval_seed", eval_seed, 0)):
        if value < low:
            raise ValueError(f"{name}={value} is invalid: allowed is an integer >= {low}")
    check_mode(mode)
    cfg = recording.read_run_config(run_dir, "run_dir")
    manager = checkpoints.open_manager(run_dir, read_only=True)
    try:
        available = checkpoints.steps(manager)
        if not available:
            raise ValueError(f"run_dir={str(run_dir)!r} holds no checkpoints: train (or resume) it first")
        step = available[-1] if checkpoint is None else checkpoint
        checkpoints.check_meta_config(checkpoints.read_meta(manager, step), cfg.to_dict(), step)
        trainer = make_trainer(cfg)
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
        state = checkpoints.restore_state(manager, step, jax.eval_shape(jax.vmap(trainer.init), keys))
    finally:
        manager.close()
    key = jax.random.PRNGKey(eval_seed)
    result = summarise(make_evaluator(trainer.env, trainer.agents, episodes, mode)(state.actor.params, key), mode,
                       step, eval_seed)
    recording.atomic_write_text(run_dir / EVAL_FILE, json.dumps(result, indent=2) + "\n")
    say(f"checkpoint {step}/{cfg.num_updates} updates, {mode}, {episodes} episodes x {cfg.num_seeds} seeds")
    for metric, label in (("team_return", "team return"), ("win_rate", "win rate")):
        if metric in result["metrics"]:
            m = result["metrics"][metric]
            say(f"{label} (95% CI over seeds): {recording.format_mean_ci(m['mean'], m['ci95'] or float('nan'))}")
    say(f"wrote {run_dir / EVAL_FILE}")
    if render:
        seed0 = jax.tree.map(lambda x: x[0], state.actor.params)
        rec = record_episodes(trainer.env, trainer.agents, seed0, jax.random.fold_in(key, RENDER_KEY), render, mode)
        path = write_gif(run_dir / f"episodes-{step}-{mode}.gif", draw_frames(trainer.env, rec))
        say(f"wrote {path} ({render} episodes of seed 0)")
    return result
