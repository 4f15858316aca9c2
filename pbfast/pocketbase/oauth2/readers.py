"""How each provider's answers become PocketBase's ``AuthUser`` (each provider's ``FetchAuthUser`` in 0.40's
``tools/auth``), in one place: :data:`READERS` maps every provider name of the catalog to its reader.

Providers whose user answer maps field by field are plain data (:class:`Fields`: where each value is, which
flags vouch for the email, which value the account status must have, extra headers or a GraphQL query);
those with more logic have a small function each (extra requests for the email, id_tokens, built avatar URLs).
``email`` is only ever the address the provider vouches for: a provider whose email PocketBase does not trust
(Spotify, Strava, Lark, Planning Center...) gives none. The answers are read as Go's ``encoding/json/v2``
reads them into the provider's struct (:mod:`pbfast.pocketbase.oauth2.user_json`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from pbfast.pocketbase.fields.validators import is_email
from pbfast.pocketbase.gocompat import cast_to_bool, cast_to_string
from pbfast.pocketbase.gocompat.json_numbers import go_format_float
from pbfast.pocketbase.gocompat.strconv import trim_space
from pbfast.pocketbase.oauth2.calls import ExchangeError, IdTokenCheck, ProviderCalls
from pbfast.pocketbase.oauth2.user_json import DecodeError, Kind, decode, objects, parse, parse_object

__all__ = ["APPLE_ISSUER", "APPLE_JWKS_URL", "READERS", "ProviderUser", "Reader"]

APPLE_ISSUER: Final = "https://appleid.apple.com"
APPLE_JWKS_URL: Final = "https://appleid.apple.com/auth/keys"
GITEE_EMAILS_URL: Final = "https://gitee.com/api/v5/emails"  # PocketBase asks this one whatever the config says


@dataclass(frozen=True, slots=True)
class ProviderUser:
    """What a reader makes of the provider's answers (the token fields are added by the caller)."""

    id: str
    name: str = ""
    username: str = ""
    email: str = ""  # only when the provider vouches for it
    avatar_url: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


Reader = Callable[[ProviderCalls], ProviderUser]
F = tuple[str, ...]  # a field's path in the answer
_STRING: Final[Kind] = "string"
_BOOL: Final[Kind] = "bool"


def _strings(*keys: str, under: F = ()) -> dict[F, Kind]:
    """String fields ``keys`` of the object at ``under``."""
    return {(*under, key): _STRING for key in keys}


@dataclass(frozen=True, slots=True)
class Fields:
    """A provider whose user info answer maps field by field (empty path: not given)."""

    id: F
    name: F = ()
    username: F = ()
    avatar_url: F = ()
    email: F = ()
    email_if: tuple[F, ...] = ()  # bools that must all be true for the email to be trusted
    status: tuple[F, Kind, object] = ((), "string", None)  # refused unless this field has this value
    also: tuple[tuple[F, Kind], ...] = ()  # fields PocketBase's struct declares without using (decoded all the same)
    headers: tuple[tuple[str, str], ...] = ()  # "{clientId}" is replaced by the client id
    graphql: bytes | None = None  # the user info is a GraphQL query (POST)
    id_kind: Kind = "string"  # "int64": a JSON integer, given as its decimal text

    def __call__(self, calls: ProviderCalls) -> ProviderUser:
        headers = {name: value.replace("{clientId}", calls.provider.client_id) for name, value in self.headers}
        try:
            raw = parse_object(calls.user_info(headers, self.graphql))
        except DecodeError as err:
            raise ExchangeError(str(err)) from err
        kinds: dict[F, Kind] = {path: _STRING for path in (self.name, self.username, self.avatar_url,
                                                              self.email) if path}
        kinds[self.id] = self.id_kind
        kinds |= {path: _BOOL for path in self.email_if}
        kinds |= dict(self.also)
        status_path, status_kind, active = self.status
        if status_path:
            kinds[status_path] = status_kind
        values = _decoded(raw, kinds)
        if status_path and values[status_path] != active:
            raise ExchangeError("the provider's user account is not active")
        vouched = all(values[path] for path in self.email_if)

        def text(path: F) -> str:
            return str(values[path]) if path else ""

        return ProviderUser(text(self.id), text(self.name), text(self.username),
                            text(self.email) if vouched else "", text(self.avatar_url), raw)


def _decoded(raw: Any, kinds: dict[F, Kind]) -> dict[F, Any]:
    try:
        return decode(raw, kinds)
    except DecodeError as err:
        raise ExchangeError(str(err)) from err


def _user_info(calls: ProviderCalls, kinds: dict[F, Kind], headers: dict[str, str] | None = None,
               ) -> tuple[dict[str, Any], dict[F, Any]]:
    try:
        raw = parse_object(calls.user_info(headers))
    except DecodeError as err:
        raise ExchangeError(str(err)) from err
    return raw, _decoded(raw, kinds)


def _listed(value: Any, path: F, kinds: dict[F, Kind]) -> list[dict[F, Any]]:
    try:
        return objects(value, path, kinds)
    except DecodeError as err:
        raise ExchangeError(str(err)) from err


# --- providers that ask for the email separately -----------------------------------------------------------

_PRIMARY_VERIFIED: Final[dict[F, Kind]] = {("email",): "string", ("verified",): "bool", ("primary",): "bool"}


def _verified_primary_email(calls: ProviderCalls, url: str) -> str:
    """GitHub's and Gitea's ``/emails``: the primary verified address ("" when none or not allowed)."""
    answer = calls.get(url)
    if answer.status in (401, 403, 404):
        return ""
    try:
        emails = _listed(parse(answer.body), (), _PRIMARY_VERIFIED)
    except DecodeError as err:
        raise ExchangeError(str(err)) from err
    return next((e[("email",)] for e in emails if e[("verified",)] and e[("primary",)]), "")


def github(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, {("name",): "string", ("login",): "string", ("avatar_url",): "string",
                                   ("id",): "int64"})
    email = _verified_primary_email(calls, calls.provider.user_info_url + "/emails")
    return ProviderUser(str(user[("id",)]), user[("name",)], user[("login",)], email, user[("avatar_url",)], raw)


def gitea(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, {("full_name",): "string", ("login",): "string", ("avatar_url",): "string",
                                   ("id",): "int64", ("active",): "bool"})
    if not user[("active",)]:
        raise ExchangeError("user account is not active")
    email = _verified_primary_email(calls, calls.provider.user_info_url + "/emails")
    return ProviderUser(str(user[("id",)]), user[("full_name",)], user[("login",)], email, user[("avatar_url",)], raw)


def gitee(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, {("login",): "string", ("name",): "string", ("email",): "string",
                                   ("avatar_url",): "string", ("id",): "int64"})
    email = user[("email",)]
    if not (email and is_email(email)):
        email = _gitee_primary_email(calls)
    return ProviderUser(str(user[("id",)]), user[("name",)], user[("login",)], email, user[("avatar_url",)], raw)


def _gitee_primary_email(calls: ProviderCalls) -> str:
    answer = calls.get(GITEE_EMAILS_URL)
    if answer.status in (401, 403, 404):
        return ""
    try:  # an answer it cannot read ("keep my email address private") means no email
        emails = objects(parse(answer.body), (), {("email",): "string", ("state",): "string", ("scope",): "any"})
        for entry in emails:  # Go's []string: every item of every entry a string (or null)
            scopes = entry[("scope",)]
            if scopes is not None and not (isinstance(scopes, list) and
                                           all(s is None or isinstance(s, str) for s in scopes)):
                raise DecodeError("scope is not a list of strings")
    except DecodeError:
        return ""
    return next((str(e[("email",)]) for e in emails if e[("state",)] == "confirmed"
                 and "primary" in (e[("scope",)] or []) and is_email(e[("email",)])), "")


def bitbucket(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, {("uuid",): "string", ("username",): "string", ("display_name",): "string",
                                   ("account_status",): "string", ("links", "avatar", "href"): "string"})
    if user[("account_status",)] != "active":
        raise ExchangeError("the Bitbucket user is not active")
    answer = calls.get(calls.provider.user_info_url + "/emails")
    email = ""
    if answer.status < 400:
        try:
            values = objects(parse(answer.body), ("values",), {("email",): "string", ("is_primary",): "bool",
                                                               ("is_confirmed",): "bool"})
        except DecodeError as err:
            raise ExchangeError(str(err)) from err
        email = next((v[("email",)] for v in values if v[("is_primary",)] and v[("is_confirmed",)]), "")
    return ProviderUser(user[("uuid",)], user[("display_name",)], user[("username",)], email,
                        user[("links", "avatar", "href")], raw)


# --- providers that build a value -------------------------------------------------------------------------

def discord(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, _strings("id", "global_name", "username", "discriminator", "avatar", "email") | {("verified",): "bool"})
    user_id, avatar = user[("id",)], user[("avatar",)]
    avatar_url = f"https://cdn.discordapp.com/avatars/{user_id}/{avatar}.png" if avatar else ""
    name = user[("global_name",)]
    if not name:
        discriminator = user[("discriminator",)]
        name = user[("username",)] + (f"#{discriminator}" if discriminator not in ("", "0") else "")
    return ProviderUser(user_id, name, user[("username",)], user[("email",)] if user[("verified",)] else "",
                        avatar_url, raw)


def gitlab(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, {("name",): "string", ("username",): "string", ("email",): "string",
                                   ("avatar_url",): "string", ("confirmed_at",): "string", ("id",): "int64"})
    confirmed = _rfc3339(user[("confirmed_at",)])
    vouched = confirmed is not None and confirmed != datetime(1, 1, 1, tzinfo=confirmed.tzinfo)
    return ProviderUser(str(user[("id",)]), user[("name",)], user[("username",)],
                        user[("email",)] if vouched else "", user[("avatar_url",)], raw)


_RFC3339: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _rfc3339(text: str) -> datetime | None:
    """Go's ``time.Parse(time.RFC3339, text)`` (None: it fails)."""
    if not _RFC3339.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def spotify(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, {("id",): "string", ("display_name",): "string"})
    images = _listed(raw, ("images",), {("url",): "string"})
    return ProviderUser(user[("id",)], user[("display_name",)], avatar_url=images[0][("url",)] if images else "",
                        raw=raw)


def twitch(calls: ProviderCalls) -> ProviderUser:
    try:
        raw = parse_object(calls.user_info({"Client-Id": calls.provider.client_id}))
    except DecodeError as err:
        raise ExchangeError(str(err)) from err
    users = _listed(raw, ("data",), _strings("id", "login", "display_name", "email", "profile_image_url"))
    if not users:
        raise ExchangeError("failed to fetch AuthUser data")
    first = users[0]
    return ProviderUser(first[("id",)], first[("display_name",)], first[("login",)], first[("email",)],
                        first[("profile_image_url",)], raw)


def strava(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, {("id",): "int64", ("firstname",): "string", ("lastname",): "string",
                                   ("username",): "string", ("profile",): "string"})
    user_id = user[("id",)]
    return ProviderUser(str(user_id) if user_id else "", f"{user[('firstname',)]} {user[('lastname',)]}",
                        user[("username",)], "", user[("profile",)], raw)


def vk(calls: ProviderCalls) -> ProviderUser:
    try:
        raw = parse_object(calls.user_info())
    except DecodeError as err:
        raise ExchangeError(str(err)) from err
    entries = _listed(raw, ("response",), {("id",): "int64", ("first_name",): "string", ("last_name",): "string",
                                            ("screen_name",): "string", ("photo_max",): "string"})
    if not entries:
        raise ExchangeError("missing response entry")
    first = entries[0]
    email = calls.token.extra_value("email")  # VK gives the email with the token
    name = trim_space(f"{first[('first_name',)]} {first[('last_name',)]}")
    return ProviderUser(str(first[("id",)]), name, first[("screen_name",)],
                        "" if email is None else _go_sprint(email), first[("photo_max",)], raw)


def _go_sprint(value: Any) -> str:
    """``fmt.Sprint`` of a decoded JSON value (containers only approximately: they are no email anyway)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return go_format_float(float(value), "g")
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def wakatime(calls: ProviderCalls) -> ProviderUser:
    fields: dict[F, Kind] = _strings("id", "display_name", "username", "email", "photo", under=("data",))
    raw, user = _user_info(calls, fields | {("data", "photo_public"): "bool", ("data", "is_email_confirmed"): "bool"})
    return ProviderUser(user[("data", "id")], user[("data", "display_name")], user[("data", "username")],
                        user[("data", "email")] if user[("data", "is_email_confirmed")] else "",
                        user[("data", "photo")] if user[("data", "photo_public")] else "", raw)


def yandex(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, _strings("id", "real_name", "login", "default_email", "default_avatar_id")
                           | {("is_avatar_empty",): "bool"})
    avatar = "" if user[("is_avatar_empty",)] else \
        f"https://avatars.yandex.net/get-yapic/{user[('default_avatar_id',)]}/islands-200"
    return ProviderUser(user[("id",)], user[("real_name",)], user[("login",)], user[("default_email",)], avatar, raw)


def mailcow(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, _strings("id", "username", "email", "full_name")
                           | {("active",): "int64"})
    if user[("active",)] != 1:
        raise ExchangeError("the mailcow user is not active")
    return ProviderUser(user[("id",)], user[("full_name",)], user[("username",)].split("@", 1)[0],
                        user[("email",)], "", raw)


def instagram(calls: ProviderCalls) -> ProviderUser:
    raw, user = _user_info(calls, _strings("user_id", "name", "username", "profile_picture_url"))
    permissions = calls.token.extra_value("permissions")
    if "permissions" not in raw and permissions is not None:
        raw["permissions"] = permissions  # the token answer lists them
    return ProviderUser(user[("user_id",)], user[("name",)], user[("username",)], "",
                        user[("profile_picture_url",)], raw)


# --- id_token providers -----------------------------------------------------------------------------------

_OIDC_FIELDS: Final[dict[F, Kind]] = _strings("sub", "name", "preferred_username", "picture", "email") | {
    ("email_verified",): "any"}


def oidc(calls: ProviderCalls) -> ProviderUser:
    """The user info URL's answer, or without one the id_token's claims (``issuers``/``jwksURL`` extra options)."""
    provider = calls.provider
    if provider.user_info_url:
        raw, user = _user_info(calls, _OIDC_FIELDS)
    else:
        issuers = provider.extra.get("issuers")
        jwks_url = provider.extra.get("jwksURL")
        raw = calls.id_token_claims(IdTokenCheck(
            issuers=tuple(_string_slice(issuers)),
            jwks_url=jwks_url if isinstance(jwks_url, str) else ""))
        user = _decoded(raw, _OIDC_FIELDS)
    return ProviderUser(user[("sub",)], user[("name",)], user[("preferred_username",)],
                        user[("email",)] if cast_to_bool(user[("email_verified",)]) else "", user[("picture",)], raw)


def _string_slice(value: Any) -> list[str]:
    """``cast.ToStringSlice``: a list item by item, a string split on white space."""
    if isinstance(value, list):
        return [cast_to_string(item) for item in value]
    return value.split() if isinstance(value, str) else []


def apple(calls: ProviderCalls) -> ProviderUser:
    """The id_token's claims, signed by Apple's published keys (pbfast: the ``jwksURL`` extra option names
    another key set, for a test or an Apple-compatible provider). The name Apple posts once to the redirect
    URL is added by the login (``record_auth_with_oauth2``)."""
    jwks_url = calls.provider.extra.get("jwksURL")
    raw = calls.id_token_claims(IdTokenCheck(
        issuers=(APPLE_ISSUER,), expiry_required=True,
        jwks_url=jwks_url if isinstance(jwks_url, str) and jwks_url else APPLE_JWKS_URL))
    user = _decoded(raw, {("sub",): "string", ("name",): "string", ("email",): "string", ("email_verified",): "any"})
    return ProviderUser(user[("sub",)], user[("name",)], "",
                        user[("email",)] if cast_to_bool(user[("email_verified",)]) else "", "", raw)


def microsoft(calls: ProviderCalls) -> ProviderUser:
    """Graph's ``/me``; the email is its ``mail``, or with the ``idTokenEmailClaim`` extra option a claim of
    the token answer's id_token (only ``iat`` checked: it came straight from the token endpoint)."""
    raw, user = _user_info(calls, {("id",): "string", ("displayName",): "string", ("mail",): "string"})
    claim = calls.provider.extra.get("idTokenEmailClaim")
    if claim not in ("any_verified", "verified_primary_email", "email_and_xms_edov", "email"):
        email = user[("mail",)]
    else:
        try:
            claims = calls.id_token_claims(IdTokenCheck(audience=False))
        except ExchangeError:
            claims = {}

        def text(name: str) -> str:
            value = claims.get(name)
            return value if isinstance(value, str) else ""

        primary = text("verified_primary_email")
        edov = text("email") if cast_to_bool(claims.get("xms_edov")) else ""
        email = {"any_verified": primary or edov, "verified_primary_email": primary, "email_and_xms_edov": edov,
                 "email": text("email")}[str(claim)]
    return ProviderUser(user[("id",)], user[("displayName",)], "", email, "", raw)


# --- the catalog's readers --------------------------------------------------------------------------------

_LINEAR_QUERY: Final = b'{"query": "query Me { viewer { id displayName name email avatarUrl active } }"}'
_MONDAY_QUERY: Final = b'{"query": "query { me { id enabled name email is_verified photo_small }}"}'
_NOTION_USER: Final = ("bot", "owner", "user")

READERS: Final[dict[str, Reader]] = {
    "apple": apple,
    "bitbucket": bitbucket,
    "box": Fields(("id",), ("name",), avatar_url=("avatar_url",), email=("login",),  # Box logins are verified
                  status=(("status",), "string", "active")),
    "discord": discord,
    "facebook": Fields(("id",), ("name",), avatar_url=("picture", "data", "url"), email=("email",)),
    "gitea": gitea,
    "gitee": gitee,
    "github": github,
    "gitlab": gitlab,
    "google": Fields(("sub",), ("name",), avatar_url=("picture",), email=("email",), email_if=(("email_verified",),)),
    "instagram2": instagram,
    "kakao": Fields(("id",), username=("properties", "nickname"), avatar_url=("properties", "profile_image"),
                    id_kind="int64", email=("kakao_account", "email"),
                    email_if=(("kakao_account", "is_email_verified"), ("kakao_account", "is_email_valid"))),
    "lark": Fields(("data", "union_id"), ("data", "name"), avatar_url=("data", "avatar_url")),
    "linear": Fields(("data", "viewer", "id"), ("data", "viewer", "name"), ("data", "viewer", "displayName"),
                     ("data", "viewer", "avatarUrl"), ("data", "viewer", "email"),
                     status=(("data", "viewer", "active"), "bool", True), graphql=_LINEAR_QUERY),
    "livechat": Fields(("account_id",), ("name",), avatar_url=("avatar_url",), email=("email",),
                       email_if=(("email_verified",),)),
    "mailcow": mailcow,
    "microsoft": microsoft,
    "monday": Fields(("data", "me", "id"), ("data", "me", "name"), avatar_url=("data", "me", "photo_small"),
                     email=("data", "me", "email"), email_if=(("data", "me", "is_verified"),),
                     status=(("data", "me", "enabled"), "bool", True), graphql=_MONDAY_QUERY),
    "notion": Fields((*_NOTION_USER, "id"), (*_NOTION_USER, "name"), avatar_url=(*_NOTION_USER, "avatar_url"),
                     email=(*_NOTION_USER, "person", "email"),
                     also=tuple(_strings("avatar_url", "id", "name", "object", "request_id", "type").items())
                     + tuple(_strings("type", under=("bot", "owner")).items())
                     + tuple(_strings("workspace_name", under=("bot",)).items()),
                     headers=(("Notion-Version", "2022-06-28"),)),
    "oidc": oidc,
    "oidc2": oidc,
    "oidc3": oidc,
    "patreon": Fields(("data", "id"), ("data", "attributes", "full_name"), ("data", "attributes", "vanity"),
                      ("data", "attributes", "image_url"), ("data", "attributes", "email"),
                      email_if=(("data", "attributes", "is_email_verified"),)),
    # sic: PocketBase 0.40 reads "Attributes" (an untagged Go field, matched case-sensitively): a real Planning
    # Center answer ("attributes") leaves the status empty and the login is refused as with stock PocketBase
    "planningcenter": Fields(("data", "id"), ("data", "Attributes", "name"), avatar_url=("data", "Attributes", "avatar"),
                             status=(("data", "Attributes", "status"), "string", "active")),
    "spotify": spotify,
    "strava": strava,
    "trakt": Fields(("user", "ids", "uuid"), ("user", "name"), ("user", "username"),
                    ("user", "images", "avatar", "full"), also=((("user", "ids", "slug"), "string"),),
                    headers=(("Content-Type", "application/json"), ("trakt-api-key", "{clientId}"),
                             ("trakt-api-version", "2"))),
    "twitch": twitch,
    "twitter": Fields(("data", "id"), ("data", "name"), ("data", "username"), ("data", "profile_image_url"),
                      ("data", "confirmed_email")),
    "vk": vk,
    "wakatime": wakatime,
    "yandex": yandex,
}
