"""Audit events to syslog: PORTAL_AUDIT_SYSLOG names the receiver — `udp://host:port`,
`tcp://host:port` or a local socket path (`/dev/log`). Each event, once its transaction has
committed, goes out as one message (over TCP, one line each): the `portal-audit:` tag and the event as JSON (what
GET /api/audit answers; details never hold secrets). The facility is
PORTAL_AUDIT_SYSLOG_FACILITY (default `authpriv`), the priority `info` for results `ok`
and `warning` otherwise.

Sent by the audit writer's thread through the standard library's SysLogHandler, never by
the request that caused the event. A receiver that is down loses messages (UDP) or gets
them when it is back (TCP reconnects on the next event); the audit table keeps them all.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import socket
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

TAG = "portal-audit: "


class Forwarder:
    def __init__(self, address, socktype: int, facility: str) -> None:
        self.address, self.socktype = address, socktype
        self.facility = logging.handlers.SysLogHandler.facility_names[facility]
        self.handler: logging.handlers.SysLogHandler | None = None
        self.logger = logging.getLogger("portal.audit.forward")
        self.logger.propagate = False  # events go to syslog only, not the portal's own log
        self.logger.setLevel(logging.INFO)

    def _handler(self) -> logging.handlers.SysLogHandler:
        if self.handler is None:
            handler = logging.handlers.SysLogHandler(
                address=self.address, facility=self.facility, socktype=self.socktype
            )
            handler.ident = TAG
            handler.append_nul = False  # (not in RFC 3164/5424; receivers show it)
            if self.socktype == socket.SOCK_STREAM:  # TCP: one line per message (RFC 6587)
                handler.setFormatter(logging.Formatter("%(message)s\n"))
            handler.handleError = self._failed  # type: ignore[method-assign]
            self.logger.addHandler(handler)
            self.handler = handler
        return self.handler

    def _failed(self, record) -> None:
        log.warning("audit syslog: could not send an event to %s", self.address)
        self.close()  # a TCP receiver that went away: connect again next time

    def send(self, events: list[dict]) -> None:
        try:
            self._handler()
        except OSError as exc:
            log.warning("audit syslog: %s unreachable (%s)", self.address, exc)
            return
        for event in events:
            level = logging.INFO if event.get("result") == "ok" else logging.WARNING
            self.logger.log(level, json.dumps(event, sort_keys=True, separators=(",", ":")))

    def close(self) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            self.logger.removeHandler(handler)
            handler.close()


def parse_target(raw: str) -> tuple[object, int]:
    """`udp://host:port` / `tcp://host:port` / `/path/of/socket` -> (address, socket type)."""
    raw = raw.strip()
    if raw.startswith("/"):
        return raw, socket.SOCK_DGRAM
    parts = urlsplit(raw)
    kinds = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
    if parts.scheme not in kinds or not parts.hostname:
        raise ValueError(
            f"PORTAL_AUDIT_SYSLOG must be udp://host:port, tcp://host:port or a socket path, "
            f"not {raw!r}"
        )
    return (parts.hostname, parts.port or 514), kinds[parts.scheme]


def from_config(config) -> Forwarder | None:
    raw = config.get("PORTAL_AUDIT_SYSLOG") or ""
    if not raw.strip():
        return None
    address, socktype = parse_target(raw)
    facility = (config.get("PORTAL_AUDIT_SYSLOG_FACILITY") or "authpriv").strip().lower()
    if facility not in logging.handlers.SysLogHandler.facility_names:
        raise ValueError(f"PORTAL_AUDIT_SYSLOG_FACILITY {facility!r} is not a syslog facility")
    return Forwarder(address, socktype, facility)
