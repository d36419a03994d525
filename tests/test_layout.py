"""The layout the README's "Layout" section describes: each sub-package of ``apm`` imports only
those listed above it, nothing in ``apm`` imports ``jobs`` or ``benchmarks``, and only
``apm.pipeline`` uses ``pfagan``."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[str]:
    """The sub-packages in the README's order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    return re.findall(r"^\| `apm/(\w+)/` \|", section, re.M)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_every_package_is_in_the_readme_and_imports_only_those_above_it():
    layers = _layers()
    on_disk = sorted(p.name for p in (ROOT / "apm").iterdir() if (p / "__init__.py").exists())
    assert sorted(layers) == on_disk
    rank = {name: i for i, name in enumerate(layers)}
    upward = []
    for path in (ROOT / "apm").rglob("*.py"):
        package = path.relative_to(ROOT / "apm").parts[0]
        if package not in rank:
            continue
        for module in _imports(path):
            top, _, rest = module.partition(".")
            if top in ("jobs", "benchmarks") or (top == "pfagan" and package != "pipeline"):
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
            target = rest.split(".")[0]
            if top == "apm" and target in rank and rank[target] > rank[package]:
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert upward == []
