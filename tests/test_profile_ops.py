"""experiments/profile_ops.py: operations labelled by stage and kind, exclusive times of nested trace events, and
one tiny traced update end to end."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import pytest

TINY = dict(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=2, actor_hidden=(8,), critic_hidden=(8,),
            algo="ippo")
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.fixture(scope="module")
def profile_ops():
    return importlib.import_module("experiments.profile_ops")


def test_matmuls_of_a_dense_layers_gradient_are_told_apart(profile_ops):
    # loss = sum(tanh(x @ w)): one forward matmul; its gradient needs x^T g (a contraction over the batch rows,
    # for w: a [6, 4] result) and g w^T (for x).
    def loss(w, x):
        with jax.named_scope("ppo_epochs"):
            return jnp.tanh(x @ w).sum()

    w, x = jnp.ones((6, 4)), jnp.ones((32, 6))
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w, x).compile().as_text()
    classes = profile_ops.classify(hlo, profile_ops.kernel_shapes({"w": w}))
    dots = sorted(kind for stage, kind in classes.values() if kind.endswith("matmul"))
    assert dots == ["other matmul", "other matmul", "weight-gradient matmul"]
    assert {stage for stage, kind in classes.values() if kind.endswith("matmul")} == {"ppo_epochs"}


def test_an_instruction_without_a_scope_takes_its_callers_stage(profile_ops):
    hlo = "\n".join([
        "%body (p: f32[2]) -> f32[2] {",
        "  %copy.1 = f32[2]{0} copy(f32[2]{0} %p)",
        "}",
        "ENTRY %main (a: f32[2]) -> f32[2] {",
        '  ROOT %while.7 = f32[2]{0} while(f32[2]{0} %a), condition=%cond, body=%body, '
        'metadata={op_name="jit(f)/rollout/while"}',
        "}",
    ])
    assert profile_ops.classify(hlo, set()) == {"copy.1": ("rollout", "copy"), "while.7": ("rollout", "loop control")}


def test_nested_events_count_only_their_own_time(profile_ops):
    events = [
        dict(name="while.1", ts=0, dur=100), dict(name="dot.1", ts=10, dur=20),
        dict(name="fusion.1", ts=40, dur=20), dict(name="copy.1", ts=45, dur=5), dict(name="dot.2", ts=100, dur=7),
    ]
    assert dict(profile_ops._exclusive(events)) == {"while.1": 60.0, "dot.1": 20.0, "fusion.1": 15.0,
                                                    "copy.1": 5.0, "dot.2": 7.0}


def test_tiny_traced_update_fills_the_stages(profile_ops):
    cells, wall_ms = profile_ops.profile(TINY, seeds=1, calls=2, options=FAST_COMPILE)
    assert wall_ms > 0 and sum(cells.values()) > 0
    stages = {stage for stage, _ in cells}
    assert {"rollout", "critic_estimates", "ppo_epochs"} <= stages
    assert cells.get(("ppo_epochs", "weight-gradient matmul"), 0.0) > 0
    assert cells.get(("rollout", "weight-gradient matmul"), 0.0) == 0.0  # acting differentiates nothing
    table = profile_ops.format_table(cells, wall_ms).splitlines()
    assert table[0].startswith("| stage |") and table[-3].startswith("| **all** |")
