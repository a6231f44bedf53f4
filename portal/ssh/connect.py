"""The byte stream under an SSH connection: resolving, allowed networks, TCP, the transport.

`open_socket` resolves a host once, checks every address against the allowed networks
and connects to exactly those addresses (no DNS rebinding); `new_transport` builds the
paramiko `Transport` on it (read through `ReadAhead`, AES-GCM first, the pinned key types
first). Authenticated connections are Fabric `Connection`s built on these
(portal/ssh/connection.py); the host key scan runs bare handshakes (`handshake`).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable

import paramiko

from portal.ssh import chansend
from portal.ssh.errors import MachineUnreachable, TargetNotAllowed, hostport
from portal.ssh.keys import HOST_KEY_TYPES, host_key_algorithms
from portal.ssh.netpolicy import DENIED, LINK_LOCAL, TargetPolicy
from portal.ssh.target import Target

__all__ = [
    "AllowedNetworks",
    "SockFactory",
    "address_allowed",
    "handshake",
    "new_transport",
    "open_socket",
    "preferred_key_types",
]

#: Returns a connected socket-like object (a socket or a `direct-tcpip` channel).
SockFactory = Callable[[str, int, float], object]

#: What the portal may connect to: a TargetPolicy (the services' allow/deny lists), a
#: plain tuple of allowed networks, or None (any address).
AllowedNetworks = TargetPolicy | tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None

# Every message below is fixed text: nothing from an exception or from the remote side
# (banners, protocol lines) reaches a user, so a scan cannot be used to read other services.
_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network is unreachable",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "timed out",
}
NOT_SSH = "not an SSH server"
HANDSHAKE_FAILED = "the SSH handshake failed"
NO_COMMON_ALGORITHMS = "no common SSH algorithms"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror | UnicodeError):
        return "could not resolve the host name"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    return "the connection failed"


def unreachable(host: str, port: int, reason: str) -> MachineUnreachable:
    return MachineUnreachable(
        f"could not connect to {hostport(host, port)}: {reason}", host=host, port=port
    )


def address_allowed(addr: str, allowed: AllowedNetworks) -> bool:
    """Whether one resolved address may be reached (None allows every address)."""
    return _refusal(addr, allowed) is None


def _refusal(addr: str, allowed: AllowedNetworks) -> str | None:
    if allowed is None:
        return None
    if isinstance(allowed, TargetPolicy):
        return allowed.refusal(addr)
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    return "outside the allowed networks"


def _closed(allowed: AllowedNetworks) -> bool:
    """Only listed networks may be reached: an unresolvable name is refused too."""
    return allowed is not None and (not isinstance(allowed, TargetPolicy) or allowed.closed)


def refused(host: str, reason: str) -> TargetNotAllowed:
    if reason == LINK_LOCAL:
        return TargetNotAllowed(
            f"{host} is or resolves to a link-local or cloud metadata address, which this "
            "portal does not connect to",
            field="host",
        )
    if reason == DENIED:
        return TargetNotAllowed(
            f"{host} is in a network this portal may not connect to", field="host"
        )
    return TargetNotAllowed(
        f"{host} is outside the networks this portal may connect to", field="host"
    )


def resolve(host: str, port: int, allowed: AllowedNetworks = None) -> list[tuple]:
    """Resolve `host` once; every address must be inside `allowed` (TargetNotAllowed).

    Returns getaddrinfo entries: the caller connects to exactly these addresses, so a
    second lookup (DNS rebinding) cannot swap in an address that was not checked.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        if _closed(allowed):
            raise TargetNotAllowed(
                f"{host} could not be resolved, and this portal only connects to allowed networks",
                field="host",
            ) from None
        raise unreachable(host, port, _reason(exc)) from None
    infos = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
    if not infos:
        raise unreachable(host, port, "could not resolve the host name")
    for info in infos:
        reason = _refusal(info[4][0], allowed)
        if reason is not None:
            raise refused(host, reason)
    return infos


def open_socket(
    host: str, port: int, timeout: float, allowed: AllowedNetworks = None
) -> socket.socket:
    """A TCP connection to host:port within `timeout` seconds, or MachineUnreachable.

    The host is resolved once here; with `allowed` set, every resolved address must be
    inside those networks (TargetNotAllowed), and only those checked addresses are
    connected to.
    """
    infos = resolve(host, port, allowed)
    deadline = time.monotonic() + max(timeout, 0.001)
    last: BaseException | None = None
    for family, socktype, proto, _canon, sockaddr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            last = TimeoutError()
            break
        sock = socket.socket(family, socktype, proto)
        try:
            sock.settimeout(left)
            sock.connect(sockaddr)
        except (OSError, ValueError) as exc:
            sock.close()
            last = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise unreachable(host, port, _reason(last) if last else "the connection failed")


def timeval(seconds: float) -> bytes:
    """A `struct timeval` for SO_RCVTIMEO / SO_SNDTIMEO (0 = no timeout)."""
    return struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))


class ReadAhead:
    """The SSH socket as paramiko's reader sees it: each `recv` from the kernel takes up to
    64 KiB, and later `recv`s are served from that first.

    paramiko reads every packet with two `recv`s (the first block, then the rest), each a
    poll and a read on a socket with a timeout. Terminal output arrives as many ~4 KiB
    packets; taking what the kernel has in one read cuts the transport thread's CPU time
    during a flood by about a sixth (bench/bench_terminal.py).

    paramiko's timeout (0.1 s, so its reader can notice a closed transport) is kept by the
    kernel instead (SO_RCVTIMEO, SO_SNDTIMEO on a blocking socket): with a Python-level
    timeout every recv and send is a poll(2) first; this way a wake-up for an echoed
    keystroke is one recv(2). A timeout then shows as EAGAIN, turned back into the
    `socket.timeout` paramiko expects. Everything else (close, fileno, ...) is the socket's own.
    """

    __slots__ = ("_sock", "_buf", "_pos", "timed")

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self.timed = False  # the timeout is the kernel's (see settimeout)

    def send(self, data, flags: int = 0) -> int:
        try:
            return self._sock.send(data, flags)
        except BlockingIOError:  # the kernel's timeout (SO_SNDTIMEO): nothing was sent
            if not self.timed:
                raise
            raise TimeoutError("timed out") from None

    def settimeout(self, timeout: float | None) -> None:
        sock = self._sock
        if timeout is not None and timeout > 0:
            try:
                tv = timeval(timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
                sock.settimeout(None)
                self.timed = True
                return
            except OSError:
                pass
        if self.timed:
            off = timeval(0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, off)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, off)
            self.timed = False
        sock.settimeout(timeout)

    def recv(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        left = len(buf) - pos
        if left > 0:
            if left <= n:
                self._buf, self._pos = b"", 0
                return buf[pos:] if pos else buf
            self._pos = pos + n
            return buf[pos : pos + n]
        try:
            data = self._sock.recv(max(n, READ_AHEAD))  # may raise socket.timeout: paramiko's
        except BlockingIOError:  # the kernel's timeout (SO_RCVTIMEO)
            if not self.timed:
                raise
            # as a Python-level timeout reports it: paramiko's banner reader only knows this
            raise TimeoutError("timed out") from None
        if len(data) > n:
            self._buf, self._pos = data, n
            return data[:n]
        return data

    def __getattr__(self, name):
        return getattr(self._sock, name)


READ_AHEAD = 64 * 1024

PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
PREFERRED_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")


def _ordered(available, first) -> tuple[str, ...]:
    """`available` with the members of `first` moved to the front (in `first`'s order)."""
    available = tuple(available)
    return tuple(x for x in first if x in available) + tuple(x for x in available if x not in first)


def new_transport(sock, key_types: tuple[str, ...] | None = None, **kwargs) -> paramiko.Transport:
    """A client `Transport` on `sock` (a TCP socket is read through `ReadAhead`), offering
    host key algorithms in `key_types` order and AES-GCM first. Not started."""
    if type(sock) is socket.socket:
        sock = ReadAhead(sock)
    transport = paramiko.Transport(sock, **kwargs)
    chansend.limit_packets(transport)  # no packet beyond 256 KiB is read into memory
    options = transport.get_security_options()
    if key_types:
        options.key_types = list(key_types)
    # AEAD first: AES-GCM is one C call per packet where CTR + HMAC costs a Python HMAC
    # object per packet (~1.7x the throughput and less CPU per keystroke, measured in
    # bench/bench_terminal.py); encrypt-then-MAC before MAC-then-encrypt for the rest.
    options.ciphers = _ordered(options.ciphers, PREFERRED_CIPHERS)
    options.digests = _ordered(options.digests, PREFERRED_MACS)
    return transport


def handshake(
    sock,
    host: str,
    port: int,
    timeout: float,
    key_types: tuple[str, ...] | None = None,
    log_channel: str | None = None,
) -> paramiko.Transport:
    """Run the SSH key exchange on `sock`, offering host key algorithms in `key_types` order.

    Returns the started (not yet verified, not authenticated) transport. Only the host
    key scan uses this; connections that authenticate are `PinnedConnection`s.
    """
    transport = new_transport(sock, key_types)
    if log_channel:
        transport.set_log_channel(log_channel)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    done = threading.Event()
    try:
        transport.start_client(event=done)
        if not done.wait(timeout):
            raise unreachable(host, port, "timed out during the SSH handshake")
        if not transport.is_active():
            exc = transport.get_exception()
            raise unreachable(host, port, handshake_reason(exc))
    except BaseException:
        transport.close()
        raise
    return transport


def handshake_reason(exc: BaseException | None) -> str:
    """A fixed description of a failed handshake (never the exception's or server's text)."""
    if exc is None:
        return HANDSHAKE_FAILED
    text = str(exc).lower()
    if "banner" in text or "version" in text:  # not SSH-2 ("Incompatible version (x ...)")
        return NOT_SSH
    if isinstance(exc, EOFError | ConnectionError) or not text:
        return "the server closed the connection during the SSH handshake"
    if "incompatible" in text or "no acceptable" in text:
        return NO_COMMON_ALGORITHMS
    return HANDSHAKE_FAILED


def preferred_key_types(target: Target) -> tuple[str, ...]:
    """Host key algorithms, the pinned keys' first: a server with several keys shows a pinned one."""
    first: list[str] = []
    for pkey in target.pinned:
        for algo in host_key_algorithms(pkey.get_name()):
            if algo not in first:
                first.append(algo)
    rest = [
        algo
        for keytype in HOST_KEY_TYPES
        for algo in host_key_algorithms(keytype)
        if algo not in first
    ]
    return tuple(first + rest)
