"""The trust-on-first-use step: read a server's host keys without authenticating.

The probes are bare paramiko `Transport`s (connect.handshake), not Fabric Connections: a
probe runs only the key exchange, offering one host key type, reads the key and closes.
It never authenticates and trusts nothing, while SSHClient.connect (under Fabric's
Connection.open) always goes on to a host key decision and authentication.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko

from portal.errors import HostKeyError, MachineUnreachable
from portal.ssh.connect import (
    NO_COMMON_ALGORITHMS,
    AllowedNetworks,
    handshake,
    open_socket,
    resolve,
    unreachable,
)
from portal.ssh.connection import tunnel_refused
from portal.ssh.errors import hostport
from portal.ssh.keys import HOST_KEY_TYPES, fingerprint, host_key_algorithms, key_line
from portal.ssh.pool import get_pool
from portal.ssh.target import Target

__all__ = ["scan_host_key"]

# A probe for a key type the server lacks ends in "Incompatible ssh peer": expected here,
# so paramiko's transport log for probes goes to a quiet logger instead of the app's log.
_PROBE_LOG = "portal.ssh.keyscan.paramiko"
_probe_logger = logging.getLogger(_PROBE_LOG)
_probe_logger.setLevel(logging.CRITICAL)
_probe_logger.propagate = False
_probe_logger.addHandler(logging.NullHandler())


def scan_host_key(
    host: str,
    port: int = 22,
    timeout: float = 10.0,
    *,
    gateway: Target | None = None,
    pool=None,
    allowed: AllowedNetworks = None,
) -> list[tuple[str, str]]:
    """The host keys a server presents, as `[(key_line, "SHA256:..."), ...]`.

    One key exchange per key type (ed25519, ECDSA P-256/384/521, RSA), run in
    parallel, each offering only that type, like `ssh-keyscan`. Nothing is
    authenticated and no key is trusted here: show the fingerprints to a person,
    then pin the chosen lines in `Target.host_keys`.

    With `gateway`, the connections go through the gateway's pooled transport (whose own
    address was checked against its `allowed`). Without, `host` is resolved once and
    every address must be inside `allowed` (TargetNotAllowed); the probes connect to
    those checked addresses only.
    Raises MachineUnreachable when the server cannot be reached, HostKeyError when
    it offers none of the supported key types.
    """
    deadline = time.monotonic() + timeout
    if gateway is not None:
        pool = pool or get_pool()

        def sock_factory(h: str, p: int, left: float):
            # a direct-tcpip channel on the gateway's pooled connection
            try:
                return pool.open_channel(
                    gateway, "direct-tcpip", (h, p), ("127.0.0.1", 0), timeout=left
                )
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise tunnel_refused(h, p, gateway, exc) from None
    else:
        checked = resolve(host, port, allowed)  # once, before any probe connects
        addrs = tuple(ipaddress.ip_network(i[4][0].split("%", 1)[0]) for i in checked)

        def sock_factory(h: str, p: int, left: float):
            # The literal addresses checked above: no second lookup, no rebinding gap.
            return _open_checked(checked, h, p, left, addrs)

    def probe(keytype: str):
        left = deadline - time.monotonic()
        if left <= 0:
            raise unreachable(host, port, "timed out")
        sock = sock_factory(host, port, left)
        try:
            transport = handshake(
                sock,
                host,
                port,
                max(deadline - time.monotonic(), 0.01),
                host_key_algorithms(keytype),
                log_channel=_PROBE_LOG,
            )
        except MachineUnreachable as exc:
            sock.close()
            # A server without a key of this type refuses this exchange only.
            if exc.message.endswith(NO_COMMON_ALGORITHMS):
                return None
            raise
        try:
            return transport.get_remote_server_key()
        finally:
            transport.close()

    # Probe the default preference first: it proves the host is reachable (and fails
    # fast when it is not) before starting the parallel per-type probes.
    results: dict[str, tuple[str, str]] = {}
    errors: list[BaseException] = []
    first = probe(HOST_KEY_TYPES[0])
    if first is not None:
        results[first.get_name()] = (key_line(first), fingerprint(first))
    others = HOST_KEY_TYPES[1:]
    with ThreadPoolExecutor(max_workers=len(others), thread_name_prefix="ssh-keyscan") as ex:
        futures = [ex.submit(probe, t) for t in others]
        for future in futures:
            try:
                key = future.result()
            except MachineUnreachable as exc:
                errors.append(exc)
                continue
            if key is not None:
                results.setdefault(key.get_name(), (key_line(key), fingerprint(key)))
    if not results:
        if errors:
            raise errors[0]
        raise HostKeyError(
            f"{hostport(host, port)} offers no supported host key type (ed25519, ECDSA or RSA)",
            host=host,
            port=port,
        )
    order = {keytype: i for i, keytype in enumerate(HOST_KEY_TYPES)}
    return [results[k] for k in sorted(results, key=lambda k: order.get(k, 99))]


def _open_checked(infos, host, port, timeout, addrs):
    """open_socket over already-resolved, already-checked addresses (IP literals)."""
    last: MachineUnreachable | None = None
    for info in infos:
        literal = info[4][0].split("%", 1)[0]
        try:
            return open_socket(literal, port, timeout, addrs)
        except MachineUnreachable as exc:
            last = exc
    # Report against the name the user gave, with the fixed reason only.
    reason = last.message.rsplit(": ", 1)[-1] if last else "the connection failed"
    raise unreachable(host, port, reason)
