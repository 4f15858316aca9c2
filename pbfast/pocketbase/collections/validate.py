"""PocketBase's collection validator (``core/collection_validate.go``): names, fields, API rules, indexes
and auth options, with PocketBase's error codes."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, Final

import apsw

from pbfast.pocketbase.fields import SettingsContext, TextField
from pbfast.pocketbase.fields.validators import is_url
from pbfast.pocketbase.collections.auth_options import TEMPLATE_KEYS, TOKEN_KEYS, EmailTemplate, OAuth2Provider
from pbfast.pocketbase.collections.errors import REQUIRED, error_item
from pbfast.pocketbase.collections.model import COLLECTION_TYPES, RULE_KEYS, Collection, CollectionMap
from pbfast.pocketbase.dbutils.index import ParsedIndex, parse_index, single_column_unique_index

__all__ = ["RuleChecker", "table_exists", "validate_collection"]

RESERVED_AUTH_FIELD_NAMES: Final = ("passwordConfirm", "oldPassword")
MAX_TOKEN_DURATION: Final = 94670856
_NAME_RE: Final = re.compile(r"\w+", re.ASCII)


RuleChecker = Callable[[Collection, str, CollectionMap], None]
"""Checks an API rule of a collection being saved, given the tenant's other collections (raises
``ValueError`` with the reason when the rule is invalid); see :func:`~.rules.check_api_rule`."""


def table_exists(conn: apsw.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ? COLLATE NOCASE "
                       "LIMIT 1", (name,)).fetchone()
    return row is not None


def _validate_name(conn: apsw.Connection, collection: Collection, original: Collection | None,
                   others: CollectionMap) -> dict[str, Any] | None:
    name = collection.name
    if name == "":
        return dict(REQUIRED)
    if len(name.encode()) > 255:
        return error_item("validation_length_out_of_range", "the length must be between 1 and 255", {"min": 1, "max": 255})
    if "_via_" in name.lower():
        return error_item("validation_found_via", 'The value cannot contain "_via_".')
    if not _NAME_RE.fullmatch(name):
        return error_item("validation_match_invalid", "must be in a valid format")
    if original is not None and original.system and name != original.name:
        return error_item("validation_collection_system_name_change", "System collection name cannot be changed.")
    own_id = original.id if original is not None else None
    for other in others.values():
        if other.id != own_id and other.name.lower() == name.lower():
            return error_item("validation_collection_name_exists", "Collection name must be unique (case insensitive).")
    if any(other.id == name for other in others.values()):
        return error_item("validation_collection_name_id_duplicate", "The name must not match an existing collection id.")
    # Only a table of no collection: a rename in another case keeps the collection's own table (SQLite's names
    # are case-insensitive), as PocketBase checks the name is no collection's before looking for a table.
    if (original is None or original.name.lower() != name.lower()) and table_exists(conn, name):
        return error_item("validation_collection_name_invalid", "The name shouldn't match with an existing internal table.")
    return None


def _check_rule(check: RuleChecker, collection: Collection, rule: str | None, others: CollectionMap,
                ) -> dict[str, Any] | None:
    if not rule:
        return None
    try:
        check(collection, rule, others)
    except ValueError as err:
        return error_item("validation_invalid_rule", f"Invalid rule. Raw error: {err}")
    return None


def _validate_fields(collection: Collection, original: Collection | None, others: CollectionMap,
                     ) -> dict[str, Any] | None:
    fields_list = collection.fields
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    for index, definition in enumerate(fields_list):
        if definition.id in seen_ids:
            return {str(index): {"id": error_item("validation_duplicated_field_id",
                                             f'Duplicated or invalid field id "{definition.id}"')}}
        if definition.name.lower() in seen_names:
            return {str(index): {"name": error_item("validation_duplicated_field_name",
                                               "Duplicated or invalid field name {{.fieldName}}".replace(
                                                   "{{.fieldName}}", definition.name),
                                               {"fieldName": definition.name})}}
        seen_ids.add(definition.id)
        seen_names.add(definition.name.lower())
    minimum = _check_min_fields(collection)
    if minimum is not None:
        return minimum
    if collection.type != "view" and original is not None:
        for old in original.fields:
            if not old.system:
                continue
            renamed = collection.field_by_id(old.id)
            if renamed is None or renamed.name != old.name:
                return error_item("validation_system_field_change", "System fields cannot be deleted or renamed.")
        type_errors = {}
        for index, definition in enumerate(fields_list):
            stored = original.field_by_id(definition.id)
            if stored is not None and stored.TYPE != definition.TYPE:
                type_errors[str(index)] = error_item("validation_field_type_change", "Field type cannot be changed.")
        if type_errors:
            return type_errors
    if collection.type == "auth":
        reserved = {str(i): {"name": error_item("validation_reserved_field_name",
                                           "The field name is reserved and cannot be used.")}
                    for i, f in enumerate(fields_list) if f.name in RESERVED_AUTH_FIELD_NAMES}
        if reserved:
            return reserved
    settings_errors = {}
    for index, definition in enumerate(fields_list):
        previous = original.field_by_id(definition.id) if original is not None else None
        errors = definition.validate_settings(SettingsContext(
            collection_fields=fields_list, collection_type=collection.type, old_field=previous,
            collection_exists=lambda cid: others.by_id(cid) is not None or cid == collection.id,
            is_view_collection=lambda cid: (others.by_id(cid) or collection).type == "view"))
        if errors:
            settings_errors[str(index)] = errors
    return settings_errors or None


def _check_min_fields(collection: Collection) -> dict[str, Any] | None:
    if not collection.fields:
        return dict(REQUIRED)
    id_field = collection.field("id")
    if not isinstance(id_field, TextField) or not id_field.primary_key:
        return error_item("validation_missing_primary_key", 'Missing or invalid "id" PK field.')
    if collection.type != "auth":
        return None
    checks = (("password", "password", True), ("tokenKey", "text", True), ("email", "email", False),
              ("emailVisibility", "bool", False), ("verified", "bool", False))
    for name, kind, hidden in checks:
        definition = collection.field(name)
        if definition is None or definition.TYPE != kind:
            return error_item(f"validation_missing_{name}_field", f'System "{name}" field is required.')
        if hidden and not (definition.hidden and definition.system):
            return {name: error_item("validation_must_be_system_and_hidden",
                                'The field must be marked as "System" and "Hidden".')}
        if not hidden and not definition.system:
            return {name: error_item("validation_must_be_system", 'The field must be marked as "System".')}
    return None


def _validate_indexes(conn: apsw.Connection, collection: Collection, original: Collection | None,
                      ) -> dict[str, Any] | None:
    if collection.type == "view" and collection.indexes:
        return error_item("validation_indexes_not_supported", "View collections don't support indexes.")
    names: set[str] = set()
    definitions: set[str] = set()
    for index, raw in enumerate(collection.indexes):
        parsed = parse_index(raw)
        parsed.table_name = "validator"
        if not parsed.is_valid():
            return {str(index): error_item("validation_invalid_index_expression", "Invalid CREATE INDEX expression.")}
        if parsed.index_name.lower() in names:
            return {str(index): error_item("validation_duplicated_index_name", "The index name already exists.")}
        names.add(parsed.index_name.lower())
        used = conn.execute(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND LOWER(tbl_name) != LOWER(?) "
            "AND LOWER(tbl_name) != LOWER(?) AND LOWER(name) = LOWER(?) LIMIT 1",
            (original.name if original else "", collection.name, parsed.index_name)).fetchone()
        if used:
            return {str(index): error_item("validation_existing_index_name",
                                      f"The index name is already used in {used[0]} collection.",
                                      {"usedTableName": used[0]})}
        parsed.schema_name = parsed.index_name = "validator"
        definition = parsed.build()
        if definition in definitions:
            return {str(index): error_item("validation_duplicated_index_definition", "The index definition already exists.")}
        definitions.add(definition)
    if original is not None:
        problem = _check_system_unique_indexes(collection, original)
        if problem is not None:
            return problem
    if collection.type == "auth":
        for name in ("tokenKey", "email"):
            if single_column_unique_index(collection.indexes, name) is None:
                return error_item("validation_missing_required_unique_index",
                             f'Missing required unique index for field "{name}".', {"fieldName": name})
    return None


def _check_system_unique_indexes(collection: Collection, original: Collection) -> dict[str, Any] | None:
    """Unique indexes on system fields must be kept (same columns) when a collection is updated."""
    def shape(parsed: ParsedIndex, like: ParsedIndex) -> str:
        clone = copy.deepcopy(parsed)
        clone.schema_name, clone.index_name, clone.table_name, clone.where = (
            like.schema_name, like.index_name, like.table_name, like.where)
        for column in clone.columns:
            column.collate = column.sort = ""
        return clone.build()

    for raw in original.indexes:
        old = parse_index(raw)
        if not old.unique:
            continue
        old_shape = shape(old, old)
        for column in old.columns:
            system_field = next((f for f in original.fields
                                 if f.system and f.name.lower() == column.name.lower()), None)
            if system_field is None:
                continue
            if not any(shape(parse_index(new), old) == old_shape for new in collection.indexes):
                return error_item("validation_invalid_unique_system_field_index",
                             f"Unique index definition on system fields ({system_field.name}) is invalid or missing.",
                             {"fieldName": system_field.name})
            break
    return None


def _validate_auth_options(collection: Collection, original: Collection | None, others: CollectionMap,
                           check_rule: RuleChecker) -> dict[str, Any]:
    options = collection.auth
    errors: dict[str, Any] = {}
    original_options = original.auth if original is not None and original.type == "auth" else None
    system_original = original is not None and original.system

    for key, value, previous in (("authRule", options.auth_rule, original_options and original_options.auth_rule),
                                 ("manageRule", options.manage_rule,
                                  original_options and original_options.manage_rule)):
        if key == "manageRule" and value == "":
            errors[key] = error_item("validation_nil_or_not_empty_required", "cannot be blank")
            continue
        problem = _check_rule(check_rule, collection, value, others)
        if problem is None and system_original and previous != value:
            problem = error_item("validation_collection_system_rule_change", "System collection API rule cannot be changed.")
        if problem:
            errors[key] = problem

    def template_errors(template: EmailTemplate) -> dict[str, Any]:
        return {k: dict(REQUIRED) for k, v in (("subject", template.subject), ("body", template.body)) if not v}

    alert = template_errors(options.auth_alert_template)
    if alert:
        errors["authAlert"] = {"emailTemplate": alert}
    if options.password_auth.enabled and not options.password_auth.identity_fields:
        errors["passwordAuth"] = {"identityFields": dict(REQUIRED)}
    oauth2 = options.oauth2
    if oauth2.enabled:
        provider_errors: dict[str, Any] = {}
        seen: set[str] = set()
        for index, provider in enumerate(oauth2.providers):
            problems = {k: dict(REQUIRED) for k, v in (("name", provider.name), ("clientId", provider.client_id),
                                                        ("clientSecret", provider.client_secret)) if not v}
            problems |= _provider_problems(provider)
            if not problems and provider.name in seen:
                problems = {"name": error_item("validation_duplicated_provider",
                                               f"The provider {provider.name} is already registered.",
                                               {"name": provider.name})}
            seen.add(provider.name)
            if problems:
                provider_errors[str(index)] = problems
        if provider_errors:
            errors["oauth2"] = {"providers": provider_errors}
    otp = options.otp
    otp_errors: dict[str, Any] = {}
    if otp.enabled:
        if not otp.duration:
            otp_errors["duration"] = dict(REQUIRED)
        elif not 10 <= otp.duration <= 86400:
            otp_errors["duration"] = _range_item(otp.duration, 10, 86400)
        if not otp.length:
            otp_errors["length"] = dict(REQUIRED)
        elif otp.length < 4:
            otp_errors["length"] = _range_item(otp.length, 4, None)
    template = template_errors(otp.email_template)
    if template:
        otp_errors["emailTemplate"] = template
    if otp_errors:
        errors["otp"] = otp_errors
    mfa = options.mfa
    if mfa.enabled:
        if not mfa.duration:
            errors["mfa"] = {"duration": dict(REQUIRED)}
        elif not 10 <= mfa.duration <= 86400:
            errors["mfa"] = {"duration": _range_item(mfa.duration, 10, 86400)}
    for key in TOKEN_KEYS:
        token = options.tokens[key]
        token_errors: dict[str, Any] = {}
        if not token.secret:
            token_errors["secret"] = dict(REQUIRED)
        elif not 30 <= len(token.secret.encode()) <= 255:
            token_errors["secret"] = error_item("validation_length_out_of_range",
                                                "the length must be between 30 and 255", {"min": 30, "max": 255})
        if not token.duration:
            token_errors["duration"] = dict(REQUIRED)
        elif not 10 <= token.duration <= MAX_TOKEN_DURATION:
            token_errors["duration"] = _range_item(token.duration, 10, MAX_TOKEN_DURATION)
        if token_errors:
            errors[key] = token_errors
    for key in TEMPLATE_KEYS:
        problems = template_errors(options.templates[key])
        if problems:
            errors[key] = problems
    if errors:
        return errors
    if mfa.enabled:
        enabled = sum(1 for on in (options.password_auth.enabled, oauth2.enabled, otp.enabled) if on)
        if enabled < 2:
            return {"mfa": {"enabled": error_item("validation_mfa_not_enough_auths",
                                                  "MFA requires at least 2 auth methods to be enabled.")}}
        if mfa.rule:
            problem = _check_rule(check_rule, collection, mfa.rule, others)
            previous_rule = original_options.mfa.rule if original_options is not None else None
            if problem is None and system_original and previous_rule != mfa.rule:
                problem = error_item("validation_collection_system_rule_change",
                                     "System collection API rule cannot be changed.")
            if problem:
                return {"mfa": {"rule": problem}}
    if options.password_auth.enabled:
        for name in dict.fromkeys(options.password_auth.identity_fields):
            if collection.field(name) is None:
                return {"passwordAuth": {"identityFields": error_item(
                    "validation_missing_field", f"Invalid or missing field {name}", {"fieldName": name})}}
            if single_column_unique_index(collection.indexes, name) is None:
                return {"passwordAuth": {"identityFields": error_item(
                    "validation_missing_unique_constraint", f"The field {name} doesn't have a UNIQUE constraint.",
                    {"fieldName": name})}}
    return {}


def _range_item(value: int, low: int, high: int | None) -> dict[str, Any]:
    if value < low:
        return error_item("validation_min_greater_equal_than_required", f"must be no less than {low}", {"threshold": low})
    return error_item("validation_max_less_equal_than_required", f"must be no greater than {high}", {"threshold": high})


def validate_collection(conn: apsw.Connection, collection: Collection, original: Collection | None,
                        others: CollectionMap, check_rule: RuleChecker) -> dict[str, Any]:
    """PocketBase's collection validator: ``{key: error item or nested errors}`` (empty when valid); API
    rules are checked with ``check_rule``."""
    errors: dict[str, Any] = {}
    if not collection.id:
        errors["id"] = dict(REQUIRED)
    elif original is None:
        if len(collection.id.encode()) > 100:
            errors["id"] = error_item("validation_length_out_of_range", "the length must be between 1 and 100",
                                 {"min": 1, "max": 100})
        elif not _NAME_RE.fullmatch(collection.id):
            errors["id"] = error_item("validation_match_invalid", "must be in a valid format")
        elif conn.execute("SELECT 1 FROM _collections WHERE id = ? LIMIT 1", (collection.id,)).fetchone():
            errors["id"] = error_item("validation_invalid_or_existing_id", "The model id is invalid or already exists.")
    elif collection.id != original.id:
        errors["id"] = error_item("validation_values_mismatch", "Values don't match.")
    if original is not None and collection.system != original.system:
        errors["system"] = error_item("validation_collection_system_flag_change", "System collection state cannot be changed.")
    if not collection.type:
        errors["type"] = dict(REQUIRED)
    elif collection.type not in COLLECTION_TYPES:
        errors["type"] = error_item("validation_in_invalid", "must be a valid value")
    elif original is not None and collection.type != original.type:
        errors["type"] = error_item("validation_collection_type_change", "Collection type cannot be changed.")
    name_error = _validate_name(conn, collection, original, others)
    if name_error:
        errors["name"] = name_error
    fields_error = _validate_fields(collection, original, others)
    if fields_error:
        errors["fields"] = fields_error
    for key in RULE_KEYS:
        value = getattr(collection, key)
        problem = None
        if collection.type == "view" and key in ("createRule", "updateRule", "deleteRule") and value is not None:
            problem = error_item("validation_nil", "must be blank")
        problem = problem or _check_rule(check_rule, collection, value, others)
        if problem is None and original is not None and original.system and getattr(original, key) != value:
            problem = error_item("validation_collection_system_rule_change", "System collection API rule cannot be changed.")
        if problem:
            errors[key] = problem
    index_error = _validate_indexes(conn, collection, original)
    if index_error:
        errors["indexes"] = index_error
    if collection.type == "auth":
        errors.update(_validate_auth_options(collection, original, others, check_rule))
    return errors


def _provider_problems(provider: OAuth2Provider) -> dict[str, Any]:
    """PocketBase's checks of a provider config: a name it knows, and URLs where URLs are overridden."""
    from pbfast.pocketbase.oauth2.providers import CATALOG  # the catalog imports the collections' options

    problems: dict[str, Any] = {}
    if provider.name and provider.name not in CATALOG:
        problems["name"] = error_item("validation_missing_provider",
                                      f"Invalid or missing provider with name {provider.name}.",
                                      {"name": provider.name})
    for key, url in (("authURL", provider.auth_url), ("tokenURL", provider.token_url),
                     ("userInfoURL", provider.user_info_url)):
        if url and not is_url(url):
            problems[key] = error_item("validation_is_url", "Must be a valid URL.")
    return problems
