"""Helpers shared by test modules: loading the experiments scripts as modules, and one compiled program that
rolls out a fresh policy, estimates its critic values and trains a few updates."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import jax

from perla_jax.rollout import rollout

ROOT = Path(__file__).resolve().parents[1]


def load_script(module_name: str, relative_path: str):
    """``experiments/run.py`` and friends as modules (they are scripts, not part of the package)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rollout_estimate_train(trainer, updates: int, extra: Callable[[Any, Any], Any]):
    """``program(key) -> (traj, estimates, extra(state, traj), metrics)``, jitted: a rollout of the initial
    policy, the critic's estimates on it, and ``updates`` training updates from the same initial state."""

    @jax.jit
    def program(key):
        k_init, k_roll, k_est = jax.random.split(key, 3)
        state = trainer.init(k_init)
        _, _, traj, *_ = rollout(trainer.env, trainer.agents, state.actor.params, state.env_state, state.obs, k_roll,
                                 trainer.cfg.num_steps)
        est = trainer.critic.estimate(state.actor.params, state.critic.params, traj, k_est)
        _, metrics = trainer.run_updates(state, updates)
        return traj, est, extra(state, traj), metrics

    return program
