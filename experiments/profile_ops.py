"""Where one training update's time goes, operation by operation: a ``jax.profiler`` trace of the compiled update.

``profile_step.py`` splits an update by ablation (whole programs timed against each other). This script looks
inside one program instead: it traces a few calls of the jitted, seed-vmapped update (``Trainer.run_updates``, as
a run calls it) and sums the time of every compiled operation, labelled two ways from the optimised HLO:

- stage: the ``jax.named_scope`` that ``train_step`` wraps around each stage (rollout, critic_estimates,
  pg_spread, ppo_epochs, metrics), read from the operation's ``op_name`` metadata (``.../ppo_epochs/...``, or
  ``transpose(jvp(ppo_epochs))`` where the scope sits inside a differentiated function);
- kind: a weight-gradient matmul (its result has a weight matrix's shape: it contracts over the batch rows),
  another matmul (forward passes and input gradients; at one seed XLA strips the metadata that would tell them
  apart), sorting and gathering (the minibatch shuffle, the K samples), copies (most of them XLA's copies of a loop's
  carried state), loop control (while, conditional), and the remaining fused elementwise and reduction kernels.

Operations of one program can run concurrently on XLA:CPU's thread pool, so shares are of the summed operation
time, and the wall time per update is given beside them. Tracing costs a little per operation, so a stage made of
many small operations (the rollout: every environment step is a few dozen) reads slower here than it runs;
``profile_step.py`` times the stages untraced, and this table says what kind of work fills each.

    python experiments/profile_ops.py --preset jaxmarl --algo ippo --seeds 8
    python experiments/profile_ops.py --preset jaxmarl --algo perla_mappo --k 16 --seeds 8 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import gzip
import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python experiments/profile_ops.py`: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import sections  # noqa: E402
from experiments.bench import machine_info  # noqa: E402

STAGES = ("rollout", "critic_estimates", "pg_spread", "ppo_epochs", "metrics")
WEIGHT_GRADIENT, OTHER_MATMUL = "weight-gradient matmul", "other matmul"
KINDS = (WEIGHT_GRADIENT, OTHER_MATMUL, "sort / gather", "copy", "loop control", "fused elementwise / reduce")
OTHER_STAGE = "other"
EXECUTOR = "ThunkExecutor::Execute"  # the runtime's event around each (nested) sequence of operations
SECTION = "profile-ops"
# `%name (params) -> type {`: the start of a computation (a loop body, a fused kernel, the entry).
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
# The computations an instruction calls: a loop's body and condition, a fusion's or a call's computation.
_CALLED = re.compile(r"(?:condition|body|calls|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
# `%name = type opcode(`: the instruction's name, result type and opcode in optimised HLO text.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([\w\-]+)\(")


def kernel_shapes(params: Any) -> set[tuple[int, ...]]:
    """The sorted dims (size-1 dims dropped) of the last two axes of every weight matrix in a parameter tree."""
    import jax

    return {_matrix_key(leaf.shape[-2:]) for leaf in jax.tree.leaves(params) if len(leaf.shape) >= 2}


def _matrix_key(dims) -> tuple[int, ...]:
    return tuple(sorted(int(d) for d in dims if int(d) != 1))


def classify(hlo_text: str, kernels: set[tuple[int, ...]]) -> dict[str, tuple[str, str]]:
    """Optimised HLO text -> ``{instruction name: (stage, kind)}`` for every instruction that can appear as an
    operation in a CPU trace; ``kernels`` (``kernel_shapes``) tells a weight gradient by its result's shape.

    An instruction without a stage of its own takes the stage of the instruction whose computation it sits in
    (XLA's copies of a loop's carry, and at small sizes even matmuls, lose their ``op_name``); a fusion that
    computes a matmul (XLA fuses small ones with their neighbours) is that matmul."""
    stages, kinds, home, caller, called_by, matmul_in = {}, {}, {}, {}, {}, {}
    computation = None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header is not None:
            computation = header.group(1)
            continue
        m = _INSTRUCTION.match(line)
        if m is None:
            continue
        name, result, opcode = m.groups()
        op_name = re.search(r'op_name="([^"]*)"', line)
        scope = op_name.group(1) if op_name else ""
        stages[name] = next((s for s in STAGES if re.search(rf"(^|[/(]){s}($|[/)])", scope)), None)
        kinds[name] = _kind(name, opcode, result, line, kernels)
        home[name] = computation
        if opcode == "dot":
            matmul_in.setdefault(computation, kinds[name])
        called_by[name] = _CALLED.findall(line)
        for called in called_by[name]:
            caller.setdefault(called, name)
    for name, called in called_by.items():
        fused = [matmul_in[c] for c in called if c in matmul_in]
        if fused and kinds[name] != "loop control":
            kinds[name] = fused[0]

    def stage_of(name: str, depth: int = 0) -> str:
        if stages[name] is not None or depth > 64:
            return stages[name] or OTHER_STAGE
        parent = caller.get(home[name])
        return OTHER_STAGE if parent is None else stage_of(parent, depth + 1)

    return {name: (stage_of(name), kinds[name]) for name in stages}


def _kind(name: str, opcode: str, result: str, line: str, kernels: set[tuple[int, ...]]) -> str:
    """One of ``KINDS``. A matmul whose result, less its batch dims (seeds, or environments in the policy-gradient
    spread), has a weight matrix's shape is a weight gradient: it contracts over the batch's rows. A fusion is
    named by XLA after its root (``wrapped_copy``, ``copy_bitcast_fusion`` for a transpose, ``wrapped_gather``)."""
    if opcode == "dot":
        dims = re.match(r"\w+\[([\d,]*)\]", result)
        shape = [int(d) for d in dims.group(1).split(",") if d] if dims else []
        batch = re.search(r"lhs_batch_dims=\{([\d,]*)\}", line)
        num_batch = len([d for d in batch.group(1).split(",") if d]) if batch else 0
        key = _matrix_key(shape[num_batch:])
        return WEIGHT_GRADIENT if len(key) >= 1 and key in kernels else OTHER_MATMUL
    what = name if opcode == "fusion" else opcode
    if any(word in what for word in ("sort", "gather", "scatter")):
        return "sort / gather"
    if opcode in ("while", "conditional", "call"):
        return "loop control"
    if what.startswith(("copy", "wrapped_copy", "transpose", "wrapped_transpose")):
        return "copy"
    return "fused elementwise / reduce"


def operation_times(trace_dir: str, names: set[str]) -> dict[str, float]:
    """Exclusive microseconds per operation name over the perfetto trace in ``trace_dir``: a loop's or a
    call's event spans its body's events on the same thread, so each event's time is its duration less its
    children's (the thunk executor's own events nest too and take their share away from the parent)."""
    files = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not files:
        raise RuntimeError(f"no perfetto_trace.json.gz under {trace_dir}: did jax.profiler write a trace?")
    with gzip.open(max(files, key=os.path.getmtime)) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and (e.get("name") in names or e.get("name") == EXECUTOR):
            by_thread[e.get("tid")].append(e)
    totals = collections.Counter()
    for thread in by_thread.values():
        for name, us in _exclusive(thread):
            if name in names:
                totals[name] += us
    return dict(totals)


def _exclusive(events: list[dict]) -> list[tuple[str, float]]:
    """(name, duration less the durations of the events directly nested in it) for one thread's events."""
    events = sorted(events, key=lambda e: (float(e["ts"]), -float(e.get("dur", 0.0))))
    own = [float(e.get("dur", 0.0)) for e in events]
    stack: list[int] = []
    for i, e in enumerate(events):
        start = float(e["ts"])
        while stack and float(events[stack[-1]]["ts"]) + float(events[stack[-1]].get("dur", 0.0)) <= start:
            stack.pop()
        if stack:
            own[stack[-1]] -= float(e.get("dur", 0.0))
        stack.append(i)
    return [(e["name"], max(t, 0.0)) for e, t in zip(events, own)]


def breakdown(classes: dict[str, tuple[str, str]], times: dict[str, float], calls: int) -> dict:
    """``{(stage, kind): ms per call}`` from ``classify`` and ``operation_times`` (``format_table`` adds the totals)."""
    cells = collections.Counter()
    for name, us in times.items():
        cells[classes[name]] += us / 1000.0 / calls
    return dict(cells)


def profile(cfg_fields: dict, seeds: int, calls: int, options: dict | None = None) -> tuple[dict, float]:
    """(``breakdown`` of one update of ``Config.from_dict(cfg_fields)`` at ``seeds`` vmapped seeds, median wall ms
    per update over ``calls`` traced calls); ``options`` are XLA compiler options (the tests compile faster)."""
    import jax

    from perla_jax import Config, make_trainer

    cfg = Config.from_dict(cfg_fields)
    trainer = make_trainer(cfg)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), seeds)
    state = jax.jit(jax.vmap(trainer.init))(keys)
    lowered = jax.jit(jax.vmap(lambda s: trainer.run_updates(s, 1))).lower(state)
    compiled = lowered.compile(options)
    state = jax.block_until_ready(compiled(state))[0]  # warm-up
    walls = []
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        try:
            for _ in range(calls):
                t0 = time.perf_counter()
                state = jax.block_until_ready(compiled(state))[0]
                walls.append(1000 * (time.perf_counter() - t0))
        finally:
            jax.profiler.stop_trace()
        params = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
        classes = classify(compiled.as_text(), kernel_shapes((params.actor.params, params.critic.params)))
        times = operation_times(trace_dir, set(classes))
    return breakdown(classes, times, calls), sorted(walls)[len(walls) // 2]


def format_table(cells: dict, wall_ms: float) -> str:
    """Stages as rows, kinds as columns, ms per update; the last column and row are totals."""
    stages = [s for s in (*STAGES, OTHER_STAGE) if any(k[0] == s for k in cells)]
    kinds = [k for k in KINDS if any(c[1] == k for c in cells)]
    total = sum(cells.values())
    lines = ["| stage | " + " | ".join(kinds) + " | total | share |", "|" + "---|" * (len(kinds) + 3)]
    for s in stages:
        row = sum(v for (st, _), v in cells.items() if st == s)
        lines.append(f"| {s} | " + " | ".join(f"{cells.get((s, k), 0.0):.1f}" for k in kinds)
                     + f" | {row:.1f} | {row / total:.0%} |")
    col = {k: sum(v for (_, kk), v in cells.items() if kk == k) for k in kinds}
    lines.append("| **all** | " + " | ".join(f"{col[k]:.1f} ({col[k] / total:.0%})" for k in kinds)
                 + f" | {total:.1f} | 100% |")
    lines.append("")
    lines.append(f"Operation time summed: {total:.0f} ms per update; wall time per update: {wall_ms:.0f} ms "
                 "(median of the traced calls; the profiler itself adds some).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="mappo")
    p.add_argument("--k", type=int, default=None, help="K of a perla_* algo (its default if absent)")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--calls", type=int, default=5, help="traced calls, one update each")
    p.add_argument("--config", type=json.loads, default={}, help="Config fields (JSON)")
    p.add_argument("--preset", default=None, help="a --preset's settings (e.g. jaxmarl) under --config's fields")
    p.add_argument("--write", help="markdown file whose section --section gets the table")
    p.add_argument("--section", default=SECTION)
    args = p.parse_args(argv)
    fields = dict(args.config, algo=args.algo, **({} if args.k is None else {"k": args.k}))
    if args.preset is not None:
        from perla_jax.presets import preset_config

        fields = preset_config(args.preset, fields).to_dict()
    cells, wall = profile(fields, args.seeds, args.calls)
    table = format_table(cells, wall)
    print(table)
    if args.write:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = shlex.join(["python", "experiments/profile_ops.py"] + (sys.argv[1:] if argv is None else argv))
        body = "\n".join([table, "", f"Command: `{command}`  ", f"Date: {now}  ", f"Machine: {machine_info()}"])
        sections.write_marked_section(args.write, args.section, body)


if __name__ == "__main__":
    main()
