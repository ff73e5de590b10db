"""Checkpoints of a training run (orbax) and the consistency checks a resume needs.

A run folder holds ``checkpoints/<updates_done>/`` directories written by orbax's CheckpointManager, which
writes each one under a temporary name and renames it when complete, so a run killed mid-save leaves the
previous checkpoints intact. Each checkpoint has two items:

``state``  the vmapped ``RunnerState`` (``[S, ...]``: parameters, optimiser states, env states, observations,
           PRNG keys, update counter), saved with ``StandardSave``;
``meta``   JSON: ``config`` (``Config.to_dict()``), ``updates_done``, ``num_updates``, ``chunk_size``.

``RunnerState`` holds ``TrainState``s whose optimiser and apply function are static pytree metadata, so a
restore needs a target with the right structure: ``jax.eval_shape`` of the (jitted, vmapped) init gives one
without compiling anything.

The training loop appends metrics.csv *before* saving the checkpoint of the same chunk, so after a crash the
CSV may hold rows beyond the latest checkpoint (never fewer); ``reconcile_metrics`` drops them on resume.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Mapping

import chex
import jax
import orbax.checkpoint as ocp

from perla_jax.config import Config
from perla_jax.outputs.recording import COLUMNS, atomic_write_text

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "meta")
# RunnerState fields renamed after checkpoints with the old names were written (new name -> old name); a restore
# that finds the old names reads them into the new ones.
RENAMED_STATE_FIELDS = {"actor_carry": "actor_hidden", "critic_carry": "critic_hidden"}


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / CHECKPOINT_DIR


def open_manager(
    run_dir: str | Path, keep_last: int = 2, keep_every: int | None = None, read_only: bool = False
) -> ocp.CheckpointManager:
    """The CheckpointManager of ``run_dir/checkpoints``. It keeps the ``keep_last`` newest checkpoints plus,
    when ``keep_every`` is given, every one whose update count is a multiple of it. Saves are synchronous:
    a checkpoint is complete on disk when ``save`` returns, which is what makes stopping on a signal safe.
    With ``read_only`` the manager creates no folder and removes nothing (for resume checks and evaluation;
    do not save through it)."""
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last={keep_last!r} is invalid: allowed is an integer >= 1")
    if keep_every is not None and (isinstance(keep_every, bool) or not isinstance(keep_every, int) or keep_every < 1):
        raise ValueError(f"keep_every={keep_every!r} is invalid: allowed is None or an integer >= 1")
    # ``read_only`` here means: create nothing, delete nothing (orbax's own read_only option only logs
    # warnings about the options it overrides).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep_last,
        keep_period=keep_every,
        create=not read_only,
        enable_async_checkpointing=False,
        # Removes half-written checkpoints left by a run killed mid-save.
        cleanup_tmp_directories=not read_only,
    )
    return ocp.CheckpointManager(checkpoint_dir(run_dir), options=options, item_names=ITEMS)


def save(manager: ocp.CheckpointManager, state: Any, meta: Mapping[str, Any]) -> None:
    """Saves ``state`` and ``meta`` as checkpoint ``meta["updates_done"]`` and waits until it is on disk."""
    step = int(meta["updates_done"])
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta)))
    manager.save(step, args=args, force=True)
    manager.wait_until_finished()


def steps(manager: ocp.CheckpointManager) -> list[int]:
    """Update counts of the complete checkpoints, ascending."""
    return sorted(manager.all_steps())


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    """The update count of the newest complete checkpoint, or None when there is none."""
    return manager.latest_step()


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    """The JSON ``meta`` item of checkpoint ``step`` (cheap: the state arrays are not read)."""
    available = steps(manager)
    if step not in available:
        raise ValueError(f"checkpoint={step!r} does not exist: allowed are {available or 'none (no checkpoints)'}")
    restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])


def restore_state(manager: ocp.CheckpointManager, step: int, target: Any,
                  sharding: jax.sharding.Sharding | None = None) -> Any:
    """The ``state`` item of checkpoint ``step``, with the pytree structure (and static metadata) of
    ``target``, e.g. ``jax.eval_shape(init, keys)``, placed with ``sharding`` (default: the first local device).

    The placement is always given, never read from the checkpoint: orbax would otherwise restore onto the
    devices that saved it, and refuse ("Topology mismatch") a run saved on a GPU, or on several devices, that is
    resumed or evaluated on this machine's CPU or on another number of devices."""
    placement = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    placed = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=placement), target)
    try:
        return _restore(manager, step, placed)
    except ValueError as err:
        if not any(f"{new}:" in str(err) for new in RENAMED_STATE_FIELDS):
            raise
    renamed = {RENAMED_STATE_FIELDS.get(name, name): value for name, value in _fields(placed).items()}
    restored = _restore(manager, step, _under_old_names(type(placed))(**renamed))
    old_names = {old: new for new, old in RENAMED_STATE_FIELDS.items()}
    return type(placed)(**{old_names.get(name, name): value for name, value in _fields(restored).items()})


def _restore(manager: ocp.CheckpointManager, step: int, placed: Any) -> Any:
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(placed)))["state"]


def _fields(state: Any) -> dict[str, Any]:
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def _under_old_names(cls: type) -> type:
    """A pytree dataclass like ``cls`` whose renamed fields carry their old names (``RENAMED_STATE_FIELDS``)."""
    fields = [(RENAMED_STATE_FIELDS.get(f.name, f.name), Any, dataclasses.field(default=f.default))
              for f in dataclasses.fields(cls)]
    return chex.dataclass(dataclasses.make_dataclass(f"{cls.__name__}UnderOldNames", fields))


def config_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """``["k: 2 != 16", ...]`` for every field whose values differ (a field missing on one side counts).
    Values are compared after a JSON round trip, so a tuple equals the list JSON turns it into."""
    a, b = _json_normal(expected), _json_normal(found)
    missing = object()
    return [
        f"{name}: {a.get(name, '<absent>')!r} != {b.get(name, '<absent>')!r}"
        for name in sorted(set(a) | set(b))
        if a.get(name, missing) != b.get(name, missing)
    ]


def check_meta_config(meta: Mapping[str, Any], config: Mapping[str, Any], step: int) -> None:
    """Raises ValueError naming the fields where checkpoint ``step``'s stored config differs from ``config``
    (the run folder's config.json)."""
    diff = config_differences(config, Config.from_dict(meta.get("config", {})).to_dict())
    if diff:
        raise ValueError(
            f"checkpoint {step} was saved with a different config than config.json "
            f"(config.json != checkpoint): {'; '.join(diff)}"
        )


def _json_normal(values: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(values), sort_keys=True))


def reconcile_metrics(path: str | Path, updates_done: int, num_seeds: int) -> int:
    """Makes the metrics CSV at ``path`` hold exactly the rows of updates ``1..updates_done`` for every seed,
    dropping later rows (and a row cut short by a kill mid-write); returns the number of rows dropped.

    Raises ValueError if a row the checkpoint covers is missing or duplicated: then the CSV and the
    checkpoints do not belong together and resuming would leave a gap. The file is rewritten atomically
    (temporary file and ``os.replace``), so a kill during the rewrite keeps the old file.
    """
    path = Path(path)
    if not path.exists():
        if updates_done:
            raise ValueError(f"{path} is missing but checkpoint {updates_done} covers {updates_done} updates")
        return 0
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if updates_done == 0:
        # Nothing to keep (the header may even be cut short); appending to an empty file writes a new header.
        if path.stat().st_size:
            atomic_write_text(path, "")
        return max(len(rows) - 1, 0)
    if rows and tuple(rows[0]) != COLUMNS:
        raise ValueError(f"{path} has columns {rows[0]}, expected {list(COLUMNS)}")
    body = rows[1:]
    # A row with every column has a complete ``update`` field (a comma follows it); only a row of the
    # chunk being written when the run died can be cut short, and that chunk is beyond the checkpoint.
    kept = [r for r in body if len(r) == len(COLUMNS) and int(r[1]) <= updates_done]
    found = sorted((int(r[0]), int(r[1])) for r in kept)
    expected = [(s, u) for s in range(num_seeds) for u in range(1, updates_done + 1)]
    if found != expected:
        raise ValueError(
            f"{path} does not match checkpoint {updates_done}: expected one row per seed (0..{num_seeds - 1}) "
            f"and update (1..{updates_done}), found {len(found)} rows ({len(expected)} expected)"
        )
    dropped = len(body) - len(kept)
    if dropped:
        _atomic_write_csv(path, [list(COLUMNS), *kept])
    return dropped


def _atomic_write_csv(path: Path, rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    atomic_write_text(path, buffer.getvalue())
