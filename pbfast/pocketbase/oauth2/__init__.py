"""OAuth2 providers of auth collections (PocketBase's ``tools/auth``): what ``auth-methods`` lists."""

from pbfast.pocketbase.oauth2.providers import ProviderInfo, provider_info

__all__ = ["ProviderInfo", "provider_info"]
