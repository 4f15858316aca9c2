"""The value validators PocketBase's email and url fields use (govalidator's ``IsEmail``/``IsURL``, ozzo's
``is.Domain``), reimplemented without the original regexes' backtracking blowups, and the domain list
settings both fields share."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from pbfast.pocketbase.fields.errors import ErrorItem, FieldError

__all__ = ["check_domain_lists", "email_domain", "is_domain", "is_email", "is_url", "url_host"]


_UNI = "\u00a1-\uffff"
_URL_IP = r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3]|24\d|25[0-5])(?:\.(?:\d{1,2}|1\d\d|2[0-4]\d|25[0-5])){2}" \
          r"(?:\.(?:[0-9]\d?|1\d\d|2[0-4]\d|25[0-5]))"
_ALNUM = "a-zA-Z0-9"
_URL_HOST = (
    r"(?:" + _URL_IP + r"|\[[0-9a-fA-F:.%]+\]|"
    r"(?:(?:[" + _ALNUM + r"](?:[" + _ALNUM + r"\-_]+)?[" + _ALNUM + r"](?:[-.][" + _ALNUM + r"]+)*)"
    r"|(?:www\.|[" + _ALNUM + r"](?:[-_.]?[" + _ALNUM + r"])*[" + _ALNUM + r"]\.[" + _ALNUM + r"]+))?"
    r"[a-zA-Z" + _UNI + r"0-9]+(?:--?[a-zA-Z" + _UNI + r"0-9]+)*(?:\.[a-zA-Z" + _UNI + r"]+)?)"
)
_URL_TAIL = re.compile(r"\.?(?::\d{1,5})?(?:[/?#]\S*)?")
_URL_HOST_RE = re.compile(_URL_HOST)
_URL_SCHEME = re.compile(r"(?:ftp|tcp|udp|wss?|https?)://")


def _ipv6_ok(bracketed: str) -> bool:
    import ipaddress  # noqa: PLC0415 - rare path
    inner = bracketed[1:-1].split("%", 1)[0]
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        return False
    return True


def is_url(value: str) -> bool:
    """govalidator's ``IsURL`` (used by PocketBase's url field), without its regex's backtracking blowups.

    Shape: ``[scheme://][user[:pass]@]host[.][:port][/path|?query|#fragment]`` where scheme is one of
    http(s), ftp, tcp, udp, ws(s); host an IPv4 address, a bracketed IPv6 address or a hostname whose
    labels are letters/digits (hyphens, and underscores in the leading labels, inside), a TLD of letters.
    """
    if not value or len(value) >= 2083 or len(value.encode()) <= 3 or value.startswith("."):
        return False
    probe = value
    if ":" in value and "://" not in value:
        probe = "http://" + value
    try:
        parts = urlsplit(probe)
        host = parts.netloc.rsplit("@", 1)[-1]
        if ":" in host and not host.endswith("]"):
            port = host.rsplit(":", 1)[1]
            if port and not port.isdigit():
                return False
    except ValueError:
        host = None
        if "[" not in probe:
            return False
    if host is not None:
        if host.startswith("."):
            return False
        if not parts.netloc and parts.path and "." not in parts.path:
            return False
    rest = value
    scheme = _URL_SCHEME.match(rest)
    if scheme:
        rest = rest[scheme.end():]
    candidates = [rest]
    # optional "user[:password]@" prefix: every "@" could end it (the regex backtracks over them)
    for index, char in enumerate(rest):
        if char == "@" and index > 0 and not any(c.isspace() for c in rest[:index]):
            candidates.append(rest[index + 1:])
    for candidate in candidates:
        for match_end in _host_match_ends(candidate):
            if _URL_TAIL.fullmatch(candidate, match_end):
                return True
    return False


def _host_match_ends(text: str) -> Iterable[int]:
    """Every end position at which a valid URL host could stop in ``text`` (host is a prefix)."""
    # the host cannot contain these characters; limit the regex to the plausible host region
    stop = len(text)
    for index, char in enumerate(text):
        if char in ":/?#" or char.isspace():
            stop = index
            break
    region = text[:stop]
    if region.startswith("["):
        close = region.find("]")
        if close == -1:
            close = text.find("]")
            if close == -1:
                return
        if _ipv6_ok(text[:close + 1]):
            yield close + 1
        return
    # the host may be followed by an optional "." before the port/path: try the full region and the
    # region without one trailing dot
    for end in (len(region), len(region) - 1):
        if end > 0 and _URL_HOST_RE.fullmatch(region, 0, end):
            yield end


_EMAIL_LOCAL_CHAR = r"[a-zA-Z0-9!#$%&'*+\-/=?^_`{|}~\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef]"
_EMAIL_LOCAL = re.compile(_EMAIL_LOCAL_CHAR + r"+(?:\." + _EMAIL_LOCAL_CHAR + r"+)*")
_EMAIL_QUOTED = re.compile(
    r'"(?:(?:[ \t]*\r\n)?[ \t]+)?(?:(?:[\x01-\x08\x0b\x0c\x0e-\x1f\x7f\x21\x23-\x5b\x5d-\x7e'
    r"\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef]|\\[\x01-\x09\x0b\x0c\x0d-\x7f\u00a0-\ud7ff\uf900-\ufdcf"
    r'\ufdf0-\uffef])(?:(?:[ \t]*\r\n)?[ \t]+)?)*"'
)
_DOMAIN_CHAR = "a-zA-Z0-9\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef"
_TLD_CHAR = "a-zA-Z\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef"
_EMAIL_DOMAIN_PREFIX = re.compile(r"[" + _DOMAIN_CHAR + r"](?:[" + _DOMAIN_CHAR + r"\-._~]*[" + _DOMAIN_CHAR + r"])?\.")
_EMAIL_TLD = re.compile(r"[" + _TLD_CHAR + r"](?:[" + _TLD_CHAR + r"0-9\-_~]*[" + _TLD_CHAR + r"])?\.?")


def is_email(value: str) -> bool:
    """govalidator's ``IsEmail`` (ozzo ``is.EmailFormat``): RFC 5322-ish local part, dotted domain whose
    last label is letters only. Implemented without the original regex's backtracking blowups."""
    if value.startswith('"'):
        quoted = _EMAIL_QUOTED.match(value)
        if not quoted or value[quoted.end():quoted.end() + 1] != "@":
            return False
        domain = value[quoted.end() + 1:]
    else:
        local, at, domain = value.partition("@")
        if not at or not _EMAIL_LOCAL.fullmatch(local):
            return False
    if not domain:
        return False
    for index, char in enumerate(domain):
        if char == "." and index + 1 < len(domain):
            if _EMAIL_DOMAIN_PREFIX.fullmatch(domain, 0, index + 1) and _EMAIL_TLD.fullmatch(domain, index + 1):
                return True
    return False


_DOMAIN = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+(?:[a-zA-Z]{1,63}| xn--[a-z0-9]{1,59})")


def is_domain(value: str) -> bool:
    """ozzo's ``is.Domain``."""
    return len(value) <= 255 and _DOMAIN.fullmatch(value) is not None


def email_domain(value: str) -> str:
    return value[value.rfind("@") + 1:]


def url_host(value: str) -> str:
    """The ``Host`` (host[:port]) Go's ``url.Parse`` gives for ``value``."""
    try:
        return urlsplit(value).netloc.rsplit("@", 1)[-1]
    except ValueError:
        return ""


def check_domain_lists(except_domains: list[str], only_domains: list[str],
                       put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
    """``exceptDomains`` and ``onlyDomains`` settings: not both, and valid domains."""
    for key, values, other in (("exceptDomains", except_domains, only_domains),
                               ("onlyDomains", only_domains, except_domains)):
        if other:
            if values:
                put(key, FieldError("validation_empty", "must be blank").to_dict())
            continue
        for index, domain in enumerate(values):
            if not is_domain(domain):
                put(key, {str(index): FieldError("validation_is_domain", "must be a valid domain").to_dict()})
                break
