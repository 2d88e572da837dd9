"""Every import points down the data flow of docs/ARCHITECTURE.md (lazy imports inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bayesrm"

LAYERS: dict[str, int] = {
    # shared foundations
    "types": 0, "fileio": 0, "config": 0, "__init__": 0,
    "data": 1,
    "models": 2, "registry": 2,
    "training": 3,
    "uncertainty": 4,
    "rewards": 5,
    "generation": 6,
    "alignment": 7,
    "evaluation": 9,
    "scenarios": 10,
    "serve": 11,
    "integrations": 12,  # clients of the reward server (and in-process scoring)
    "cli": 13,
}
"""A module may import from its own part or from a part with a lower number, never from a higher one
(the order of docs/ARCHITECTURE.md: data -> models / uncertainty -> rewards -> alignment -> evaluation,
then the runners and front ends)."""


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "bayesrm" or name.startswith("bayesrm.")]


def upward_imports(root: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        here = part_of(".".join(path.relative_to(root.parent).with_suffix("").parts))
        if here not in LAYERS:
            bad.append(f"{path.relative_to(root.parent)}: part {here!r} has no place in LAYERS (add it)")
            continue
        for line, name in imports(path, root):
            there = part_of(name)
            if there not in LAYERS:
                bad.append(f"{path.relative_to(root.parent)}:{line}: imports unknown part {name}")
            elif there != here and LAYERS[there] > LAYERS[here] and here != "__init__":
                bad.append(f"{path.relative_to(root.parent)}:{line}: {here} imports {name} ({there} is further down the flow)")
            elif here == "__init__" and there != "types" and path.parent == root:
                bad.append(f"{path.relative_to(root.parent)}:{line}: the package root imports {name}")
    return bad


def test_no_import_points_back_up():
    assert upward_imports() == []


def test_the_check_catches_an_upward_import(tmp_path):
    fake = tmp_path / "bayesrm"
    for part, text in {"scenarios/bon.py": "from bayesrm.cli.common import write_evaluation\n",
                       "alignment/rl/config.py": "def f():\n    from bayesrm.scenarios.config import deep_merge\n",
                       "evaluation/ok.py": "from bayesrm.alignment.bon import kl_bon\nfrom . import plots\n",
                       "rewards/rel.py": "from ..scenarios import config\n"}.items():
        (fake / part).parent.mkdir(parents=True, exist_ok=True)
        (fake / part).write_text(text)
    bad = upward_imports(fake)
    assert len(bad) == 3, bad
    assert any("scenarios/bon.py:1: scenarios imports bayesrm.cli.common" in b for b in bad)
    assert any("alignment/rl/config.py:2" in b for b in bad) and any("rewards/rel.py:1" in b for b in bad)


@pytest.mark.parametrize("name", ["cli", "scenarios", "evaluation"])
def test_layers_cover_the_package(name):
    assert (SRC / name).is_dir() and name in LAYERS
