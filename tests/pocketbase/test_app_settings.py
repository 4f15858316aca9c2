"""The tenant settings store (:mod:`pbfast.pocketbase.app_settings`) on a fresh data dir made as PocketBase
makes one: defaults, a PATCH decoded as Go decodes it, the stored row, masking, the superuser IP list."""

from __future__ import annotations

from pathlib import Path

import apsw
import orjson
import pytest

from pbfast.pocketbase import app_settings
from pbfast.pocketbase.collections.database import init_tenant_database
from pbfast.pocketbase.collections.system import DEFAULT_SETTINGS


@pytest.fixture
def conn(tmp_path: Path) -> apsw.Connection:
    init_tenant_database(tmp_path, with_auxiliary=False)
    return apsw.Connection(str(tmp_path / "data.db"))


def test_fresh_tenant_reads_pocketbase_defaults(conn: apsw.Connection) -> None:
    document = app_settings.load_document(conn)
    assert app_settings.public_json(document) == {**DEFAULT_SETTINGS, "smtp": {
        k: v for k, v in DEFAULT_SETTINGS["smtp"].items() if k != "password"}}
    settings = app_settings.Settings.of(document)
    assert settings.batch == app_settings.BatchSettings(False, 50, 3, 0)
    assert settings.meta.app_name == "Acme" and settings.superuser_ips == ()


def test_patch_saves_secrets_and_answers_without_them(conn: apsw.Connection) -> None:
    current = app_settings.load_document(conn)
    patched = app_settings.merge_patch(current, {"smtp": {"password": "pw", "Enabled": True},
                                                 "s3": {"secret": "s"}, "batch": {"enabled": True}})
    assert app_settings.validate(patched) == {}
    app_settings.save_document(conn, patched)
    kind, raw = conn.execute("SELECT typeof(value), value FROM _params WHERE id = 'settings'").fetchone()
    assert kind == "blob"
    stored = orjson.loads(raw)
    assert list(stored) == list(DEFAULT_SETTINGS)  # PocketBase's section order
    assert stored["smtp"]["password"] == "pw" and stored["s3"]["secret"] == "s"
    assert "secret" not in stored["backups"]["s3"]  # omitted when empty, as Go's omitempty does
    shown = app_settings.public_json(app_settings.load_document(conn))
    assert "password" not in shown["smtp"] and "secret" not in shown["s3"]
    assert app_settings.load_settings(conn).smtp.enabled is True


@pytest.mark.parametrize("patch", [{"batch": {"timeout": 1.5}}, {"batch": {"enabled": 1}}, {"meta": []},
                                   {"superuserIPs": "x"}, {"rateLimits": {"rules": [{"duration": "1"}]}},
                                   {"batch": {"maxRequests": 2**63}}])
def test_wrong_types_fail_the_whole_body(conn: apsw.Connection, patch: dict[str, object]) -> None:
    with pytest.raises(app_settings.LoadError):
        app_settings.merge_patch(app_settings.load_document(conn), patch)


def test_null_resets_to_the_zero_value(conn: apsw.Connection) -> None:
    patched = app_settings.merge_patch(app_settings.load_document(conn), {"rateLimits": None, "meta": {"appName": None}})
    assert patched["rateLimits"] == {"rules": [], "excludedIPs": [], "enabled": False}
    assert patched["meta"]["appName"] == "" and patched["meta"]["senderName"] == "Support"


@pytest.mark.parametrize(("expression", "problem"), [
    ("@daily", None), ("*/5 1-3 * * 1,2", None), ("0 0 1 1 *", None),
    ("* * *", "invalid cron expression - must be a valid macro or to have exactly 5 space separated segments"),
    ("61 * * * *", "invalid segment value - must be between the min and max of the segment"),
    ("*/0 * * * *", "invalid segment step boundary - the step must be between 1 and the 59"),
    ("3-1 * * * *", "invalid segment range maximum - must be between 3 and 59"),
    (" 1 * * * *", "invalid cron expression - must be a valid macro or to have exactly 5 space separated segments"),
])
def test_cron_expressions(expression: str, problem: str | None) -> None:
    assert app_settings.cron_error(expression) == problem


def test_superuser_ip_list(conn: apsw.Connection) -> None:
    document = app_settings.merge_patch(app_settings.load_document(conn), {"superuserIPs": ["10.0.0.0/8", "::1"]})
    settings = app_settings.Settings.of(document)
    assert settings.superuser_ip_allowed("10.1.2.3") and settings.superuser_ip_allowed("::1")
    assert not settings.superuser_ip_allowed("127.0.0.1") and not settings.superuser_ip_allowed("garbage")


def test_a_mistyped_stored_value_keeps_only_its_default(conn: apsw.Connection) -> None:
    stored = {**DEFAULT_SETTINGS, "batch": {"enabled": True, "maxRequests": "many", "timeout": 9}}
    conn.execute("UPDATE _params SET value = ? WHERE id = 'settings'", (orjson.dumps(stored),))
    batch = app_settings.load_settings(conn).batch
    assert batch == app_settings.BatchSettings(enabled=True, max_requests=50, timeout=9, max_body_size=0)
    assert batch.effective_max_body_size == 128 << 20


def test_settings_saved_by_another_connection_are_read_at_once(conn: apsw.Connection, tmp_path: Path) -> None:
    """Decoded settings are kept per connection, but a save by any other connection (another worker process,
    say) is seen at the next read."""
    assert app_settings.load_settings(conn).superuser_ips == ()
    assert app_settings.load_settings(conn) is app_settings.load_settings(conn)  # decoded once
    other = apsw.Connection(str(tmp_path / "data.db"))
    app_settings.save_document(other, app_settings.merge_patch(app_settings.load_document(other),
                                                               {"superuserIPs": ["10.0.0.0/8"]}))
    assert app_settings.load_settings(conn).superuser_ips == ("10.0.0.0/8",)
    app_settings.save_document(other, app_settings.merge_patch(app_settings.load_document(other),
                                                               {"superuserIPs": []}))
    assert app_settings.load_settings(conn).superuser_ips == ()
