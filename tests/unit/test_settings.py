"""One Settings: every setting declared once, README's table generated from it, bad values refused."""

from __future__ import annotations

import importlib.util
import logging
import os
import pathlib
import re
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from server.audit.flask_integration import AuditSettings
from server.bulk.config import BulkConfig
from server.settings import DEV_SECRET
from server.settings import Settings
from server.settings import SettingsError
from server.settings import environment_names

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("server", "auth", "fhir_mapping", "migrations")


def _table_module() -> Any:
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_generated_one() -> None:
    module = _table_module()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    between = readme.split(module.START, 1)[1].split(module.END, 1)[0]
    assert between == "\n" + module.table(), "run: python scripts/settings_table.py --write"
    assert module.table().count("\n") == len(environment_names()) + 2


def test_only_settings_reads_the_environment() -> None:
    """Export, audit and auth take their settings from Settings, not from os.environ themselves."""
    readers = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if re.search(r"os\.environ|os\.getenv|getenv\(", text):
                readers.append(str(path.relative_to(ROOT)))
    assert readers == ["server/settings.py"]


def test_every_rehabfhir_name_in_the_code_is_declared() -> None:
    declared = set(environment_names())
    used = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            used |= set(re.findall(r"\bREHABFHIR_[A-Z][A-Z_]*[A-Z]\b", path.read_text(encoding="utf-8")))
    assert used - declared - {"REHABFHIR_SETTINGS"} == set()  # REHABFHIR_SETTINGS: the Flask config key


def test_values_are_parsed_by_their_declared_type() -> None:
    s = Settings.from_env(
        {
            "DATABASE_URL": "sqlite://",
            "REHABFHIR_MAX_PAGE_SIZE": "50",
            "REHABFHIR_AUDIT_HEAD_INTERVAL": "2.5",
            "REHABFHIR_AUTO_MIGRATE": "off",
            "REHABFHIR_EXPORT_WORKER": "no",
            "REHABFHIR_EXPORT_DIR": "/srv/export",
            "REHABFHIR_EXPORT_TTL_HOURS": "1.5",
            "REHABFHIR_AUDIT": "off",
            "REHABFHIR_DEFAULT_PAGE_SIZE": "",  # empty: the default
        }
    )
    assert (s.max_page_size, s.audit_head_interval, s.auto_migrate) == (50, 2.5, False)
    assert s.default_page_size == 20
    bulk = BulkConfig.from_settings(s)
    assert (bulk.export_dir, bulk.worker, bulk.ttl) == ("/srv/export", False, timedelta(hours=1.5))
    assert AuditSettings.from_settings(s).enabled is False


def test_tests_without_an_export_directory_write_to_a_temporary_one() -> None:
    assert BulkConfig.from_settings(Settings(database_url="sqlite://")).export_dir == "./export-files"
    temporary = BulkConfig.from_settings(Settings(database_url="sqlite://", testing=True)).export_dir
    assert temporary != "./export-files" and os.path.isdir(temporary)
    os.rmdir(temporary)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REHABFHIR_MAX_PAGE_SIZE", "lots"),
        ("REHABFHIR_AUTO_MIGRATE", "maybe"),
        ("REHABFHIR_AUDIT_HEAD_INTERVAL", "10s"),
        ("REHABFHIR_MODE", "staging"),
    ],
    ids=["int", "bool", "float", "mode"],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"DATABASE_URL": "sqlite://", name: value})


def test_unknown_rehabfhir_variables_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rehabfhir.settings"):
        Settings.from_env({"DATABASE_URL": "sqlite://", "REHABFHIR_BASEURL": "x", "OTHER_THING": "y"})
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["unknown setting REHABFHIR_BASEURL is ignored (did you mean REHABFHIR_BASE_URL?)"]


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(SettingsError, match="REHABFHIR_SECRET_KEY"):
        Settings.from_env({"DATABASE_URL": "sqlite://", "REHABFHIR_MODE": "production"})
    with pytest.raises(SettingsError, match="REHABFHIR_SECRET_KEY"):
        Settings(database_url="sqlite://", mode="production", secret_key=DEV_SECRET)
    ok = Settings.from_env(
        {"DATABASE_URL": "sqlite://", "REHABFHIR_MODE": "production", "REHABFHIR_SECRET_KEY": "s3cret-" * 6}
    )
    assert ok.mode == "production"
    assert Settings(database_url="sqlite://").secret_key == DEV_SECRET  # development keeps working


def test_the_command_line_stops_with_a_one_line_message(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REHABFHIR_")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/x.db", REHABFHIR_MODE="production")
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "rehabfhir: REHABFHIR_MODE=production needs REHABFHIR_SECRET_KEY (not the development value)"
    ]
    assert not (tmp_path / "x.db").exists()


def test_db_upgrade_migrates_an_empty_database_without_auto_migrate(tmp_path: pathlib.Path) -> None:
    import sqlalchemy as sa

    from server.store.migrate import missing_heads

    env = {k: v for k, v in os.environ.items() if not k.startswith("REHABFHIR_")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/x.db", REHABFHIR_AUTO_MIGRATE="false")
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    engine = sa.create_engine(env["DATABASE_URL"])
    assert missing_heads(engine) == []
    engine.dispose()
