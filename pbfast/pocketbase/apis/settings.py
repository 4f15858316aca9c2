"""``GET/PATCH /api/settings`` (PocketBase's ``apis/settings.go``): the tenant's application settings, for
superusers only, stored and validated as PocketBase does (:mod:`pbfast.pocketbase.app_settings`)."""

from __future__ import annotations

from typing import Final

from pbfast.http import ApiError
from pbfast.pocketbase import app_settings
from pbfast.pocketbase.apis.request import TenantRequest, read_body, require_superuser, send_with_fields

__all__ = ["settings_list", "settings_update"]

LOAD_FAILED: Final = "An error occurred while loading the submitted data."
SAVE_FAILED: Final = "An error occurred while saving the new settings."


def settings_list(request: TenantRequest) -> None:
    require_superuser(request)
    send_with_fields(request, app_settings.public_json(app_settings.load_document(request.tenant.conn)),
                     sort_keys=False)


def settings_update(request: TenantRequest) -> None:
    require_superuser(request)
    try:
        body = read_body(request, invalid=LOAD_FAILED)
    except ApiError as err:
        if err.status == 400:
            raise ApiError(400, LOAD_FAILED) from err
        raise
    conn = request.tenant.conn
    try:
        document = app_settings.merge_patch(app_settings.load_document(conn), body)
    except app_settings.LoadError as err:
        raise ApiError(400, LOAD_FAILED) from err
    errors = app_settings.validate(document)
    if errors:
        raise ApiError(400, SAVE_FAILED, errors)
    app_settings.save_document(conn, document)
    send_with_fields(request, app_settings.public_json(document), sort_keys=False)
