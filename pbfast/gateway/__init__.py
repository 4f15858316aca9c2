"""The gateway: resolves each request to its tenant and forwards it to the node hosting it."""

from pbfast.gateway.app import GatewayApp

__all__ = ["GatewayApp"]
