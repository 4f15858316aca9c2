"""The url field (PocketBase's ``core/field_url.go``)."""

from __future__ import annotations

from dataclasses import dataclass

from pbfast.pocketbase.fields.plain import DomainRestrictedField
from pbfast.pocketbase.fields.validators import is_url, url_host

__all__ = ["UrlField"]


@dataclass(eq=True, kw_only=True)
class UrlField(DomainRestrictedField):
    TYPE = "url"
    INVALID = ("validation_invalid_url", "Must be a valid url")
    NOT_ALLOWED = ("validation_url_domain_not_allowed", "Url domain is not allowed")

    def well_formed(self, text: str) -> bool:
        return is_url(text)

    def domain_of(self, text: str) -> str:
        return url_host(text)
