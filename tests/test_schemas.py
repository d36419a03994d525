"""The schemas in apm/core/schemas.py and their documentation in README.md stay in step."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from apm.core.schemas import ALL_SCHEMAS

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def documented_columns(readme: str, table: str) -> set[str]:
    section = readme.split(f"### `{table}`", 1)[1].split("\n### ", 1)[0]
    names = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            names.update(re.findall(r"`([a-z0-9_]+)`", row.split("|")[1]))
    return names


@pytest.mark.parametrize("table", sorted(ALL_SCHEMAS))
def test_readme_documents_every_column(table):
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert f"### `{table}`" in readme, f"README.md has no section for {table}"
    assert documented_columns(readme, table) == set(ALL_SCHEMAS[table].names)
