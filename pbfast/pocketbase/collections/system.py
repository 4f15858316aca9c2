"""What a fresh PocketBase 0.40.6 ``data.db`` holds besides user collections: the bootstrap tables, the
system collections (``_mfas``, ``_otps``, ``_externalAuths``, ``_authOrigins``, ``_superusers``) and the
default ``users`` collection as collection-create payloads, the default auth options and email templates,
the default settings and the names of PocketBase's system migrations.

The values were read from a data dir created by the stock 0.40.6 binary (``pocketbase serve``).
Constants only: safe from any thread.
"""

from __future__ import annotations

import secrets
import string
from typing import Any, Final

__all__ = [
    "AUXILIARY_DDL",
    "BOOTSTRAP_DDL",
    "DEFAULT_SETTINGS",
    "SYSTEM_COLLECTION_PAYLOADS",
    "SYSTEM_MIGRATIONS",
    "default_auth_options",
    "random_secret",
]

# The files PocketBase records in ``_migrations`` once its own (system) migrations ran. Stock PocketBase
# runs every migration not listed there, so a pbfast-created database must list all of them.
SYSTEM_MIGRATIONS: Final = (
    "1640988000_aux_init.go",
    "1640988000_init.go",
    "1717233556_v0.23_migrate.go",
    "1717233557_v0.23_migrate2.go",
    "1717233558_v0.23_migrate3.go",
    "1717233559_v0.23_migrate4.go",
    "1763020353_update_default_auth_alert_templates.go",
    "1778828400_normalize_indexes.go",
)

# The tables that are not collections, with PocketBase's exact DDL text (sqlite_master keeps it verbatim).
BOOTSTRAP_DDL: Final = (
    "CREATE TABLE `_migrations` (file VARCHAR(255) PRIMARY KEY NOT NULL, applied INTEGER NOT NULL)",
    "CREATE TABLE `_params` (\n"
    "\t\t\t`id`      TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,\n"
    "\t\t\t`value`   JSON DEFAULT NULL,\n"
    "\t\t\t`created` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,\n"
    "\t\t\t`updated` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL\n"
    "\t\t)",
    "CREATE TABLE `_collections` (\n"
    "\t\t\t\t`id`         TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,\n"
    "\t\t\t\t`system`     BOOLEAN DEFAULT FALSE NOT NULL,\n"
    '\t\t\t\t`type`       TEXT DEFAULT "base" NOT NULL,\n'
    "\t\t\t\t`name`       TEXT UNIQUE NOT NULL,\n"
    '\t\t\t\t`fields`     JSON DEFAULT "[]" NOT NULL,\n'
    '\t\t\t\t`indexes`    JSON DEFAULT "[]" NOT NULL,\n'
    "\t\t\t\t`listRule`   TEXT DEFAULT NULL,\n"
    "\t\t\t\t`viewRule`   TEXT DEFAULT NULL,\n"
    "\t\t\t\t`createRule` TEXT DEFAULT NULL,\n"
    "\t\t\t\t`updateRule` TEXT DEFAULT NULL,\n"
    "\t\t\t\t`deleteRule` TEXT DEFAULT NULL,\n"
    '\t\t\t\t`options`    JSON DEFAULT "{}" NOT NULL,\n'
    "\t\t\t\t`created`    TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,\n"
    "\t\t\t\t`updated`    TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL\n"
    "\t\t\t)",
    "CREATE INDEX idx__collections_type on `_collections` (`type`)",
)

# auxiliary.db (PocketBase's request logs); PocketBase recreates it when missing.
AUXILIARY_DDL: Final = (
    "CREATE TABLE `_logs` (\n"
    "\t\t\t\t\t`id`      TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,\n"
    "\t\t\t\t\t`level`   INTEGER DEFAULT 0 NOT NULL,\n"
    '\t\t\t\t\t`message` TEXT DEFAULT "" NOT NULL,\n'
    '\t\t\t\t\t`data`    JSON DEFAULT "{}" NOT NULL,\n'
    "\t\t\t\t\t`created` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL\n"
    "\t\t\t\t)",
    "CREATE INDEX idx_logs_level on `_logs` (`level`)",
    "CREATE INDEX idx_logs_message on `_logs` (`message`)",
    "CREATE INDEX idx_logs_created_hour on `_logs` (strftime('%Y-%m-%d %H:00:00', `created`))",
)

_SECRET_ALPHABET: Final = string.ascii_letters + string.digits


def random_secret(length: int = 50) -> str:
    """A random ``[A-Za-z0-9]`` secret like PocketBase's ``security.RandomString`` (tokens' signing keys)."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(length))


_THANKS: Final = "<p>\n  Thanks,<br/>\n  {APP_NAME} team\n</p>"

AUTH_ALERT_TEMPLATE: Final = {
    "subject": "Login from a new location",
    "body": "<p>Hello,</p>\n<p>We noticed a login to your {APP_NAME} account from a new location:</p>\n"
            "<p><em>{ALERT_INFO}</em></p>\n<p><strong>If this wasn't you, you should immediately change your "
            "{APP_NAME} account password to revoke access from all other locations.</strong></p>\n"
            "<p>If this was you, you may disregard this email.</p>\n" + _THANKS,
}
OTP_TEMPLATE: Final = {
    "subject": "OTP for {APP_NAME}",
    "body": "<p>Hello,</p>\n<p>Your one-time password is: <strong>{OTP}</strong></p>\n"
            "<p><i>If you didn't ask for the one-time password, you can ignore this email.</i></p>\n" + _THANKS,
}
VERIFICATION_TEMPLATE: Final = {
    "subject": "Verify your {APP_NAME} email",
    "body": "<p>Hello,</p>\n<p>Thank you for joining us at {APP_NAME}.</p>\n"
            "<p>Click on the button below to verify your email address.</p>\n<p>\n"
            '  <a class="btn" href="{APP_URL}/_/#/auth/confirm-verification/{TOKEN}" target="_blank" '
            'rel="noopener">Verify</a>\n</p>\n'
            "<p><i>If you didn't recently register, please ignore this email.</i></p>\n" + _THANKS,
}
RESET_PASSWORD_TEMPLATE: Final = {
    "subject": "Reset your {APP_NAME} password",
    "body": "<p>Hello,</p>\n<p>Click on the button below to reset your password.</p>\n<p>\n"
            '  <a class="btn" href="{APP_URL}/_/#/auth/confirm-password-reset/{TOKEN}" target="_blank" '
            'rel="noopener">Reset password</a>\n</p>\n'
            "<p><i>If you didn't ask to reset your password, please ignore this email.</i></p>\n" + _THANKS,
}
CONFIRM_EMAIL_CHANGE_TEMPLATE: Final = {
    "subject": "Confirm your {APP_NAME} new email address",
    "body": "<p>Hello,</p>\n<p>Click on the button below to confirm your new email address.</p>\n<p>\n"
            '  <a class="btn" href="{APP_URL}/_/#/auth/confirm-email-change/{TOKEN}" target="_blank" '
            'rel="noopener">Confirm new email</a>\n</p>\n'
            "<p><i>If you didn't ask to change your email address, please ignore this email.</i></p>\n" + _THANKS,
}


def default_auth_options() -> dict[str, Any]:
    """The options of a new auth collection (PocketBase's ``setDefaultAuthOptions``), with fresh random
    50-character token secrets, in PocketBase's key order."""
    return {
        "authRule": "",
        "manageRule": None,
        "authAlert": {"enabled": True, "emailTemplate": dict(AUTH_ALERT_TEMPLATE)},
        "oauth2": {"providers": [], "mappedFields": {"id": "", "name": "", "username": "", "avatarURL": ""},
                   "enabled": False},
        "passwordAuth": {"enabled": True, "identityFields": ["email"]},
        "mfa": {"enabled": False, "duration": 600, "rule": ""},
        "otp": {"enabled": False, "duration": 180, "length": 8, "emailTemplate": dict(OTP_TEMPLATE)},
        "authToken": {"secret": random_secret(), "duration": 432000},
        "passwordResetToken": {"secret": random_secret(), "duration": 1800},
        "emailChangeToken": {"secret": random_secret(), "duration": 1800},
        "verificationToken": {"secret": random_secret(), "duration": 86400},
        "fileToken": {"secret": random_secret(), "duration": 180},
        "verificationTemplate": dict(VERIFICATION_TEMPLATE),
        "resetPasswordTemplate": dict(RESET_PASSWORD_TEMPLATE),
        "confirmEmailChangeTemplate": dict(CONFIRM_EMAIL_CHANGE_TEMPLATE),
    }


# The settings row (``_params`` id "settings") of a fresh data dir, as stored (compact JSON, this order).
DEFAULT_SETTINGS: Final[dict[str, Any]] = {
    "superuserIPs": [],
    "smtp": {"enabled": False, "port": 587, "host": "smtp.example.com", "username": "", "password": "",
             "authMethod": "", "tls": False, "localName": ""},
    "backups": {"cron": "", "cronMaxKeep": 3,
                "s3": {"enabled": False, "bucket": "", "region": "", "endpoint": "", "accessKey": "",
                       "forcePathStyle": False}},
    "s3": {"enabled": False, "bucket": "", "region": "", "endpoint": "", "accessKey": "", "forcePathStyle": False},
    "meta": {"accentColor": "#1055c9", "appName": "Acme", "appURL": "http://localhost:8090",
             "senderName": "Support", "senderAddress": "support@example.com", "hideControls": False},
    "rateLimits": {"rules": [{"label": "*:auth", "audience": "", "duration": 3, "maxRequests": 2},
                             {"label": "*:create", "audience": "", "duration": 5, "maxRequests": 20},
                             {"label": "/api/batch", "audience": "", "duration": 1, "maxRequests": 3},
                             {"label": "/api/", "audience": "", "duration": 10, "maxRequests": 300}],
                   "excludedIPs": [], "enabled": False},
    "trustedProxy": {"headers": [], "useLeftmostIP": False},
    "batch": {"enabled": False, "maxRequests": 50, "timeout": 3, "maxBodySize": 0},
    "logs": {"maxDataSize": 0, "maxDays": 5, "minLevel": 0, "logIP": True, "logAuthId": False},
}

_OWNER_RULE: Final = "@request.auth.id != '' && recordRef = @request.auth.id && collectionRef = @request.auth.collectionId"


def _text(name: str, *, hidden: bool = False, required: bool = True) -> dict[str, Any]:
    return {"name": name, "type": "text", "system": True, "required": required, "hidden": hidden}


_SYSTEM_AUTODATES: Final = (
    {"name": "created", "type": "autodate", "system": True, "onCreate": True},
    {"name": "updated", "type": "autodate", "system": True, "onCreate": True, "onUpdate": True},
)

# Collection-create payloads, in the order PocketBase's init migration creates them.
SYSTEM_COLLECTION_PAYLOADS: Final[tuple[dict[str, Any], ...]] = (
    {
        "name": "_mfas", "type": "base", "system": True, "listRule": _OWNER_RULE, "viewRule": _OWNER_RULE,
        "fields": [_text("collectionRef"), _text("recordRef"), _text("method"), *_SYSTEM_AUTODATES],
        "indexes": ["CREATE INDEX `idx_mfas_collectionRef_recordRef` ON `_mfas` (collectionRef,recordRef)"],
    },
    {
        "name": "_otps", "type": "base", "system": True, "listRule": _OWNER_RULE, "viewRule": _OWNER_RULE,
        "fields": [_text("collectionRef"), _text("recordRef"),
                   {"name": "password", "type": "password", "system": True, "hidden": True, "required": True,
                    "cost": 8},
                   _text("sentTo", hidden=True, required=False), *_SYSTEM_AUTODATES],
        "indexes": ["CREATE INDEX `idx_otps_collectionRef_recordRef` ON `_otps` (collectionRef, recordRef)"],
    },
    {
        "name": "_externalAuths", "type": "base", "system": True, "listRule": _OWNER_RULE,
        "viewRule": _OWNER_RULE, "deleteRule": _OWNER_RULE,
        "fields": [_text("collectionRef"), _text("recordRef"), _text("provider"), _text("providerId"),
                   *_SYSTEM_AUTODATES],
        "indexes": [
            "CREATE UNIQUE INDEX `idx_externalAuths_record_provider` ON `_externalAuths` "
            "(collectionRef, recordRef, provider)",
            "CREATE UNIQUE INDEX `idx_externalAuths_collection_provider` ON `_externalAuths` "
            "(collectionRef, provider, providerId)",
        ],
    },
    {
        "name": "_authOrigins", "type": "base", "system": True, "listRule": _OWNER_RULE,
        "viewRule": _OWNER_RULE, "deleteRule": _OWNER_RULE,
        "fields": [_text("collectionRef"), _text("recordRef"), _text("fingerprint"), *_SYSTEM_AUTODATES],
        "indexes": ["CREATE UNIQUE INDEX `idx_authOrigins_unique_pairs` ON `_authOrigins` "
                    "(collectionRef, recordRef, fingerprint)"],
    },
    {
        "name": "_superusers", "type": "auth", "system": True,
        "fields": [{"name": "email", "type": "email", "system": True, "required": True}, *_SYSTEM_AUTODATES],
        "authToken": {"duration": 86400},
    },
    {
        "id": "_pb_users_auth_", "name": "users", "type": "auth",
        "listRule": "id = @request.auth.id", "viewRule": "id = @request.auth.id", "createRule": "",
        "updateRule": "id = @request.auth.id", "deleteRule": "id = @request.auth.id",
        "fields": [
            {"name": "name", "type": "text", "max": 255},
            {"name": "avatar", "type": "file", "maxSelect": 1,
             "mimeTypes": ["image/jpeg", "image/png", "image/svg+xml", "image/gif", "image/webp"]},
            {"name": "created", "type": "autodate", "onCreate": True},
            {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
        ],
        "oauth2": {"mappedFields": {"name": "name", "avatarURL": "avatar"}},
    },
)
