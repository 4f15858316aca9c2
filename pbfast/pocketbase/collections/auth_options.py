"""An auth collection's options (PocketBase's ``core/collection_model_auth_options.go``): ``authRule``,
``manageRule``, the auth methods (password, OAuth2, OTP, MFA), the token configs and the email templates,
typed, read from any JSON leniently (Go's zero values for what is missing or mistyped) and written back in
PocketBase's stored shape and key order (:meth:`AuthOptions.to_json`; :meth:`AuthOptions.to_api`: what the
collections API shows, secrets omitted)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["AUTH_OPTION_KEYS", "TEMPLATE_KEYS", "TOKEN_KEYS", "AuthOptions", "EmailTemplate", "MfaConfig",
           "OAuth2Config", "OAuth2Provider", "OtpConfig", "PasswordAuthConfig", "TokenConfig"]

TOKEN_KEYS: Final = ("authToken", "passwordResetToken", "emailChangeToken", "verificationToken", "fileToken")
TEMPLATE_KEYS: Final = ("verificationTemplate", "resetPasswordTemplate", "confirmEmailChangeTemplate")
AUTH_OPTION_KEYS: Final = ("authRule", "manageRule", "authAlert", "oauth2", "passwordAuth", "mfa", "otp",
                           *TOKEN_KEYS, *TEMPLATE_KEYS)
_MAPPED_FIELD_KEYS: Final = ("id", "name", "username", "avatarURL")
_PROVIDER_KEYS: Final = ("name", "clientId", "clientSecret", "authURL", "tokenURL", "userInfoURL", "displayName")

Json = Mapping[str, object]


def _obj(raw: object) -> Json:
    """``raw`` when it is an object, else an empty one."""
    return raw if isinstance(raw, Mapping) else {}


def _int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    return 0


def _str(value: object) -> str:
    return str(value or "")


@dataclass
class EmailTemplate:
    subject: str = ""
    body: str = ""

    @staticmethod
    def of(raw: object) -> EmailTemplate:
        value = _obj(raw)
        return EmailTemplate(_str(value.get("subject")), _str(value.get("body")))

    def to_json(self) -> dict[str, object]:
        return {"subject": self.subject, "body": self.body}


@dataclass
class TokenConfig:
    secret: str = ""
    duration: int = 0  # seconds

    @staticmethod
    def of(raw: object) -> TokenConfig:
        value = _obj(raw)
        return TokenConfig(_str(value.get("secret")), _int(value.get("duration")))

    def to_json(self) -> dict[str, object]:
        return {"secret": self.secret, "duration": self.duration}


@dataclass
class OAuth2Provider:
    pkce: bool | None = None
    name: str = ""
    client_id: str = ""
    client_secret: str = ""
    auth_url: str = ""
    token_url: str = ""
    user_info_url: str = ""
    display_name: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @staticmethod
    def of(raw: object) -> OAuth2Provider:
        value = _obj(raw)
        pkce = value.get("pkce")
        name, client_id, client_secret, auth_url, token_url, user_info_url, display_name = (
            _str(value.get(key)) for key in _PROVIDER_KEYS)
        return OAuth2Provider(pkce if isinstance(pkce, bool) else None, name, client_id, client_secret, auth_url,
                              token_url, user_info_url, display_name, dict(_obj(value.get("extra"))))

    def to_json(self, *, with_secret: bool = True) -> dict[str, object]:
        texts = (self.name, self.client_id, self.client_secret, self.auth_url, self.token_url, self.user_info_url,
                 self.display_name)
        result: dict[str, object] = {"pkce": self.pkce, **dict(zip(_PROVIDER_KEYS, texts, strict=True)),
                                     "extra": dict(self.extra)}
        if not with_secret:
            result.pop("clientSecret")
        return result


@dataclass
class OAuth2Config:
    providers: list[OAuth2Provider] = field(default_factory=list)
    mapped_fields: dict[str, str] = field(default_factory=lambda: dict.fromkeys(_MAPPED_FIELD_KEYS, ""))
    enabled: bool = False


@dataclass
class PasswordAuthConfig:
    enabled: bool = False
    identity_fields: list[str] = field(default_factory=list)


@dataclass
class MfaConfig:
    enabled: bool = False
    duration: int = 0  # seconds a session stays usable
    rule: str = ""


@dataclass
class OtpConfig:
    enabled: bool = False
    duration: int = 0
    length: int = 0
    email_template: EmailTemplate = field(default_factory=EmailTemplate)


@dataclass
class AuthOptions:
    """The options of an auth collection (every part present, with Go's zero values by default)."""

    auth_rule: str | None = None
    manage_rule: str | None = None
    auth_alert_enabled: bool = False
    auth_alert_template: EmailTemplate = field(default_factory=EmailTemplate)
    oauth2: OAuth2Config = field(default_factory=OAuth2Config)
    password_auth: PasswordAuthConfig = field(default_factory=PasswordAuthConfig)
    mfa: MfaConfig = field(default_factory=MfaConfig)
    otp: OtpConfig = field(default_factory=OtpConfig)
    tokens: dict[str, TokenConfig] = field(default_factory=lambda: {key: TokenConfig() for key in TOKEN_KEYS})
    templates: dict[str, EmailTemplate] = field(default_factory=lambda: {key: EmailTemplate() for key in TEMPLATE_KEYS})

    @property
    def auth_token(self) -> TokenConfig:
        return self.tokens["authToken"]

    @staticmethod
    def from_json(raw: Json) -> AuthOptions:
        """Options from stored or submitted JSON (missing or mistyped parts get Go's zero values)."""
        oauth2, alert, password = _obj(raw.get("oauth2")), _obj(raw.get("authAlert")), _obj(raw.get("passwordAuth"))
        mfa, otp, mapped = _obj(raw.get("mfa")), _obj(raw.get("otp")), _obj(_obj(raw.get("oauth2")).get("mappedFields"))
        auth_rule, manage_rule = raw.get("authRule"), raw.get("manageRule")
        providers = oauth2.get("providers")
        identity_fields = password.get("identityFields")
        return AuthOptions(
            auth_rule=auth_rule if isinstance(auth_rule, str) else None,
            manage_rule=manage_rule if isinstance(manage_rule, str) else None,
            auth_alert_enabled=bool(alert.get("enabled")),
            auth_alert_template=EmailTemplate.of(alert.get("emailTemplate")),
            oauth2=OAuth2Config([OAuth2Provider.of(p) for p in (providers if isinstance(providers, list) else [])],
                                {key: _str(mapped.get(key)) for key in _MAPPED_FIELD_KEYS}, bool(oauth2.get("enabled"))),
            password_auth=PasswordAuthConfig(bool(password.get("enabled")), [str(v) for v in (
                identity_fields if isinstance(identity_fields, list) else [])]),
            mfa=MfaConfig(bool(mfa.get("enabled")), _int(mfa.get("duration")), _str(mfa.get("rule"))),
            otp=OtpConfig(bool(otp.get("enabled")), _int(otp.get("duration")), _int(otp.get("length")),
                          EmailTemplate.of(otp.get("emailTemplate"))),
            tokens={key: TokenConfig.of(raw.get(key)) for key in TOKEN_KEYS},
            templates={key: EmailTemplate.of(raw.get(key)) for key in TEMPLATE_KEYS},
        )

    def to_json(self) -> dict[str, object]:
        """The options as PocketBase stores them (its key order)."""
        result: dict[str, object] = {
            "authRule": self.auth_rule,
            "manageRule": self.manage_rule,
            "authAlert": {"enabled": self.auth_alert_enabled, "emailTemplate": self.auth_alert_template.to_json()},
            "oauth2": {"providers": [p.to_json() for p in self.oauth2.providers],
                       "mappedFields": dict(self.oauth2.mapped_fields), "enabled": self.oauth2.enabled},
            "passwordAuth": {"enabled": self.password_auth.enabled,
                             "identityFields": list(self.password_auth.identity_fields)},
            "mfa": {"enabled": self.mfa.enabled, "duration": self.mfa.duration, "rule": self.mfa.rule},
            "otp": {"enabled": self.otp.enabled, "duration": self.otp.duration, "length": self.otp.length,
                    "emailTemplate": self.otp.email_template.to_json()},
        }
        result.update((key, self.tokens[key].to_json()) for key in TOKEN_KEYS)
        result.update((key, self.templates[key].to_json()) for key in TEMPLATE_KEYS)
        return result

    def to_api(self) -> dict[str, object]:
        """What the collections API shows: token secrets and OAuth2 client secrets omitted."""
        shown = self.to_json()
        shown.update((key, {"duration": self.tokens[key].duration}) for key in TOKEN_KEYS)
        shown["oauth2"] = {"providers": [p.to_json(with_secret=False) for p in self.oauth2.providers],
                           "mappedFields": dict(self.oauth2.mapped_fields), "enabled": self.oauth2.enabled}
        return shown
