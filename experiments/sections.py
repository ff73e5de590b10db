"""Marked sections of a markdown file (BENCHMARKS.md) that a script rewrites in place, leaving the rest as it
is: ``<!-- name:start -->`` ... ``<!-- name:end -->``. Plain text, so a benchmark's parent process imports no jax."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_marked_section(text: str, name: str) -> str | None:
    """The body of section ``name`` in ``text`` (stripped), or None when its markers are absent."""
    start, end = markers(name)
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    return text[i + len(start) : j].strip() if i >= 0 and j >= 0 else None


def replace_marked_section(text: str, name: str, body: str) -> str:
    """``text`` with the part between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced by ``body``;
    the marked block is appended when the markers are absent. Text outside the markers is kept."""
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        return (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    return text[:i] + block + text[j + len(end) :]


def write_marked_section(path: str | Path, name: str, body: str, title: str = "# Benchmarks") -> None:
    """Replaces section ``name`` of the markdown file at ``path``, creating the file (with ``title``) if needed."""
    path = Path(path)
    text = path.read_text() if path.exists() else title + "\n"
    path.write_text(replace_marked_section(text, name, body))
