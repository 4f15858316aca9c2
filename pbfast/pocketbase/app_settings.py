"""A tenant's application settings exactly as PocketBase 0.40 keeps them (``core/settings_model.go``): one
JSON document in ``_params`` under the id ``settings`` (stored as a blob, PocketBase's sections in its
order), so an imported PocketBase data dir keeps its settings and an exported one opens in PocketBase.

- :func:`load_document` reads the stored document over PocketBase's defaults; :func:`load_settings` gives
  the typed sections pbfast acts on (SMTP and sender for mails, ``batch``, ``logs``).
- :func:`merge_patch` applies a ``PATCH /api/settings`` body as PocketBase binds it (Go's JSON decoding
  into the current settings: objects merge, arrays and values replace, ``null`` resets to the zero value,
  a value of the wrong type fails the whole body); :func:`validate` gives PocketBase's validation errors.
- :func:`public_json` is what the API shows: the SMTP password and the S3 secrets never leave the tenant.
- :func:`on_saved` registers a listener told of every change made through the settings API.

A document that is not JSON (PocketBase can store it encrypted with ``PB_ENCRYPTION``) reads as the
defaults and is only replaced by a successful ``PATCH``.
"""

from __future__ import annotations

import copy
import weakref
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

import apsw
import orjson

from pbfast.pocketbase.collections.model import now_text
from pbfast.pocketbase.collections.system import DEFAULT_SETTINGS
from pbfast.pocketbase.cron import CronError, parse_cron
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.fields.validators import is_email, is_url
from pbfast.pocketbase.gocompat import atoi, parse_bool

if TYPE_CHECKING:
    from pbfast.pocketbase.tenant import Tenant

__all__ = ["SETTINGS_ID", "BatchSettings", "LoadError", "LogsSettings", "MetaSettings", "RateLimitRule",
           "RateLimitSettings", "Settings", "ip_in_list",
           "SmtpSettings", "load_document", "load_settings", "merge_patch", "notify_saved", "on_saved", "public_json",
           "save_document", "validate"]

SETTINGS_ID: Final = "settings"
_RULE_SCHEMA: Final = {"label": "", "audience": "", "duration": 0, "maxRequests": 0}


def _with_secret(s3: Mapping[str, Any]) -> dict[str, Any]:
    """An S3 section with its ``secret`` (omitted from the stored defaults when empty) in Go's field order."""
    result = {k: v for k, v in s3.items() if k != "forcePathStyle"}
    return {**result, "secret": "", "forcePathStyle": s3["forcePathStyle"]}


# PocketBase's defaults, every key present: also the shape (and Go types) a body is decoded into.
_SCHEMA: Final[dict[str, Any]] = {**copy.deepcopy(DEFAULT_SETTINGS), "s3": _with_secret(DEFAULT_SETTINGS["s3"]),
                                  "backups": {**DEFAULT_SETTINGS["backups"],
                                              "s3": _with_secret(DEFAULT_SETTINGS["backups"]["s3"])}}
_LIST_ITEMS: Final[dict[str, Any]] = {"superuserIPs": "", "excludedIPs": "", "headers": "", "rules": _RULE_SCHEMA}
_INT64: Final = (-(2**63), 2**63 - 1)
_OMIT_EMPTY: Final = ("secret",)  # S3Config.Secret is `json:"secret,omitempty"`


class LoadError(ValueError):
    """The body does not decode into PocketBase's settings (a value of the wrong type)."""


# -- typed views ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    enabled: bool
    host: str
    port: int
    username: str
    password: str
    auth_method: str  # "PLAIN" (also when empty) or "LOGIN"
    tls: bool  # implicit TLS; otherwise STARTTLS when the server offers it
    local_name: str


@dataclass(frozen=True, slots=True)
class MetaSettings:
    app_name: str
    app_url: str
    sender_name: str
    sender_address: str


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """PocketBase's ``BatchConfig`` (``timeout`` seconds; ``max_body_size`` 0: PocketBase's 128 MiB)."""

    enabled: bool = False
    max_requests: int = 50
    timeout: int = 3
    max_body_size: int = 0

    DEFAULT_TIMEOUT: ClassVar[int] = 3
    DEFAULT_MAX_BODY_SIZE: ClassVar[int] = 128 << 20

    @property
    def effective_timeout(self) -> int:
        return self.timeout if self.timeout > 0 else self.DEFAULT_TIMEOUT

    @property
    def effective_max_body_size(self) -> int:
        return self.max_body_size if self.max_body_size > 0 else self.DEFAULT_MAX_BODY_SIZE


@dataclass(frozen=True, slots=True)
class LogsSettings:
    max_days: int
    min_level: int
    log_ip: bool
    log_auth_id: bool


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """One of PocketBase's ``rateLimits.rules``: ``label`` a path prefix (``/api/``), ``METHOD /path`` or a
    collection tag (``users:auth``, ``*:create``); ``audience`` "", ``@guest`` or ``@auth``."""

    label: str
    audience: str
    duration: int  # seconds of one fixed window
    max_requests: int


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    enabled: bool = False
    rules: tuple[RateLimitRule, ...] = ()
    excluded_ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BackupCronSettings:
    """The scheduled backups: ``cron`` "" for none; ``max_keep`` 0 keeps every automatic backup."""

    cron: str = ""
    max_keep: int = 0


@dataclass(frozen=True, slots=True)
class Settings:
    meta: MetaSettings
    smtp: SmtpSettings
    batch: BatchSettings
    logs: LogsSettings
    superuser_ips: tuple[str, ...]  # IPs and CIDR subnets superusers may act from (empty: any)
    trusted_proxy_headers: tuple[str, ...] = ()  # headers naming the client (PocketBase's trustedProxy)
    use_leftmost_ip: bool = False
    rate_limits: RateLimitSettings = RateLimitSettings()
    backups: BackupCronSettings = BackupCronSettings()

    @staticmethod
    def of(document: Mapping[str, Any]) -> Settings:
        meta, smtp, batch, logs = (document[key] for key in ("meta", "smtp", "batch", "logs"))
        limits, proxy = document["rateLimits"], document["trustedProxy"]
        return Settings(
            MetaSettings(meta["appName"], meta["appURL"], meta["senderName"], meta["senderAddress"]),
            SmtpSettings(smtp["enabled"], smtp["host"], smtp["port"], smtp["username"], smtp["password"],
                         smtp["authMethod"], smtp["tls"], smtp["localName"]),
            BatchSettings(batch["enabled"], batch["maxRequests"], batch["timeout"], batch["maxBodySize"]),
            LogsSettings(logs["maxDays"], logs["minLevel"], logs["logIP"], logs["logAuthId"]),
            tuple(document["superuserIPs"]),
            tuple(proxy["headers"]),
            proxy["useLeftmostIP"],
            RateLimitSettings(limits["enabled"], tuple(
                RateLimitRule(rule["label"], rule["audience"], rule["duration"], rule["maxRequests"])
                for rule in limits["rules"]), tuple(limits["excludedIPs"])),
            BackupCronSettings(document["backups"]["cron"], document["backups"]["cronMaxKeep"]),
        )

    def superuser_ip_allowed(self, ip: str) -> bool:
        """PocketBase's ``isIPInList`` over ``superuserIPs`` (an empty list allows every address)."""
        return not self.superuser_ips or ip_in_list(self.superuser_ips, ip)


def ip_in_list(entries: tuple[str, ...], ip: str) -> bool:
    """PocketBase's ``isIPInList``: ``ip`` is one of the addresses or in one of the subnets."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for entry in entries:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


# -- storage -------------------------------------------------------------------------------------------


def _stored_value(conn: apsw.Connection) -> str | bytes | None:
    try:
        row = conn.execute("SELECT value FROM _params WHERE id = ?", (SETTINGS_ID,)).fetchone()
    except apsw.SQLError:  # no _params table
        return None
    return None if row is None else row[0]


def load_document(conn: apsw.Connection) -> dict[str, Any]:
    """The stored settings over PocketBase's defaults (every key present, with its Go type)."""
    return _document_of(_stored_value(conn))


def _document_of(value: str | bytes | None) -> dict[str, Any]:
    document = copy.deepcopy(_SCHEMA)
    if value is None:
        return document
    try:
        stored = orjson.loads(value)
    except orjson.JSONDecodeError:  # encrypted with PB_ENCRYPTION: not readable here
        return document
    if isinstance(stored, dict):
        _merge_lenient(document, stored, _SCHEMA)
    return document


# Per connection: the stored value last decoded and its Settings. Superuser requests read the settings every
# time (superuserIPs); decoding them costs ~100 us, reading the row a few. Keyed by the stored text itself, so
# a save by any connection or process is seen at the next read. Connections are used by one thread at a time.
_decoded: weakref.WeakKeyDictionary[apsw.Connection, tuple[str | bytes | None, Settings]] = \
    weakref.WeakKeyDictionary()


def load_settings(conn: apsw.Connection) -> Settings:
    value = _stored_value(conn)
    cached = _decoded.get(conn)
    if cached is not None and cached[0] == value:
        return cached[1]
    settings = Settings.of(_document_of(value))
    _decoded[conn] = (value, settings)
    return settings


def save_document(conn: apsw.Connection, document: Mapping[str, Any]) -> None:
    """Store the settings as PocketBase does (compact JSON blob, ``updated`` now; ``created`` when new)."""
    value = orjson.dumps(_stored_form(document))
    now = now_text()
    with write_transaction(conn):
        conn.execute("INSERT INTO _params (id, value, created, updated) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(id) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                     (SETTINGS_ID, value, now, now))


# Called (on the tenant's database thread) after the settings API saved new settings, for modules that keep
# a tenant's settings at hand (e.g. to size a request body before its handler runs).
_saved_listeners: list[Callable[[Tenant, Settings], None]] = []


def on_saved(listener: Callable[[Tenant, Settings], None]) -> None:
    _saved_listeners.append(listener)


def notify_saved(tenant: Tenant, settings: Settings) -> None:
    for listener in _saved_listeners:
        listener(tenant, settings)


def _stored_form(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stored_form(v) for k, v in value.items() if not (k in _OMIT_EMPTY and v == "")}
    if isinstance(value, list):
        return [_stored_form(v) for v in value]
    return value


def public_json(document: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as the API answers them: SMTP password and S3 secrets left out."""
    shown: dict[str, Any] = _stored_form(copy.deepcopy(dict(document)))
    shown["smtp"].pop("password", None)
    shown["s3"].pop("secret", None)
    shown["backups"]["s3"].pop("secret", None)
    return shown


def _merge_lenient(target: dict[str, Any], stored: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Stored values over the defaults; a stored value of the wrong type keeps the default."""
    for key, expected in schema.items():
        if key not in stored:
            continue
        if isinstance(expected, dict) and isinstance(stored[key], Mapping):
            _merge_lenient(target[key], stored[key], expected)
            continue
        try:
            target[key] = _decode(stored[key], expected, target[key], key)
        except LoadError:
            continue


# -- PATCH ---------------------------------------------------------------------------------------------


def merge_patch(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with ``patch`` decoded into it as Go's ``json.Unmarshal`` does; raises :class:`LoadError`."""
    result = copy.deepcopy(dict(current))
    return _decode(dict(patch), _SCHEMA, result, "")  # type: ignore[no-any-return]


def form_patch(values: Mapping[str, list[str]]) -> dict[str, Any]:
    """A settings patch from form values as PocketBase's form binder fills its settings struct: a dotted name
    (``meta.appName``, names as in the JSON, case-sensitive) sets that field from its first value (a list of
    text from all of them), parsed for its type (a bool as Go's ``ParseBool``, a whole number); names of no
    such field, or of a section or a list of rules, are ignored. Raises :class:`LoadError`."""
    patch: dict[str, Any] = {}
    for name, items in values.items():
        schema: Any = _SCHEMA
        path = name.split(".")
        for part in path:
            schema = schema.get(part) if isinstance(schema, dict) else None
        if schema is None or isinstance(schema, dict) or not items \
                or isinstance(schema, list) and _LIST_ITEMS.get(path[-1]) != "":
            continue
        value: Any
        if isinstance(schema, list):
            value = list(items)
        elif isinstance(schema, bool):
            value = parse_bool(items[0])
            if value is None:
                raise LoadError(name)
        elif isinstance(schema, int):
            try:
                value = atoi(items[0])
            except ValueError as err:
                raise LoadError(name) from err
        else:
            value = items[0]
        target = patch
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return patch


def _decode(value: Any, schema: Any, current: Any, key: str) -> Any:
    if value is None:  # PocketBase's binder resets what is null to its zero value
        return _zero(schema, key)
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise LoadError(key)
        result = dict(current) if isinstance(current, dict) else _zero(schema, key)
        # Go matches keys case-insensitively, preferring an exact match.
        lowered = {k.lower(): k for k in schema}
        for submitted, item in value.items():
            name = submitted if submitted in schema else lowered.get(submitted.lower())
            if name is not None:
                result[name] = _decode(item, schema[name], result.get(name), name)
        return result
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise LoadError(key)
        item_schema = _LIST_ITEMS[key]
        return [_decode(item, item_schema, None, key) for item in value]
    if isinstance(schema, bool):
        if not isinstance(value, bool):
            raise LoadError(key)
        return value
    if isinstance(schema, int):
        if isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
            raise LoadError(key)
        return value
    if not isinstance(value, str):
        raise LoadError(key)
    return value


def _zero(schema: Any, key: str) -> Any:
    if isinstance(schema, dict):
        return {name: _zero(item, name) for name, item in schema.items()}
    if isinstance(schema, list):
        return []
    if isinstance(schema, bool):
        return False
    if isinstance(schema, int):
        return 0
    return ""


# -- validation ----------------------------------------------------------------------------------------

Errors = dict[str, Any]
_BLANK: Final = {"code": "validation_required", "message": "Cannot be blank."}
_IN_INVALID: Final = {"code": "validation_in_invalid", "message": "Must be a valid value."}
_HOST_INVALID: Final = {"code": "validation_is_host", "message": "Must be a valid IP address or DNS name."}
_URL_INVALID: Final = {"code": "validation_is_url", "message": "Must be a valid URL."}
_IP_INVALID: Final = {"code": "validation_invlaid_ip_or_subnet", "message": "Invalid IP or CIDR subnet."}
_DNS_NAME: Final = re.compile(r"^([a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})(\.[a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})*[._]?$")
_HEX_COLOR: Final = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_RULE_LABEL: Final = re.compile(r"^(\w+ /[\w/-]*|/[\w/-]*|\w+:\w+|\*:\w+|\w+)$", re.ASCII)


def _min(threshold: int) -> dict[str, Any]:
    return {"code": "validation_min_greater_equal_than_required", "message": f"Must be no less than {threshold}.",
            "params": {"threshold": threshold}}


def _length(low: int, high: int) -> dict[str, Any]:
    if low == high:
        return {"code": "validation_length_invalid", "message": f"The length must be exactly {low}.",
                "params": {"max": high, "min": low}}
    return {"code": "validation_length_out_of_range", "message": f"The length must be between {low} and {high}.",
            "params": {"max": high, "min": low}}


def _is_host(value: str) -> bool:
    """ozzo ``is.Host``: an IP address or a DNS name."""
    return _is_ip(value) or (len(value) <= 255 and _DNS_NAME.fullmatch(value) is not None)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_ip_or_subnet(value: str) -> bool:
    if "/" not in value:
        return _is_ip(value)
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _add(errors: Errors, key: str, error: Any) -> None:
    if error:
        errors[key] = error


def _ips(values: list[str]) -> Errors:
    errors: Errors = {}
    for index, value in enumerate(values):
        if not value:
            errors[str(index)] = dict(_BLANK)
        elif not _is_ip_or_subnet(value):
            errors[str(index)] = dict(_IP_INVALID)
    return errors


def _meta(meta: Mapping[str, Any]) -> Errors:
    errors: Errors = {}
    color = meta["accentColor"]
    if color and len(color) != 7:
        errors["accentColor"] = _length(7, 7)
    elif color and not _HEX_COLOR.fullmatch(color):
        errors["accentColor"] = {"code": "validation_is_hex_color", "message": "Must be a valid hexadecimal color code."}
    for key in ("appName", "senderName"):
        if not meta[key]:
            errors[key] = dict(_BLANK)
        elif len(meta[key]) > 255:
            errors[key] = _length(1, 255)
    if not meta["appURL"]:
        errors["appURL"] = dict(_BLANK)
    elif not is_url(meta["appURL"]):
        errors["appURL"] = dict(_URL_INVALID)
    if not meta["senderAddress"]:
        errors["senderAddress"] = dict(_BLANK)
    elif not is_email(meta["senderAddress"]):
        errors["senderAddress"] = {"code": "validation_is_email", "message": "Must be a valid email address."}
    return errors


def _smtp(smtp: Mapping[str, Any]) -> Errors:
    errors: Errors = {}
    if smtp["enabled"] and not smtp["host"]:
        errors["host"] = dict(_BLANK)
    elif smtp["host"] and not _is_host(smtp["host"]):
        errors["host"] = dict(_HOST_INVALID)
    if smtp["enabled"] and not smtp["port"]:
        errors["port"] = dict(_BLANK)
    elif smtp["port"] < 0:
        errors["port"] = _min(0)
    if smtp["authMethod"] and smtp["authMethod"] not in ("LOGIN", "PLAIN"):
        errors["authMethod"] = dict(_IN_INVALID)
    if smtp["localName"] and not _is_host(smtp["localName"]):
        errors["localName"] = dict(_HOST_INVALID)
    return errors


def _s3(s3: Mapping[str, Any]) -> Errors:
    errors: Errors = {}
    if s3["endpoint"] and not is_url(s3["endpoint"]):
        errors["endpoint"] = dict(_URL_INVALID)
    for key in ("endpoint", "bucket", "region", "accessKey", "secret"):
        if s3["enabled"] and not s3[key] and key not in errors:
            errors[key] = dict(_BLANK)
    return errors


def cron_error(expression: str) -> str | None:
    """Why PocketBase's cron scheduler refuses ``expression`` (its message), None when it is valid."""
    try:
        parse_cron(expression)
    except CronError as err:
        return str(err)
    return None


def _backups(backups: Mapping[str, Any]) -> Errors:
    errors: Errors = {}
    _add(errors, "s3", _s3(backups["s3"]))
    problem = cron_error(backups["cron"]) if backups["cron"] else None
    if problem:
        message = problem[:1].upper() + problem[1:]
        errors["cron"] = {"code": "validation_invalid_cron", "message": message if message.endswith(".") else message + "."}
    if backups["cron"] and not backups["cronMaxKeep"]:
        errors["cronMaxKeep"] = dict(_BLANK)
    elif backups["cronMaxKeep"] and backups["cronMaxKeep"] < 1:
        errors["cronMaxKeep"] = _min(1)
    return errors


def _batch(batch: Mapping[str, Any]) -> Errors:
    errors: Errors = {}
    for key in ("maxRequests", "timeout"):
        if batch["enabled"] and not batch[key]:
            errors[key] = dict(_BLANK)
        elif batch[key] < 0:
            errors[key] = _min(0)
    if batch["maxBodySize"] < 0:
        errors["maxBodySize"] = _min(0)
    return errors


def _rate_limits(limits: Mapping[str, Any]) -> Errors:
    errors: Errors = {}
    rules = limits["rules"]
    if limits["enabled"] and not rules:
        errors["rules"] = dict(_BLANK)
    else:
        rule_errors: Errors = {}
        for index, rule in enumerate(rules):
            _add(rule_errors, str(index), _rate_limit_rule(rule))
        if not rule_errors:
            rule_errors = _conflicting_rules(rules)
        _add(errors, "rules", rule_errors)
    _add(errors, "excludedIPs", _ips(limits["excludedIPs"]))
    return errors


def _rate_limit_rule(rule: Mapping[str, Any]) -> Errors:
    errors: Errors = {}
    if not rule["label"]:
        errors["label"] = dict(_BLANK)
    elif not _RULE_LABEL.fullmatch(rule["label"]):
        errors["label"] = {"code": "validation_match_invalid", "message": "Must be in a valid format."}
    for key in ("maxRequests", "duration"):
        if not rule[key]:
            errors[key] = dict(_BLANK)
        elif rule[key] < 1:
            errors[key] = _min(1)
    if rule["audience"] not in ("", "@guest", "@auth"):
        errors["audience"] = dict(_IN_INVALID)
    return errors


def _conflicting_rules(rules: list[Mapping[str, Any]]) -> Errors:
    """The first rule whose label and audience repeat (or prefix) an earlier one's."""
    seen: list[str] = []
    for index, rule in enumerate(rules):
        key = f"{rule['label']}@@{rule['audience']}"
        if any(key.startswith(other) or other.startswith(key) for other in seen):
            return {str(index): {"label": {
                "code": "validation_conflicting_rate_limit_rule",
                "message": f"Rate limit rule configuration with label {rule['label']} already exists or conflicts "
                           "with another rule.",
                "params": {"label": rule["label"]}}}}
        seen.append(key)
    return {}


def validate(document: Mapping[str, Any]) -> Errors:
    """PocketBase's settings validation errors, by section (empty when valid)."""
    errors: Errors = {}
    _add(errors, "superuserIPs", _ips(document["superuserIPs"]))
    _add(errors, "meta", _meta(document["meta"]))
    logs = {key: _min(0) for key in ("maxDataSize", "maxDays") if document["logs"][key] < 0}
    _add(errors, "logs", logs)
    _add(errors, "smtp", _smtp(document["smtp"]))
    _add(errors, "s3", _s3(document["s3"]))
    _add(errors, "backups", _backups(document["backups"]))
    _add(errors, "batch", _batch(document["batch"]))
    _add(errors, "rateLimits", _rate_limits(document["rateLimits"]))
    return errors
