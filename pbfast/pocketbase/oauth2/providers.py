"""The OAuth2 providers an auth collection may configure, and the login links ``auth-methods`` gives for
them (PocketBase's ``tools/auth`` defaults, overridden by the collection's provider config as its
``InitProvider`` does).

Only the providers in :data:`CATALOG` are known (their default links checked against PocketBase's);
PocketBase skips a configured provider it cannot set up, and so do we for names outside the catalog.
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

__all__ = ["CATALOG", "ProviderDefaults", "ProviderInfo", "provider_info", "random_string", "s256_challenge"]

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


_OIDC: Final = ProviderDefaults("OIDC", ("openid", "email", "profile"))

CATALOG: Final[dict[str, ProviderDefaults]] = {
    "google": ProviderDefaults("Google", ("https://www.googleapis.com/auth/userinfo.profile",
                                          "https://www.googleapis.com/auth/userinfo.email"),
                               "https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
                               "https://www.googleapis.com/oauth2/v3/userinfo"),
    "gitlab": ProviderDefaults("GitLab", ("read_user",), "https://gitlab.com/oauth/authorize",
                               "https://gitlab.com/oauth/token", "https://gitlab.com/api/v4/user"),
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
