"""The OAuth2 providers an auth collection may configure (PocketBase's ``tools/auth``): their defaults
(:data:`CATALOG`), overridden by the collection's provider config as its ``InitProvider`` does
(:func:`resolve`), the login links ``auth-methods`` gives for them (:func:`provider_info`), and how each
provider's user answer becomes PocketBase's ``AuthUser`` (:class:`UserMapping`).

Adding a provider whose user endpoint answers one JSON object is data only: its defaults and its
:class:`UserMapping`. Providers in the catalog without a mapping are listed by ``auth-methods`` but cannot
complete a login here yet (they need extra requests, e.g. GitHub's emails or Apple's signed id_token).
Provider logos are not reproduced (``logo`` is empty).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote_plus

from pbfast.pocketbase.collections.auth_options import OAuth2Provider

__all__ = ["CATALOG", "Provider", "ProviderDefaults", "ProviderInfo", "UserMapping", "provider_info", "random_string",
           "resolve", "s256_challenge"]

_ALPHANUMERIC: Final = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class UserMapping:
    """Where a provider's user JSON holds each ``AuthUser`` field (empty: not given), and what proves its
    email: ``email_flag`` (a field that must be true: ``strict_flag`` a JSON true, else any value Go's
    ``cast.ToBool`` takes as true) or ``email_confirmed_at`` (an RFC 3339 time that must be set)."""

    id: str
    name: str = ""
    username: str = ""
    avatar_url: str = ""
    email: str = "email"
    email_flag: str = ""
    strict_flag: bool = True
    email_confirmed_at: str = ""
    numeric_id: bool = False  # the id is a JSON integer (Go's int64), answered as its decimal text


@dataclass(frozen=True, slots=True)
class ProviderDefaults:
    display_name: str
    scopes: tuple[str, ...]
    auth_url: str = ""
    token_url: str = ""
    user_info_url: str = ""
    pkce: bool = True
    extra_params: tuple[tuple[str, str], ...] = ()  # added to the login link (Apple wants its answer POSTed)
    user: UserMapping | None = None  # None: a login with it is not supported here
    id_token_user: bool = False  # without a user info URL the user is read from the token's id_token (OIDC)


_OIDC_USER: Final = UserMapping("sub", "name", "preferred_username", "picture", email_flag="email_verified",
                                strict_flag=False)
_OIDC: Final = ProviderDefaults("OIDC", ("openid", "email", "profile"), user=_OIDC_USER, id_token_user=True)

CATALOG: Final[dict[str, ProviderDefaults]] = {
    "google": ProviderDefaults("Google", ("https://www.googleapis.com/auth/userinfo.profile",
                                          "https://www.googleapis.com/auth/userinfo.email"),
                               "https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
                               "https://www.googleapis.com/oauth2/v3/userinfo",
                               user=UserMapping("sub", "name", avatar_url="picture", email_flag="email_verified")),
    "gitlab": ProviderDefaults("GitLab", ("read_user",), "https://gitlab.com/oauth/authorize",
                               "https://gitlab.com/oauth/token", "https://gitlab.com/api/v4/user",
                               user=UserMapping("id", "name", "username", "avatar_url",
                                                email_confirmed_at="confirmed_at", numeric_id=True)),
    "github": ProviderDefaults("GitHub", ("read:user", "user:email"), "https://github.com/login/oauth/authorize",
                               "https://github.com/login/oauth/access_token", "https://api.github.com/user"),
    "apple": ProviderDefaults("Apple", ("name", "email"), "https://appleid.apple.com/auth/authorize",
                              extra_params=(("response_mode", "form_post"),)),
    "discord": ProviderDefaults("Discord", ("identify", "email"), "https://discord.com/api/oauth2/authorize"),
    "gitea": ProviderDefaults("Gitea/Forgejo", ("read:user", "user:email"), "https://gitea.com/login/oauth/authorize"),
    "gitee": ProviderDefaults("Gitee", ("user_info", "emails"), "https://gitee.com/oauth/authorize"),
    "instagram2": ProviderDefaults("Instagram", ("instagram_business_basic",),
                                   "https://www.instagram.com/oauth/authorize"),
    "linear": ProviderDefaults("Linear", ("read",), "https://linear.app/oauth/authorize", pkce=False),
    "planningcenter": ProviderDefaults("Planning Center", ("people",),
                                       "https://api.planningcenteronline.com/oauth/authorize"),
    "oidc": _OIDC,
    "oidc2": _OIDC,
    "oidc3": _OIDC,
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

    def to_json(self) -> dict[str, object]:
        """In PocketBase's field order (logos are not reproduced: empty)."""
        return {"name": self.name, "displayName": self.display_name, "logo": "", "state": self.state,
                "authURL": self.auth_url, "authUrl": self.auth_url, "codeVerifier": self.code_verifier,
                "codeChallenge": self.code_challenge, "codeChallengeMethod": self.code_challenge_method}


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
    if defaults.scopes:
        params["scope"] = " ".join(defaults.scopes)
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
