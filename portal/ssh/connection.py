"""One authenticated SSH connection: a Fabric `Connection` that trusts only pinned keys.

`PinnedConnection` is a `fabric.Connection` for one `Target`:

* host keys: the client's host-key store (`client.get_host_keys()`) holds the Target's
  pinned keys and nothing else, and the missing-host-key policy refuses (`PinnedKeysOnly`,
  instead of the `AutoAddPolicy` that Fabric sets). paramiko checks the presented key
  against the store after the key exchange, before any credential is sent; a changed key
  is refused with both fingerprints (`HostKeyMismatch`), an unknown one with the key to
  trust (`HostKeyUnknown`). System host keys (`~/.ssh/known_hosts`) are never loaded;
* configuration: a Fabric `Config` that reads no files (no `~/.ssh/config`, no
  `/etc/ssh/ssh_config`, no fabric.yaml), so nothing on the portal host changes a host
  name, a port, a user, a proxy command or a key;
* credentials: only the Target's key and password (`TargetCredentials`), never an agent,
  a key file in `~/.ssh` or a prompt;
* the byte stream: our own TCP socket to an address checked against `Target.allowed`
  (resolved once: no DNS rebinding), or with `gateway=` another `PinnedConnection` (a
  `direct-tcpip` channel on the jump host's connection);
* timeouts: the whole connect (TCP, handshake, auth) is bounded by
  `Target.connect_timeout`.
"""

from __future__ import annotations

import time

import fabric
import paramiko
from paramiko.auth_strategy import (
    AuthResult,
    AuthStrategy,
    InMemoryPrivateKey,
    NoneAuth,
    Password,
    SourceResult,
)

from portal.errors import PortalError
from portal.ssh.connect import (
    handshake_reason,
    new_transport,
    open_socket,
    preferred_key_types,
    unreachable,
)
from portal.ssh.errors import (
    AuthenticationFailed,
    HostKeyError,
    HostKeyMismatch,
    HostKeyUnknown,
    MachineUnreachable,
    hostport,
)
from portal.ssh.keys import fingerprint, key_line
from portal.ssh.target import Target

__all__ = [
    "PinnedConnection",
    "PinnedKeysOnly",
    "TargetCredentials",
    "host_key_refusal",
    "open_connection",
    "tunnel_refused",
]

_AUTH_METHOD_NAMES = frozenset(
    ("publickey", "password", "keyboard-interactive", "hostbased", "gssapi-with-mic", "none")
)
# RFC 4254 5.1 open-failure codes, as a jump host reports them.
_TUNNEL_REFUSALS = {
    1: "the jump host does not allow forwarding there",
    2: "connection refused or host unreachable",
    3: "unknown channel type",
    4: "resource shortage",
}


def host_key_refusal(target: Target, presented: paramiko.PKey) -> HostKeyError:
    """The error for a presented key that is not pinned: unknown (none pinned) or changed."""
    if not target.pinned:
        return HostKeyUnknown(target.host, target.port, key_line(presented), fingerprint(presented))
    same_type = [p for p in target.pinned if p.get_name() == presented.get_name()]
    expected = [fingerprint(p) for p in (same_type or target.pinned)]
    return HostKeyMismatch(
        target.host, target.port, expected, key_line(presented), fingerprint(presented)
    )


def tunnel_refused(host: str, port: int, gateway: Target, exc: BaseException) -> MachineUnreachable:
    """The error for a `direct-tcpip` channel to host:port that `gateway` did not open."""
    if isinstance(exc, paramiko.ChannelException):
        reason = _TUNNEL_REFUSALS.get(exc.code, "refused")
    elif isinstance(exc, paramiko.SSHException) and "Timeout" in str(exc):
        reason = "timed out"
    else:
        reason = "the jump host connection was lost"
    return MachineUnreachable(
        f"could not connect to {hostport(host, port)} via {gateway.address}: {reason}",
        host=host,
        port=port,
    )


def _is_pinned(target: Target, key: paramiko.PKey) -> bool:
    return any(
        p.get_name() == key.get_name() and p.asbytes() == key.asbytes() for p in target.pinned
    )


class PinnedKeysOnly(paramiko.MissingHostKeyPolicy):
    """Refuse every key the host-key store does not hold (a `RejectPolicy` that says why).

    paramiko asks the policy when the store has no key for the host; the store holds
    exactly the Target's pinned keys, so this is "nothing pinned" (HostKeyUnknown, with
    the key for the trust step) or "pinned, but not of this type" (HostKeyMismatch).
    """

    def __init__(self, target: Target):
        self.target = target

    def missing_host_key(self, client, hostname, key):
        raise host_key_refusal(self.target, key)


class TargetCredentials(AuthStrategy):
    """The Target's key, then its password ("none" when it has neither); nothing else.

    An `AuthStrategy` (paramiko's public auth API) instead of SSHClient's built-in
    fallbacks: those try an agent and `~/.ssh/id_*` files unless told not to, and after a
    partial success ("publickey,keyboard-interactive") prompt on the portal's stdin.
    Failures raise AuthenticationFailed naming the methods the server accepts (known
    method names only: no remote text reaches a message).
    """

    def __init__(self, target: Target):
        super().__init__(ssh_config=paramiko.SSHConfig())
        self.target = target

    def get_sources(self):
        target = self.target
        if target.pkey is not None:
            yield InMemoryPrivateKey(target.username, target.pkey)
        if target.password is not None:
            yield Password(target.username, lambda: target.password)
        if target.pkey is None and target.password is None:
            yield NoneAuth(target.username)

    def authenticate(self, transport: paramiko.Transport) -> AuthResult:
        target = self.target
        result = AuthResult(strategy=self)
        allowed: list[str] = []
        for source in self.get_sources():
            try:
                outcome = source.authenticate(transport)
            except paramiko.BadAuthenticationType as exc:
                allowed, outcome = list(exc.allowed_types), exc
            except paramiko.AuthenticationException as exc:
                outcome = exc
            except (paramiko.SSHException, EOFError, OSError):
                if not transport.is_active():
                    raise unreachable(
                        target.host, target.port, "connection lost during authentication"
                    ) from None
                raise AuthenticationFailed(target.username, target.host, target.port) from None
            result.append(SourceResult(source, outcome))
            if transport.is_authenticated():
                return result
        known = [m for m in allowed if m in _AUTH_METHOD_NAMES]  # never echo other remote text
        detail = f"the server accepts: {', '.join(known)}" if known else None
        raise AuthenticationFailed(target.username, target.host, target.port, detail)


def _isolated_config() -> fabric.Config:
    """A Fabric Config from defaults only: lazy (no fabric.yaml, no env), an explicit empty
    SSHConfig (no ~/.ssh/config, no /etc/ssh/ssh_config)."""
    return fabric.Config(
        ssh_config=paramiko.SSHConfig(),
        lazy=True,
        overrides={"load_ssh_configs": False, "forward_agent": False},
    )


class PinnedConnection(fabric.Connection):
    """A Fabric `Connection` to `target` (see the module docstring for what it trusts)."""

    # Real attributes, not config keys (invoke's DataProxy turns unknown attributes into config).
    target: Target | None = None
    _deadline = 0.0
    _tunnel = None

    def __init__(self, target: Target, gateway: PinnedConnection | None = None):
        super().__init__(
            target.host,
            user=target.username,
            port=target.port,
            config=_isolated_config(),
            gateway=gateway,
            forward_agent=False,
            # Fabric's connect_timeout is a whole number of seconds; the deadline's
            # remainder goes to paramiko as `timeout` etc. at each open() instead.
            connect_timeout=None,
            connect_kwargs={
                "auth_strategy": TargetCredentials(target),
                # Not used with an auth_strategy; stated so that they stay off.
                "allow_agent": False,
                "look_for_keys": False,
                "transport_factory": self._new_transport,
            },
        )
        if (self.host, self.port, self.user) != (target.host, target.port, target.username):
            raise unreachable(target.host, target.port, "invalid host name")
        self.target = target
        # Fabric sets AutoAddPolicy: replace it. The store holds the pinned keys only.
        self.client.set_missing_host_key_policy(PinnedKeysOnly(target))
        store = self.client.get_host_keys()
        name = self.host_key_name
        seen: set[str] = set()
        for pkey in target.pinned:
            # One key per type fits the store (add() replaces); open() swaps in another
            # pinned key of the same type if the server presents that one.
            if pkey.get_name() not in seen:
                seen.add(pkey.get_name())
                store.add(name, pkey.get_name(), pkey)

    @property
    def host_key_name(self) -> str:
        """The name paramiko looks the host up by (`host`, or `[host]:port` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise unreachable(self.host, self.port, "timed out")
        return left

    def _new_transport(self, sock, **kwargs) -> paramiko.Transport:
        """SSHClient's `transport_factory`: our algorithm order, the pinned key types first."""
        transport = new_transport(sock, preferred_key_types(self.target), **kwargs)
        transport.handshake_timeout = max(self._deadline - time.monotonic(), 0.01)
        return transport

    def open(self):
        """Connect: TCP to a checked address (or a tunnel through the gateway), key exchange,
        host key check against the store, authentication, all within `connect_timeout`.

        Raises MachineUnreachable (incl. AuthenticationFailed), HostKeyUnknown,
        HostKeyMismatch or TargetNotAllowed; never a paramiko exception.
        """
        if self.is_connected:
            return None
        self._deadline = time.monotonic() + self.target.connect_timeout
        swapped = False
        while True:
            try:
                return self._open_once()
            except paramiko.BadHostKeyException as exc:
                # The store holds one pinned key per type: a second pinned key of the
                # presented type (e.g. several servers behind one address) is tried once.
                if swapped or not _is_pinned(self.target, exc.key):
                    raise host_key_refusal(self.target, exc.key) from None
                self.client.get_host_keys().add(self.host_key_name, exc.key.get_name(), exc.key)
                swapped = True

    def _open_once(self):
        target = self.target
        sock = None
        kwargs = self.connect_kwargs
        if not self.gateway:
            sock = open_socket(target.host, target.port, self._remaining(), target.allowed)
        try:
            left = self._remaining()
            kwargs.update(
                sock=sock,  # None with a gateway: Fabric asks open_gateway() for the stream
                timeout=left,
                banner_timeout=left,
                auth_timeout=max(left, 0.5),
                channel_timeout=target.connect_timeout,  # later opens without a timeout
            )
            return super().open()
        except (PortalError, paramiko.BadHostKeyException):
            self._abort(sock)
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport = self.client.get_transport()
            # start_client() returns at its timeout with the transport still negotiating
            timed_out = transport is not None and transport.is_active()
            self._abort(sock)
            reason = "timed out during the SSH handshake" if timed_out else handshake_reason(exc)
            raise unreachable(target.host, target.port, reason) from None
        except BaseException:
            self._abort(sock)
            raise
        finally:
            kwargs.pop("sock", None)
            self._tunnel = None

    def _abort(self, sock) -> None:
        """Close whatever a failed open() left: the client's transport, the socket or tunnel."""
        self.client.close()
        for stream in (sock, self._tunnel):
            if stream is not None:
                try:
                    stream.close()
                except (OSError, EOFError, paramiko.SSHException):
                    pass

    def open_gateway(self) -> paramiko.Channel:
        """A `direct-tcpip` channel to our host on the (already open) gateway connection.

        Only another PinnedConnection, never reopened from here (a ProxyCommand string,
        which Fabric also accepts, runs a local command: refused)."""
        gateway = self.gateway
        if not isinstance(gateway, PinnedConnection):
            raise unreachable(self.host, self.port, "unsupported gateway")
        try:
            if not gateway.is_connected:
                raise EOFError
            self._tunnel = gateway.transport.open_channel(
                "direct-tcpip",
                dest_addr=(self.host, self.port),
                src_addr=("127.0.0.1", 0),
                timeout=self._remaining(),
            )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise tunnel_refused(self.host, self.port, gateway.target, exc) from None
        return self._tunnel

    def close(self) -> None:
        """Close the SFTP session (if any) and the connection; never raises."""
        try:
            super().close()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self.client.close()  # also when the transport already died (Fabric skips that)


def open_connection(target: Target, gateway: PinnedConnection | None = None) -> PinnedConnection:
    """An open, authenticated `PinnedConnection` to `target` (through `gateway`, if given)."""
    connection = PinnedConnection(target, gateway=gateway)
    connection.open()
    return connection
