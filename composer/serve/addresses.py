"""Which media URLs a server may fetch on a caller's behalf: none unless serve.allow_urls is on,
and never one whose host is (or resolves to) a private, link-local, loopback or otherwise
non-public address. A server must not reach inside its own network for whoever calls it."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def refused_url(value: str, allow_urls: bool) -> str | None:
    """Why the URL `value` may not be fetched, or None when it may. Resolves the host (blocking:
    call it off the event loop)."""
    if not allow_urls:
        return "is a URL, and this server fetches none (start it with serve.allow_urls=true to allow public URLs)"
    host = urlsplit(value).hostname
    if not host:
        return "is a URL without a host"
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        return f"names host {host!r}, which does not resolve ({error})"
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        why = non_public(address)
        if why:
            return f"names host {host!r}, which is {why} address {address}: a server does not fetch inside its network for a caller"
    return None


def non_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """'a loopback', 'a private', ... for an address a server must not fetch from; None if public."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    for test, name in (("is_loopback", "a loopback"), ("is_link_local", "a link-local"), ("is_private", "a private"),
                       ("is_multicast", "a multicast"), ("is_unspecified", "an unspecified"), ("is_reserved", "a reserved")):
        if getattr(address, test):
            return name
    if not address.is_global:
        return "a non-global"
    return None
