"""The emulator's one list of differences from Pluggy: well formed, rendered into its README, and naming only
calls the SDK conformance suite makes."""

from __future__ import annotations

from pathlib import Path

from pluggy_emulator.differences import (
    DELIBERATE_DIFFERENCES,
    README,
    SOURCE_CHOICES,
    render_markdown,
    updated_readme,
)

SDK_SCRIPT = Path(__file__).resolve().parents[1] / "conformance" / "sdk_calls.mjs"


def test_entries_are_well_formed() -> None:
    keys = [d.key for d in DELIBERATE_DIFFERENCES]
    assert len(keys) == len(set(keys))
    for difference in DELIBERATE_DIFFERENCES:
        assert difference.key.islower() and " " not in difference.key
        assert difference.what.strip() and difference.why.strip()
        assert "|" not in difference.what + difference.why  # a table cell
    assert all(topic and choice and "|" not in topic + choice for topic, choice in SOURCE_CHOICES)


def test_readme_shows_the_list() -> None:
    text = README.read_text(encoding="utf-8")
    assert render_markdown() in text
    assert updated_readme(text) == text, "run: python -m pluggy_emulator.differences --write"


def test_named_sdk_calls_are_made_by_the_conformance_script() -> None:
    script = SDK_SCRIPT.read_text(encoding="utf-8")
    named = [call for d in DELIBERATE_DIFFERENCES for call in d.sdk_calls]
    assert named
    missing = [call for call in named if f"'{call}'" not in script]
    assert missing == [], f"sdk_calls.mjs makes no call named {missing}"


def test_updated_readme_replaces_only_the_section() -> None:
    section = render_markdown()
    assert updated_readme("# Title\n") == "# Title\n\n" + section
    stale = "# Title\n\n" + section.replace("loopback", "LOOPBACK", 1) + "\n## After\n"
    assert updated_readme(stale) == "# Title\n\n" + section + "\n## After\n"
