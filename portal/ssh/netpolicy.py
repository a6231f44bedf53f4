"""Which addresses the portal may open SSH connections to (the SSRF guard).

A `TargetPolicy` is checked on every resolved address when a socket opens
(`connect.open_socket`) and early, on the typed host, when a machine is created,
scanned, checked or edited. Flask-free: the machines service builds one from
PORTAL_ALLOWED_TARGETS / PORTAL_DENIED_TARGETS.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["DEFAULT_DENIED", "TargetPolicy", "parse_networks", "policy_from_config"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Refused unless an allow entry at least as narrow names them: link-local (where cloud
#: metadata services live) and the metadata addresses themselves, in every spelling.
DEFAULT_DENIED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local; 169.254.169.254 is AWS/GCP/Azure metadata
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "64:ff9b::a9fe:0/112",  # 169.254.0.0/16 through NAT64's well-known prefix
    )
)

LINK_LOCAL = "link-local or cloud metadata address"
DENIED = "a denied network"


def _ip(addr) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
        ip = addr
    else:
        try:
            ip = ipaddress.ip_address(str(addr).split("%", 1)[0])
        except ValueError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return ip


def _in(ip, net: Network) -> bool:
    return ip.version == net.version and ip in net


@dataclass(frozen=True)
class TargetPolicy:
    """`allow`: the only networks a direct connection may reach (None: any address not
    denied). `deny`: always refused (the admin's PORTAL_DENIED_TARGETS). The default
    denials apply too, except where an allow entry at least as narrow as the denied range
    covers the address (169.254.169.254/32 opens it; 0.0.0.0/0 does not)."""

    allow: tuple[Network, ...] | None = None
    deny: tuple[Network, ...] = ()
    default_deny: tuple[Network, ...] = DEFAULT_DENIED

    @property
    def closed(self) -> bool:
        """Only listed networks are allowed (an unresolvable name is then refused too)."""
        return self.allow is not None

    def refusal(self, addr, *, via_gateway: bool = False) -> str | None:
        """None when `addr` may be reached; else why not (a short phrase).

        `via_gateway`: the address is reached by a jump host, not by the portal, so the
        allow list (the portal's own networks) does not apply; the denials do."""
        ip = _ip(addr)
        if ip is None:
            return "not an IP address"
        if any(_in(ip, n) for n in self.deny):
            return DENIED
        for denied in self.default_deny:
            if _in(ip, denied) and not any(
                _in(ip, a) and a.prefixlen >= denied.prefixlen for a in self.allow or ()
            ):
                return LINK_LOCAL
        if self.allow is not None and not via_gateway and not any(_in(ip, a) for a in self.allow):
            return "outside the allowed networks"
        return None


def parse_networks(raw: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (or single addresses); ValueError on a bad entry."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()
    )


def policy_from_config(allowed: str, denied: str) -> tuple[TargetPolicy, str | None]:
    """(policy, error): a malformed entry in either list allows nothing (fail closed)."""
    try:
        allow = parse_networks(allowed) if allowed.strip() else None
    except ValueError:
        return TargetPolicy(allow=()), "PORTAL_ALLOWED_TARGETS"
    try:
        deny = parse_networks(denied)
    except ValueError:
        return TargetPolicy(allow=()), "PORTAL_DENIED_TARGETS"
    return TargetPolicy(allow=allow, deny=deny), None
