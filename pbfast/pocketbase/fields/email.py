"""The email field (PocketBase's ``core/field_email.go``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pbfast.pocketbase.fields.base import Kind, SettingsContext, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError
from pbfast.pocketbase.fields.plain import PlainTextField
from pbfast.pocketbase.fields.validators import check_domain_lists, email_domain, is_email

__all__ = ["EmailField"]


@dataclass(eq=True, kw_only=True)
class EmailField(PlainTextField):
    TYPE = "email"

    except_domains: list[str] = option("exceptDomains", Kind.STRLIST)
    help: str = option("help", Kind.STR)
    only_domains: list[str] = option("onlyDomains", Kind.STRLIST)
    required: bool = option("required", Kind.BOOL)

    def check(self, text: str) -> None:
        if not is_email(text):
            raise FieldError("validation_is_email", "must be a valid email address")
        domain = email_domain(text)
        if (self.only_domains and domain not in self.only_domains) or \
                (self.except_domains and domain in self.except_domains):
            raise FieldError("validation_email_domain_not_allowed", "Email domain is not allowed")

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        check_domain_lists(self.except_domains, self.only_domains, put)
