"""docs/security.md names, for each promise, the test that shows it: every test it names
exists, so a renamed or deleted test cannot leave a promise standing on nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THREAT_MODEL = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(test_\w+))?")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_the_threat_model_names_exists() -> None:
    references = REFERENCE.findall(THREAT_MODEL.read_text())
    assert len(references) >= 20, "the threat model names the tests behind its promises"
    missing = []
    for file, name in references:
        path = ROOT / file
        if not path.is_file() or (name and name not in _test_names(path)):
            missing.append(f"{file}::{name}" if name else file)
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
