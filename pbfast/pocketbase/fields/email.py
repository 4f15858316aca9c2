"""The email field (PocketBase's ``core/field_email.go``)."""

from __future__ import annotations

from dataclasses import dataclass

from pbfast.pocketbase.fields.plain import DomainRestrictedField
from pbfast.pocketbase.fields.validators import email_domain, is_email

__all__ = ["EmailField"]


@dataclass(eq=True, kw_only=True)
class EmailField(DomainRestrictedField):
    TYPE = "email"
    INVALID = ("validation_is_email", "must be a valid email address")
    NOT_ALLOWED = ("validation_email_domain_not_allowed", "Email domain is not allowed")

    def well_formed(self, text: str) -> bool:
        return is_email(text)

    def domain_of(self, text: str) -> str:
        return email_domain(text)
