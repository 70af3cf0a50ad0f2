"""Documentation stays true: the README's settings table matches the Settings model."""

from __future__ import annotations

import re
from pathlib import Path

from shoal.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_matches_the_model():
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- settings-table", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+?) \| (.+?) \|$", table, flags=re.MULTILINE)
    documented = {name: meaning for name, _, meaning in rows}
    assert set(documented) == set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert documented[name] == field.description


def test_readme_names_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text
    assert "make test" in text
