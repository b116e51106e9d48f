"""How a connection's addresses read in URLs, messages and logs, on sockets of either family.

Apart from :mod:`.serving` (how the server listens), since the HTTP protocol (:mod:`.http_limits`), which serving
configures, and the gateway and the operator's autoscaler write addresses too.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def unmapped(host: str) -> str:
    """A client's address as it reads best: an IPv4 client of a socket listening on both families arrives as
    ``::ffff:10.0.0.1`` (an IPv4-mapped address), which is ``10.0.0.1``; any other address unchanged."""
    if host.startswith("::ffff:") or host.startswith("::FFFF:"):
        with contextlib.suppress(ValueError):
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
            if mapped is not None:
                return str(mapped)
    return host


def host_port(host: str, port: int | str) -> str:
    """``host:port`` as a URL writes it (Go's ``net.JoinHostPort``): an IPv6 address in brackets, ``[fd00::5]:5000``,
    ``[::]:5000``; any other host as it is, ``10.0.0.5:5000``, ``*:5000``, ``name.namespace.svc:5000``. A host
    in brackets already stays as it is."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def peer(address: tuple[str, int] | None) -> str:
    """``host:port`` of a connection's other end (``[::1]:5000`` for IPv6; IPv4-mapped ones as IPv4: :func:`unmapped`)."""
    if not address:
        return "a client"
    return host_port(unmapped(str(address[0])), address[1])


def proxies(text: str) -> tuple[Network, ...]:
    """The proxies trusted to say who their client was (``Http:TrustedProxies``, ``SPEECH_GATEWAY_TRUSTED_PROXIES``):
    comma-separated addresses and CIDRs (``10.244.0.0/16, fd00::/8, 127.0.0.1``); empty trusts none. An IPv4-mapped
    address is its IPv4 one. Raises :class:`ValueError` naming an item that is neither (taken as a name, as uvicorn
    took it, it would match no peer and trust nothing, silently)."""
    out: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(unmapped(item)))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an address or a CIDR ({exc})") from None
    return tuple(out)


def _address(entry: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """One ``X-Forwarded-For`` entry's address (``10.0.0.1``, ``10.0.0.1:443``, ``[fd00::1]:443``, ``fd00::1``;
    IPv4-mapped as IPv4; an IPv6 zone, ``fe80::1%eth0``, dropped: it names an interface of the host that wrote it, and
    is any text but ``%`` and ``/``, quotes and spaces too, which a log line would show as written), or None when it
    is none (``unknown``, an obfuscated name)."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return ipaddress.ip_address(unmapped(entry.partition("%")[0]))
    except ValueError:
        return None


def client(peer_host: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """Who a request came from: ``peer_host`` (the connection's other end) unless it is a ``trusted`` proxy; then the
    right-most address of ``X-Forwarded-For`` (its lines, in order) that is not a trusted proxy (each proxy appends
    its own peer, so what is right of that address was written by trusted ones; what is left of it, anyone may have
    written). Every address trusted: the left-most. An entry that is no address stops the walk at the address right
    of it: what a log names is always an address some trusted proxy saw."""
    host = unmapped(peer_host)
    if not trusted_peer(host, trusted):
        return host
    for entry in reversed([e for line in forwarded_for for e in line.split(",") if e.strip()]):
        address = _address(entry)
        if address is None:
            break
        host = str(address)
        if not _within(address, trusted):
            break
    return host


def trusted_peer(peer_host: str, trusted: tuple[Network, ...]) -> bool:
    """Whether ``peer_host`` (the connection's other end; IPv4-mapped as IPv4) is a ``trusted`` proxy."""
    seen = _address(peer_host)
    return seen is not None and _within(seen, trusted)


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]) -> bool:
    return any(address in net for net in trusted)
