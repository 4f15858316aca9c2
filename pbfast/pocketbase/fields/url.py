"""The url field (PocketBase's ``core/field_url.go``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pbfast.pocketbase.fields.base import Kind, SettingsContext, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError
from pbfast.pocketbase.fields.plain import PlainTextField
from pbfast.pocketbase.fields.validators import check_domain_lists, is_url, url_host

__all__ = ["UrlField"]


@dataclass(eq=True, kw_only=True)
class UrlField(PlainTextField):
    TYPE = "url"

    except_domains: list[str] = option("exceptDomains", Kind.STRLIST)
    help: str = option("help", Kind.STR)
    only_domains: list[str] = option("onlyDomains", Kind.STRLIST)
    required: bool = option("required", Kind.BOOL)

    def check(self, text: str) -> None:
        if not is_url(text):
            raise FieldError("validation_invalid_url", "Must be a valid url")
        host = url_host(text)
        if (self.only_domains and host not in self.only_domains) or \
                (self.except_domains and host in self.except_domains):
            raise FieldError("validation_url_domain_not_allowed", "Url domain is not allowed")

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        check_domain_lists(self.except_domains, self.only_domains, put)
