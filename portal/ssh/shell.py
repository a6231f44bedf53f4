"""Interactive shells with a PTY, for the browser terminal."""

from __future__ import annotations

import re

import paramiko

from portal.errors import ValidationError
from portal.ssh.chansend import send_request
from portal.ssh.connect import unreachable
from portal.ssh.exec import close_channel
from portal.ssh.pool import ConnectionPool, get_pool
from portal.ssh.target import Target

__all__ = ["open_shell", "resize"]

_TERM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _check_size(cols: int, rows: int) -> tuple[int, int]:
    try:
        cols, rows = int(cols), int(rows)
    except (TypeError, ValueError):
        raise ValidationError("cols and rows must be numbers", field="cols") from None
    if not (1 <= cols <= 1000 and 1 <= rows <= 1000):
        raise ValidationError("cols and rows must be between 1 and 1000", field="cols")
    return cols, rows


def open_shell(
    target: Target,
    cols: int = 80,
    rows: int = 24,
    term: str = "xterm-256color",
    env: dict[str, str] | None = None,
    pool: ConnectionPool | None = None,
) -> paramiko.Channel:
    """Open a login shell with a PTY of `cols` x `rows` on a pooled connection.

    Returns the paramiko Channel: `send()` keystrokes, `recv()` output (stdout
    and stderr are merged by the PTY), `resize_pty()` on resize (or `resize()`),
    `exit_status_ready()`/`recv_exit_status()` for the end. The channel counts
    against its pooled connection until it is closed: always `close()` it.

    `env` is sent as SSH `env` requests; sshd only applies the names its
    `AcceptEnv` allows (typically `LANG` and `LC_*`) and silently ignores others.
    """
    cols, rows = _check_size(cols, rows)
    if not isinstance(term, str) or not _TERM_RE.match(term):
        raise ValidationError("invalid terminal type", field="term")
    env = dict(env or {})
    for name, value in env.items():
        if not _ENV_NAME_RE.match(str(name)) or "\0" in str(value):
            raise ValidationError(f"invalid environment variable {name!r}", field="env")

    channel = (pool or get_pool()).open_session(target)
    try:
        if env:
            channel.update_environment({str(k): str(v) for k, v in env.items()})
        channel.get_pty(term=term, width=cols, height=rows)
        channel.invoke_shell()
    except (paramiko.SSHException, EOFError, OSError):
        close_channel(channel)
        raise unreachable(target.host, target.port, "could not start a shell") from None
    except BaseException:
        close_channel(channel)
        raise
    return channel


def resize(channel: paramiko.Channel, cols: int, rows: int) -> None:
    """Tell the remote PTY its new size (the remote program gets SIGWINCH)."""
    cols, rows = _check_size(cols, rows)
    try:
        # paramiko's resize_pty() may send after the channel's CLOSE (see chansend)
        send_request(channel, "window-change", cols, rows, 0, 0)
    except (paramiko.SSHException, OSError, EOFError):
        pass  # the channel is closing; the terminal bridge notices on its next read
