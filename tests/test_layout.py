"""The package's shape: no import circle, no function-local import (but of optional dependencies), and every
registered name (algorithm, advantage estimator, environment) reachable from Config and the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from perla_jax import ADVANTAGE_ESTIMATORS, ALGO_SPECS, Config
from perla_jax.cli import config_from_args
from perla_jax.command import build_train_parser
from perla_jax.envs.registry import FAMILIES

PACKAGE = Path(__file__).resolve().parents[1] / "perla_jax"
# Imported inside functions on purpose: optional extras that a plain install lacks.
OPTIONAL = {"brax", "wandb", "tensorboardX", "rliable"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(perla_jax modules imported at module level, (line, module) of imports inside functions or classes)."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []
    # Module level includes the bodies of top-level try/if/with blocks; a def or class starts a nested scope.
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
    inside = {id(n) for scope in ast.walk(tree) if isinstance(scope, scopes) for n in ast.walk(scope)}
    top_level = {id(n) for n in ast.walk(tree) if id(n) not in inside}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # ``from pkg import sub`` imports the submodule pkg.sub where one exists.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names]
        else:
            continue
        if id(node) in top_level:
            top.update(n for n in names if n.split(".")[0] == "perla_jax")
        else:
            nested.extend((node.lineno, n) for n in names)
    return top, nested


def test_no_function_local_imports_but_optional_dependencies():
    found = [
        f"{name}:{line} imports {mod}"
        for name, path in MODULES.items()
        for line, mod in _imports(path)[1]
        if mod.split(".")[0] not in OPTIONAL
    ]
    assert not found, found


def test_import_graph_has_no_circle():
    graph = {name: _imports(path)[0] for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # The check sees the graph it should: the trainer depends on the critics, the critics on the agents.
    assert "perla_jax.critics" in graph["perla_jax.train"] and "perla_jax.agents" in graph["perla_jax.critics.discrete_q"]


def _parse_cli(argv: list[str]) -> Config:
    return config_from_args(build_train_parser().parse_args(argv))


def _env_names() -> list[tuple[str, str]]:
    names = []
    for family in FAMILIES:
        map_name = family.maps()[0] if family.maps is not None else ""
        names += [(name, map_name) for name in (*family.envs, *family.aliases)]
    return names


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_every_advantage_estimator_reaches_config_and_cli(name):
    assert Config(advantage=name).advantage == name
    assert _parse_cli(["--advantage", name]).advantage == name


@pytest.mark.parametrize("name", sorted(ALGO_SPECS))
def test_every_algorithm_reaches_config_and_cli(name):
    cfg = Config(algo=name)
    assert cfg.algo_spec is ALGO_SPECS[name]
    assert _parse_cli(["--algo", name]).algo == name


@pytest.mark.parametrize("name, map_name", _env_names())
def test_every_environment_name_reaches_config_and_cli(name, map_name):
    assert Config(env=name, map_name=map_name).env == name
    argv = ["--env", name] + (["--map", map_name] if map_name else [])
    assert _parse_cli(argv).env == name


def test_importing_the_package_prints_nothing():
    """jaxmarl's notice about its submoduled environments is dropped (it preceded every command's output)."""
    result = subprocess.run([sys.executable, "-c", "import perla_jax; print('done')"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
