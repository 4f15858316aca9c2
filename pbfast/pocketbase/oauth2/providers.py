"""The OAuth2 providers an auth collection may configure (PocketBase 0.40's ``tools/auth``): their defaults
(:data:`CATALOG`: display name, scopes, URLs, PKCE), overridden by the collection's provider config as its
``InitProvider`` does (:func:`resolve`), and the login links ``auth-methods`` gives for them
(:func:`provider_info`). How each provider's user answer becomes PocketBase's ``AuthUser`` is in
:mod:`pbfast.pocketbase.oauth2.readers`. The providers' order and logos as PocketBase lists them are data
(``provider_logos.json``, taken from the stock binary's answer: :func:`provider_list`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote_plus

from pbfast.pocketbase.collections.auth_options import OAuth2Provider
from pbfast.pocketbase.gocompat import cast_to_string

__all__ = ["CATALOG", "Provider", "ProviderDefaults", "ProviderInfo", "logo", "provider_info", "provider_list",
           "random_string", "resolve", "s256_challenge"]

_ALPHANUMERIC: Final = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class ProviderDefaults:
    display_name: str
    scopes: tuple[str, ...]
    auth_url: str = ""
    token_url: str = ""
    user_info_url: str = ""
    pkce: bool = True
    extra_params: tuple[tuple[str, str], ...] = ()  # added to the login link (Apple wants its answer POSTed)
    openid_with: str = ""  # an extra option that, when set, adds the "openid" scope (Microsoft's id_token email)


def _defaults(display_name: str, scopes: tuple[str, ...], auth_url: str = "", token_url: str = "",
              user_info_url: str = "", *, pkce: bool = True) -> ProviderDefaults:
    return ProviderDefaults(display_name, scopes, auth_url, token_url, user_info_url, pkce)


_OIDC: Final = _defaults("OIDC", ("openid", "email", "profile"))

CATALOG: Final[dict[str, ProviderDefaults]] = {
    "apple": ProviderDefaults("Apple", ("name", "email"), "https://appleid.apple.com/auth/authorize",
                              "https://appleid.apple.com/auth/token", extra_params=(("response_mode", "form_post"),)),
    "bitbucket": _defaults("Bitbucket", ("account",), "https://bitbucket.org/site/oauth2/authorize",
                           "https://bitbucket.org/site/oauth2/access_token", "https://api.bitbucket.org/2.0/user",
                           pkce=False),
    "box": _defaults("Box", ("root_readonly",), "https://account.box.com/api/oauth2/authorize",
                     "https://api.box.com/oauth2/token", "https://api.box.com/2.0/users/me"),
    "discord": _defaults("Discord", ("identify", "email"), "https://discord.com/api/oauth2/authorize",
                         "https://discord.com/api/oauth2/token", "https://discord.com/api/users/@me"),
    "facebook": _defaults("Facebook", ("email",), "https://www.facebook.com/v3.2/dialog/oauth",
                          "https://graph.facebook.com/v3.2/oauth/access_token",
                          "https://graph.facebook.com/me?fields=name,email,picture.type(large)"),
    "gitea": _defaults("Gitea/Forgejo", ("read:user", "user:email"), "https://gitea.com/login/oauth/authorize",
                       "https://gitea.com/login/oauth/access_token", "https://gitea.com/api/v1/user"),
    "gitee": _defaults("Gitee", ("user_info", "emails"), "https://gitee.com/oauth/authorize",
                       "https://gitee.com/oauth/token", "https://gitee.com/api/v5/user"),
    "github": _defaults("GitHub", ("read:user", "user:email"), "https://github.com/login/oauth/authorize",
                        "https://github.com/login/oauth/access_token", "https://api.github.com/user"),
    "gitlab": _defaults("GitLab", ("read_user",), "https://gitlab.com/oauth/authorize",
                        "https://gitlab.com/oauth/token", "https://gitlab.com/api/v4/user"),
    "google": _defaults("Google", ("https://www.googleapis.com/auth/userinfo.profile",
                                   "https://www.googleapis.com/auth/userinfo.email"),
                        "https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
                        "https://www.googleapis.com/oauth2/v3/userinfo"),
    "instagram2": _defaults("Instagram", ("instagram_business_basic",), "https://www.instagram.com/oauth/authorize",
                            "https://api.instagram.com/oauth/access_token",
                            "https://graph.instagram.com/me?fields=id,username,account_type,user_id,name,"
                            "profile_picture_url,followers_count,follows_count,media_count"),
    "kakao": _defaults("Kakao", ("account_email", "profile_nickname", "profile_image"),
                       "https://kauth.kakao.com/oauth/authorize", "https://kauth.kakao.com/oauth/token",
                       "https://kapi.kakao.com/v2/user/me"),
    "lark": _defaults("Lark", (), "https://accounts.feishu.cn/open-apis/authen/v1/authorize",
                      "https://open.feishu.cn/open-apis/authen/v2/oauth/token",
                      "https://open.feishu.cn/open-apis/authen/v1/user_info"),
    "linear": _defaults("Linear", ("read",), "https://linear.app/oauth/authorize", "https://api.linear.app/oauth/token",
                        "https://api.linear.app/graphql", pkce=False),
    "livechat": _defaults("LiveChat", (), "https://accounts.livechat.com/", "https://accounts.livechat.com/token",
                          "https://accounts.livechat.com/v2/accounts/me"),
    "mailcow": _defaults("mailcow", ("profile",)),  # self-hosted: the config gives its URLs
    "microsoft": ProviderDefaults("Microsoft", ("User.Read",),
                                  "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                                  "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                                  "https://graph.microsoft.com/v1.0/me", openid_with="idTokenEmailClaim"),
    "monday": _defaults("monday.com", ("me:read",), "https://auth.monday.com/oauth2/authorize",
                        "https://auth.monday.com/oauth2/token", "https://api.monday.com/v2"),
    "notion": _defaults("Notion", (), "https://api.notion.com/v1/oauth/authorize", "https://api.notion.com/v1/oauth/token",
                        "https://api.notion.com/v1/users/me"),
    "oidc": _OIDC,
    "oidc2": _OIDC,
    "oidc3": _OIDC,
    "patreon": _defaults("Patreon", ("identity", "identity[email]"), "https://www.patreon.com/oauth2/authorize",
                         "https://www.patreon.com/api/oauth2/token",
                         "https://www.patreon.com/api/oauth2/v2/identity?fields%5Buser%5D=full_name,email,vanity,"
                         "image_url,is_email_verified"),
    "planningcenter": _defaults("Planning Center", ("people",), "https://api.planningcenteronline.com/oauth/authorize",
                                "https://api.planningcenteronline.com/oauth/token",
                                "https://api.planningcenteronline.com/people/v2/me"),
    "spotify": _defaults("Spotify", ("user-read-private",), "https://accounts.spotify.com/authorize",
                         "https://accounts.spotify.com/api/token", "https://api.spotify.com/v1/me"),
    "strava": _defaults("Strava", ("profile:read_all",), "https://www.strava.com/oauth/authorize",
                        "https://www.strava.com/api/v3/oauth/token", "https://www.strava.com/api/v3/athlete"),
    "trakt": _defaults("Trakt", (), "https://trakt.tv/oauth/authorize", "https://api.trakt.tv/oauth/token",
                       "https://api.trakt.tv/users/settings"),
    "twitch": _defaults("Twitch", ("user:read:email",), "https://id.twitch.tv/oauth2/authorize",
                        "https://id.twitch.tv/oauth2/token", "https://api.twitch.tv/helix/users"),
    "twitter": _defaults("X/Twitter", ("users.read", "users.email", "tweet.read"), "https://x.com/i/oauth2/authorize",
                         "https://api.x.com/2/oauth2/token",
                         "https://api.x.com/2/users/me?user.fields=id,name,username,profile_image_url,confirmed_email"),
    "vk": _defaults("ВКонтакте", ("email",), "https://oauth.vk.com/authorize", "https://oauth.vk.com/access_token",
                    "https://api.vk.com/method/users.get?fields=photo_max,screen_name&v=5.131", pkce=False),
    "wakatime": _defaults("WakaTime", ("email",), "https://wakatime.com/oauth/authorize",
                          "https://wakatime.com/oauth/token", "https://wakatime.com/api/v1/users/current"),
    "yandex": _defaults("Yandex", ("login:email", "login:avatar", "login:info"), "https://oauth.yandex.com/authorize",
                        "https://oauth.yandex.com/token", "https://login.yandex.ru/info"),
}


@dataclass(frozen=True, slots=True)
class Provider:
    """A configured provider with its defaults filled in (PocketBase's ``InitProvider``)."""

    name: str
    client_id: str
    client_secret: str
    auth_url: str
    token_url: str
    user_info_url: str
    pkce: bool
    extra: dict[str, object]
    defaults: ProviderDefaults


def resolve(config: OAuth2Provider) -> Provider | None:
    """The provider of a collection's config, None when its name is not in the catalog."""
    defaults = CATALOG.get(config.name)
    if defaults is None:
        return None
    return Provider(config.name, config.client_id, config.client_secret, config.auth_url or defaults.auth_url,
                    config.token_url or defaults.token_url, config.user_info_url or defaults.user_info_url,
                    defaults.pkce if config.pkce is None else config.pkce, dict(config.extra), defaults)


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """One entry of ``auth-methods``' ``oauth2.providers`` (PocketBase's ``providerInfo``)."""

    name: str
    display_name: str
    state: str
    auth_url: str
    code_verifier: str
    code_challenge: str
    code_challenge_method: str

    def to_json(self, with_logo: bool = True) -> dict[str, object]:
        """In PocketBase's field order (``with_logo`` False: empty, as its legacy ``authProviders`` are)."""
        return {"name": self.name, "displayName": self.display_name, "logo": logo(self.name) if with_logo else "",
                "state": self.state,
                "authURL": self.auth_url, "authUrl": self.auth_url, "codeVerifier": self.code_verifier,
                "codeChallenge": self.code_challenge, "codeChallengeMethod": self.code_challenge_method}


@functools.cache
def _listed() -> tuple[tuple[str, str], ...]:
    """(name, logo) in PocketBase's order: its providers' ``order``, then their names."""
    data = json.loads((Path(__file__).parent / "provider_logos.json").read_text(encoding="utf-8"))
    return tuple((entry["name"], entry["logo"]) for entry in data["providers"])


def logo(name: str) -> str:
    """The provider's logo (SVG text) as PocketBase gives it, "" for none."""
    return _logos().get(name, "")


@functools.cache
def _logos() -> dict[str, str]:
    return dict(_listed())


def provider_list() -> list[dict[str, str]]:
    """``GET /api/collections/meta/oauth2-providers``: every provider's name, display name and logo."""
    return [{"name": name, "displayName": CATALOG[name].display_name, "logo": svg}
            for name, svg in _listed() if name in CATALOG]


def random_string(length: int) -> str:
    """PocketBase's ``security.RandomString``: ``[A-Za-z0-9]`` from a CSPRNG."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def s256_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def provider_info(config: OAuth2Provider) -> ProviderInfo | None:
    """The login link of a configured provider (fresh state and PKCE pair), None when unknown."""
    defaults = CATALOG.get(config.name)
    if defaults is None:
        return None
    pkce = defaults.pkce if config.pkce is None else config.pkce
    state = random_string(30)
    params: dict[str, str] = {"client_id": config.client_id, "response_type": "code", "state": state}
    scopes = defaults.scopes
    if defaults.openid_with and cast_to_string(config.extra.get(defaults.openid_with)) and "openid" not in scopes:
        scopes += ("openid",)
    if scopes:
        params["scope"] = " ".join(scopes)
    params |= dict(defaults.extra_params)
    verifier = challenge = method = ""
    if pkce:
        verifier = random_string(43)
        challenge, method = s256_challenge(verifier), "S256"
        params |= {"code_challenge": challenge, "code_challenge_method": method}
    base = config.auth_url or defaults.auth_url
    # golang.org/x/oauth2 AuthCodeURL: url.Values.Encode (sorted keys, QueryEscape); the empty redirect_uri
    # comes last so that clients can append theirs.
    query = "&".join(f"{quote_plus(key)}={quote_plus(params[key])}" for key in sorted(params))
    url = base + ("&" if "?" in base else "?") + query + "&redirect_uri="
    return ProviderInfo(config.name, config.display_name or defaults.display_name, state, url, verifier,
                        challenge, method)
