"""Where a tenant's own settings may make the node connect (its SMTP server, its S3 endpoint).

PocketBase runs one app per host, so it dials whatever its settings name. A node serves many tenants: a
tenant's settings must not make it talk to its own loopback services (the cluster's internal listeners,
Litestream, a local relay of another tenant) or to link-local ones (cloud metadata). :func:`checked_address`
resolves the host once and refuses such addresses unless the operator allows them with
``PBFAST_ALLOW_LOOPBACK_EGRESS=1`` (a relay or object store on the node itself; the tests' loopback servers).
Callers dial the returned address, so a second DNS answer cannot differ from the checked one.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Final

__all__ = ["ALLOW_LOOPBACK_ENV", "EgressRefused", "checked_address", "checked_public_address"]

ALLOW_LOOPBACK_ENV: Final = "PBFAST_ALLOW_LOOPBACK_EGRESS"


class EgressRefused(OSError):
    """The host resolves to an address of the node itself (loopback, link-local, unspecified, multicast)."""


def checked_address(host: str, port: int) -> str:
    """The address to dial for ``host`` (the first the resolver gives); raises :class:`EgressRefused` or
    ``OSError`` (does not resolve)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} does not resolve")
    address = str(infos[0][4][0])
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    local = ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast
    if local and os.environ.get(ALLOW_LOOPBACK_ENV) != "1":
        raise EgressRefused(f"{host} ({address}) is an address of the node; refused")
    return address


def checked_public_address(host: str, port: int) -> str:
    """:func:`checked_address` for a URL a third party chose (an OAuth2 user's avatar): no private, shared or
    reserved network either, as PocketBase's safe HTTP client refuses them (the answer may be stored where the
    tenant's users can read it). Loopback stays allowed under ``PBFAST_ALLOW_LOOPBACK_EGRESS=1`` (the tests)."""
    address = checked_address(host, port)
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback and os.environ.get(ALLOW_LOOPBACK_ENV) == "1":
        return address
    if ip.is_private or ip.is_reserved or ip.is_link_local or ip.is_loopback or not ip.is_global:
        raise EgressRefused(f"{host} ({address}) is not a public address; refused")
    return address
