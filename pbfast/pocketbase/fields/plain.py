"""What the plain text-like fields (email, url, editor) share: a string value, blank unless required; and
what email and url share: a format check and ``onlyDomains``/``exceptDomains`` lists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from pbfast.pocketbase.fields.base import Field, Kind, SettingsContext, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, required
from pbfast.pocketbase.fields.validators import check_domain_lists
from pbfast.pocketbase.gocompat import cast_to_string, stored_to_string

__all__ = ["DomainRestrictedField", "PlainTextField"]


@dataclass(eq=True, kw_only=True)
class PlainTextField(Field):
    """A field holding one string; subclasses check a non-blank value in :meth:`check`."""

    def typed(self, stored: Stored) -> str:
        if type(stored) is str:
            return stored
        return stored_to_string(stored) or ""

    def cast_raw(self, raw: object) -> Stored:
        return cast_to_string(raw)

    def typed_input(self, raw: object) -> str:
        return cast_to_string(raw)

    def finish(self, value: str) -> Stored:
        text = str(value)
        if getattr(self, "required", False) and text == "":
            raise required()
        if text != "":
            self.check(text)
        return text

    def check(self, text: str) -> None:
        """Validate a non-blank value."""


@dataclass(eq=True, kw_only=True)
class DomainRestrictedField(PlainTextField):
    """A value with a domain (email, url): its format, then its domain against the field's lists.
    Subclasses set the checks and PocketBase's error codes and messages."""

    INVALID: ClassVar[tuple[str, str]] = ("", "")  # code, message of a malformed value
    NOT_ALLOWED: ClassVar[tuple[str, str]] = ("", "")  # code, message of a domain the lists refuse

    except_domains: list[str] = option("exceptDomains", Kind.STRLIST)
    help: str = option("help", Kind.STR)
    only_domains: list[str] = option("onlyDomains", Kind.STRLIST)
    required: bool = option("required", Kind.BOOL)

    def well_formed(self, text: str) -> bool:
        raise NotImplementedError

    def domain_of(self, text: str) -> str:
        raise NotImplementedError

    def check(self, text: str) -> None:
        if not self.well_formed(text):
            raise FieldError(*self.INVALID)
        domain = self.domain_of(text)
        if (self.only_domains and domain not in self.only_domains) or \
                (self.except_domains and domain in self.except_domains):
            raise FieldError(*self.NOT_ALLOWED)

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        check_domain_lists(self.except_domains, self.only_domains, put)
