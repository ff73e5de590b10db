"""GIFs of MPE episodes: the entities' positions drawn with matplotlib's Agg canvas, written with pillow.

jaxmarl's ``MPEVisualizer`` draws through pyplot (global figure state, prints to stdout) and saves through
matplotlib's animation writers; drawing here on a bare ``Figure`` needs no display and no pyplot state.
"""

from __future__ import annotations

from pathlib import Path

import chex
import jax
import numpy as np

from perla_jax.agents import Agents
from perla_jax.envs import MultiAgentEnv
from perla_jax.evaluation import check_mode, episode_horizon, play_episode

FRAME_MS = 100  # display time of one environment step


@chex.dataclass(frozen=True)
class Recording:
    """Recorded episodes of one seed, ``[n, T, ...]``; ``live`` marks the steps of each episode."""

    positions: chex.Array  # [n, T, entities, 2] positions of agents then landmarks, before each step
    live: chex.Array  # [n, T]
    team_return: chex.Array  # [n]


def record_episodes(
    env: MultiAgentEnv, agents: Agents, actor_params: chex.ArrayTree, key: chex.PRNGKey, num_episodes: int, mode: str
) -> Recording:
    """Plays ``num_episodes`` episodes with one seed's actor (no seed axis) and keeps the positions."""
    check_mode(mode)
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"render={num_episodes!r} is invalid: allowed is an integer >= 1")
    horizon, greedy = episode_horizon(env), mode == "greedy"

    @jax.jit
    def play(keys):
        def one(k):
            episodes, states, live = play_episode(env, agents, actor_params, k, greedy, horizon, record=True)
            return episodes.team_return, states.p_pos, live

        return jax.vmap(one)(keys)

    if not hasattr(env.env, "rad") or not hasattr(env.env, "colour"):
        raise ValueError(f"env={env.name!r} cannot be rendered: allowed are the MPE scenarios")
    team_return, positions, live = play(jax.random.split(key, num_episodes))
    return Recording(positions=np.asarray(positions), live=np.asarray(live), team_return=np.asarray(team_return))


def draw_frames(env: MultiAgentEnv, recording: Recording, size_px: int = 320) -> list[np.ndarray]:
    """One RGB frame ``[H, W, 3]`` (uint8) per live step of every episode, in order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    dpi = 80
    fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    radii, colours = np.asarray(env.env.rad), np.asarray(env.env.colour, dtype=np.float64) / 255.0
    # jaxmarl's visualiser shows [-2, 2]^2; a policy that walks away (greedy, barely trained) leaves it,
    # so the square grows to hold every recorded position.
    shown = recording.positions[recording.live.astype(bool)]
    limit = max(2.0, float(np.abs(shown).max() + radii.max()) * 1.05)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    circles = [ax.add_patch(Circle((0.0, 0.0), float(r), color=c)) for r, c in zip(radii, colours)]
    label = ax.text(-limit + 0.05, limit - 0.05, "", va="top", family="monospace")
    frames = []
    num_episodes = recording.positions.shape[0]
    for e in range(num_episodes):
        for t in np.flatnonzero(recording.live[e]):
            for circle, xy in zip(circles, recording.positions[e, t]):
                circle.center = (float(xy[0]), float(xy[1]))
            label.set_text(f"episode {e + 1}/{num_episodes}  step {t}")
            canvas.draw()
            frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return frames


def write_gif(path: str | Path, frames: list[np.ndarray], frame_ms: int = FRAME_MS) -> Path:
    """Writes ``frames`` as a looping GIF at ``path`` (through a temporary file, so a reader never sees
    half a GIF) and returns the path."""
    from PIL import Image

    if len(frames) < 1:
        raise ValueError("no frames to write")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    tmp.replace(path)
    return path
