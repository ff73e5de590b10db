"""GIFs of MPE and SMAX episodes: entities drawn as circles with matplotlib's Agg canvas, written with pillow.

jaxmarl's visualisers draw through pyplot (global figure state, prints to stdout) and save through matplotlib's
animation writers; SMAX's also replays every internal world tick un-jitted. Drawing here, one frame per
environment step on a bare ``Figure``, needs no display and no pyplot state. MPE: agents and landmarks in
jaxmarl's colours. SMAX: allies blue, enemies red, living units only, sized by unit type, on the map.
"""

from __future__ import annotations

from pathlib import Path

import chex
import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from PIL import Image

from perla_jax.agents import Agents
from perla_jax.envs.base import MultiAgentEnv
from perla_jax.evaluation import check_mode, play_episode

FRAME_MS = 100  # display time of one environment step


@chex.dataclass(frozen=True)
class Recording:
    """Recorded episodes of one seed, ``[n, T, ...]``; ``live`` marks the steps of each episode."""

    positions: chex.Array  # [n, T, U, 2] positions of the drawn entities (units), before each step
    visible: chex.Array  # [n, T, U] entities drawn at that step (SMAX: units alive)
    live: chex.Array  # [n, T]
    team_return: chex.Array  # [n]


def _is_smax(env: MultiAgentEnv) -> bool:
    return getattr(env, "reports_wins", False)


def _entities(env: MultiAgentEnv, inner) -> tuple[chex.Array, chex.Array]:
    """(positions ``[..., U, 2]``, visible ``[..., U]``) of recorded jaxmarl states."""
    if _is_smax(env):
        world = inner.state  # HeuristicEnemySMAX wraps the SMAX state
        return world.unit_positions, world.unit_alive
    return inner.p_pos, jax.numpy.ones(inner.p_pos.shape[:-1], bool)


def _style(env: MultiAgentEnv, recording: Recording) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Radii ``[U]``, RGB colours ``[U, 3]`` and axis limits (x0, x1, y0, y1)."""
    if _is_smax(env):
        smax = env.env._env  # the SMAX simulator inside HeuristicEnemySMAX
        allies = np.arange(smax.num_allies + smax.num_enemies) < smax.num_allies
        colours = np.where(allies[:, None], [[0.15, 0.35, 0.85]], [[0.85, 0.2, 0.2]])
        types = np.asarray(env.env.reset(jax.random.PRNGKey(0))[1].state.unit_types)
        radii = np.asarray(smax.unit_type_radiuses)[types]
        return radii, colours, (0.0, float(smax.map_width), 0.0, float(smax.map_height))
    if not hasattr(env.env, "rad") or not hasattr(env.env, "colour"):
        raise ValueError(f"env={env.name!r} cannot be rendered: allowed are the MPE scenarios and SMAX")
    radii, colours = np.asarray(env.env.rad), np.asarray(env.env.colour, dtype=np.float64) / 255.0
    # jaxmarl's visualiser shows [-2, 2]^2; a policy that walks away (greedy, barely trained) leaves it,
    # so the square grows to hold every recorded position.
    shown = recording.positions[recording.live.astype(bool)]
    limit = max(2.0, float(np.abs(shown).max() + radii.max()) * 1.05)
    return radii, colours, (-limit, limit, -limit, limit)


def record_episodes(
    env: MultiAgentEnv, agents: Agents, actor_params: chex.ArrayTree, key: chex.PRNGKey, num_episodes: int, mode: str
) -> Recording:
    """Plays ``num_episodes`` episodes with one seed's actor (no seed axis) and keeps the entities' positions."""
    check_mode(mode)
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"render={num_episodes!r} is invalid: allowed is an integer >= 1")
    if not _is_smax(env) and not (hasattr(env.env, "rad") and hasattr(env.env, "colour")):
        raise ValueError(f"env={env.name!r} cannot be rendered: allowed are the MPE scenarios and SMAX")
    horizon, greedy = env.horizon, mode == "greedy"

    @jax.jit
    def play(keys):
        def one(k):
            episodes, states, live = play_episode(env, agents, actor_params, k, greedy, horizon, record=True)
            return (episodes.team_return, *_entities(env, states), live)

        return jax.vmap(one)(keys)

    team_return, positions, visible, live = play(jax.random.split(key, num_episodes))
    return Recording(
        positions=np.asarray(positions), visible=np.asarray(visible), live=np.asarray(live),
        team_return=np.asarray(team_return),
    )


def draw_frames(env: MultiAgentEnv, recording: Recording, size_px: int = 320) -> list[np.ndarray]:
    """One RGB frame ``[H, W, 3]`` (uint8) per live step of every episode, in order."""

    dpi = 80
    fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    radii, colours, (x0, x1, y0, y1) = _style(env, recording)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    circles = [ax.add_patch(Circle((0.0, 0.0), float(r), color=c)) for r, c in zip(radii, colours)]
    label = ax.text(x0 + 0.025 * (x1 - x0), y1 - 0.025 * (y1 - y0), "", va="top", family="monospace")
    frames = []
    num_episodes = recording.positions.shape[0]
    for e in range(num_episodes):
        for t in np.flatnonzero(recording.live[e]):
            for circle, xy, shown in zip(circles, recording.positions[e, t], recording.visible[e, t]):
                circle.center = (float(xy[0]), float(xy[1]))
                circle.set_visible(bool(shown))
            label.set_text(f"episode {e + 1}/{num_episodes}  step {t}")
            canvas.draw()
            frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return frames


def write_gif(path: str | Path, frames: list[np.ndarray], frame_ms: int = FRAME_MS) -> Path:
    """Writes ``frames`` as a looping GIF at ``path`` (through a temporary file, so a reader never sees
    half a GIF) and returns the path."""

    if len(frames) < 1:
        raise ValueError("no frames to write")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    tmp.replace(path)
    return path
