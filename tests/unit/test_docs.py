"""The docs' claims point at tests that exist: a renamed or deleted test must take its line in the docs with it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.update(re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), flags=re.MULTILINE))
    return names


def test_every_test_named_in_security_md_exists() -> None:
    text = (ROOT / "docs/security.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(test_\w+)`", text)) | set(re.findall(r"\b(test_[a-z0-9_]+)\b", text))
    named -= {"test_model", "test_trust_model", "test_template", "test_hostile_input"}  # module names
    assert len(named) >= 20
    missing = sorted(named - _test_names())
    assert missing == [], f"docs/security.md names tests that do not exist: {missing}"
