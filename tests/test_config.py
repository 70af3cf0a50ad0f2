"""Node homes: creation, the naming rule, settings and the node key."""

from __future__ import annotations

import stat

import pytest
import yaml

from shoal.config import Settings, create_home, open_home, resolve_home
from shoal.errors import ConflictError, NotFoundError, ShoalError, UsageError
from shoal.names import check_name


def snapshot(root):
    return sorted(
        (str(p.relative_to(root)), p.read_bytes() if p.is_file() else b"") for p in root.rglob("*")
    )


def test_create_home_lays_out_settings_key_and_products(tmp_path):
    home = create_home(tmp_path / "node", "berlin", "eu-de")
    assert home.settings.name == "berlin"
    assert home.settings.region == "eu-de"
    assert (home.root / "products").is_dir()
    mode = stat.S_IMODE(home.key_path.stat().st_mode)
    assert mode == 0o600
    assert home.key_path.with_suffix(".pub").exists()
    saved = yaml.safe_load(home.settings_path.read_text())
    assert saved["name"] == "berlin"
    reopened = open_home(home.root)
    assert reopened.settings == home.settings
    assert reopened.key().public_bytes == home.key().public_bytes


def test_region_defaults_to_local(tmp_path):
    assert create_home(tmp_path / "n", "shop").settings.region == "local"


def test_init_on_existing_home_fails_and_changes_nothing(tmp_path):
    root = tmp_path / "node"
    create_home(root, "berlin")
    before = snapshot(root)
    with pytest.raises(ConflictError):
        create_home(root, "paris")
    assert snapshot(root) == before


def test_init_in_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "stuff.txt").write_text("mine")
    with pytest.raises(ConflictError):
        create_home(tmp_path, "berlin")
    assert [p.name for p in tmp_path.iterdir()] == ["stuff.txt"]


def test_init_in_empty_existing_folder_works(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    create_home(root, "berlin")
    assert (root / "settings.yaml").exists()


@pytest.mark.parametrize(
    "name",
    ["", "Berlin", "1store", "_x", "a.b", "a/b", "..", "a-b", "a" * 64, "ü", "a b", "a\x00"],
)
def test_bad_names_are_refused_before_any_io(tmp_path, name):
    root = tmp_path / "node"
    with pytest.raises(UsageError):
        create_home(root, name)
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["a", "berlin", "store_12", "a" * 63])
def test_good_names(name):
    assert check_name(name, "node") == name


@pytest.mark.parametrize("region", ["", "EU", "eu de", "eu/de", "x" * 64])
def test_bad_regions_are_refused(tmp_path, region):
    with pytest.raises(UsageError):
        create_home(tmp_path / "n", "shop", region)
    assert list(tmp_path.iterdir()) == []


def test_open_missing_home_says_how_to_create_one(tmp_path):
    with pytest.raises(NotFoundError) as info:
        open_home(tmp_path / "nothing")
    assert "shoal init" in (info.value.hint or "")


@pytest.mark.parametrize(
    "content", ["name: [", "- a list", "name: UPPER", "name: ok\nunknown_setting: 1", "\x00\x01"]
)
def test_corrupt_settings_give_a_clear_error(tmp_path, content):
    home = create_home(tmp_path / "n", "shop")
    home.settings_path.write_text(content)
    with pytest.raises(ShoalError) as info:
        open_home(home.root)
    assert "settings" in str(info.value)


def test_resolve_home_prefers_argument_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("SHOAL_HOME")
    assert str(resolve_home(None)) == ".shoal"


def test_every_setting_is_documented():
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
