"""How a connection's addresses read in URLs, messages and logs, on sockets of either family.

Apart from :mod:`.serving` (how the server listens), since the HTTP protocol (:mod:`.http_limits`), which serving
configures, and the gateway and the operator's autoscaler write addresses too.
"""

from __future__ import annotations

import contextlib
import ipaddress


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
