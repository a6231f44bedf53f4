"""A shorter path for keystrokes: one SSH_MSG_CHANNEL_DATA packet, built and sealed here.

paramiko's generic send (`Channel.sendall` -> `Message` -> `Transport._send_user_message`
-> `Packetizer.send_message`) runs ~40 Python calls per packet. A keystroke in the browser
terminal waits for all of them, on a CPU that was idle a moment before (cold caches make
each step many times slower than in a loop). `send_data` does the same work for the one
case that matters — a small data packet on an AES-GCM connection — in a few steps, on
paramiko's own state and under paramiko's own locks, in the same order:

1. take send window from the channel (under `channel.lock`), as `Channel._send` does;
2. hold `clear_to_send_lock` and check `clear_to_send`, as `_send_user_message` does (so
   no packet goes out during a key exchange);
3. under the packetizer's write lock: pad with random bytes, seal with the transport's
   AES-GCM engine (packet length as associated data, RFC 5647), step the invocation
   counter and the sequence number, write, count bytes and packets toward a rekey.

Anything else (another cipher, compression, packet dumps, a full window, a key exchange
in progress, a paramiko whose internals moved) goes through `chansend.sendall` (paramiko's generic packets, never after the CLOSE).
"""

from __future__ import annotations

import os
import socket
import struct
import time

import paramiko

from portal.ssh.chansend import sendall

__all__ = ["send_data"]

_P = "_Packetizer__"  # paramiko.packet.Packetizer's private attributes
_SMALL = 4096  # larger input (a paste) takes paramiko's path: it splits by window and packet


def _unavailable() -> bool:
    """False when paramiko's Packetizer has the attributes this module relies on."""
    try:
        pk = paramiko.Packetizer(None)  # type: ignore[arg-type]
        d = pk.__dict__
        for name in (
            "write_lock",
            "aead_out",
            "compress_engine_out",
            "dump_packets",
            "block_size_out",
            "block_engine_out",
            "iv_out",
            "sequence_number_out",
            "sent_bytes",
            "sent_packets",
            "need_rekey",
            "socket",
            "keepalive_last",
            "received_bytes_overflow",
            "received_packets_overflow",
        ):
            d[_P + name]  # noqa: B018
        return not (callable(pk.write_all) and callable(pk._trigger_rekey))
    except Exception:
        return True


_enabled = not _unavailable()  # False on a paramiko whose internals moved


def send_data(channel: paramiko.Channel, data: bytes) -> None:
    """`channel.sendall(data)`, through the short path when it applies."""
    if not (_enabled and 0 < len(data) <= _SMALL and _send_small(channel, data)):
        sendall(channel, data)


# Packetizer attribute names, joined once (not per keystroke)
_WRITE_LOCK, _AEAD, _COMPRESS, _DUMP = (
    _P + n for n in ("write_lock", "aead_out", "compress_engine_out", "dump_packets")
)
_BSIZE, _IV, _ENGINE, _SEQ = (
    _P + n for n in ("block_size_out", "iv_out", "block_engine_out", "sequence_number_out")
)
_SOCKET, _KEEPALIVE = _P + "socket", _P + "keepalive_last"
_SENT_BYTES, _SENT_PACKETS, _NEED_REKEY = (
    _P + n for n in ("sent_bytes", "sent_packets", "need_rekey")
)


def _send_small(ch: paramiko.Channel, data: bytes) -> bool:
    """Send `data` as one packet; False (nothing sent, nothing changed) if it does not apply.

    One function on purpose: on a CPU that was idle, each Python call on the keystroke's way
    costs microseconds (bench/bench_terminal.py's trace)."""
    n = len(data)
    with ch.lock:
        if ch.closed or ch.eof_sent or ch.out_window_size < n or n > ch.out_max_packet_size - 64:
            return False
        ch.out_window_size -= n
    t = ch.transport
    pk = t.packetizer
    d = pk.__dict__
    sent = False
    lock = t.clear_to_send_lock
    lock.acquire()
    try:
        # `closed` again, now that no CLOSE of ours can go out before this packet (chansend)
        if t.active and t.clear_to_send.is_set() and not ch.closed:
            with d[_WRITE_LOCK]:
                if d[_AEAD] and d[_COMPRESS] is None and not d[_DUMP]:
                    # Packetizer.send_message for an AEAD cipher, without compression:
                    # SSH_MSG_CHANNEL_DATA (94), recipient channel, data; random padding;
                    # sealed with the packet length as associated data (RFC 5647).
                    size = n + 9
                    bsize = d[_BSIZE]
                    padding = 3 + bsize - ((size + 4) % bsize)
                    length = (size + padding + 1).to_bytes(4, "big")
                    iv = d[_IV]
                    out = length + d[_ENGINE].encrypt(
                        iv,
                        struct.pack(">BBII", padding, 94, ch.remote_chanid, n)
                        + data
                        + _padding(d, padding),
                        length,
                    )
                    # RFC 5647 7.1: the invocation counter (the IV's last 8 bytes) steps per packet
                    d[_IV] = iv[:4] + (
                        (int.from_bytes(iv[4:], "big") + 1) & 0xFFFFFFFFFFFFFFFF
                    ).to_bytes(8, "big")
                    d[_SEQ] = (d[_SEQ] + 1) & 0xFFFFFFFF
                    _write(pk, d, out)
                    d[_SENT_BYTES] += len(out)
                    d[_SENT_PACKETS] += 1
                    if (
                        d[_SENT_PACKETS] >= pk.REKEY_PACKETS or d[_SENT_BYTES] >= pk.REKEY_BYTES
                    ) and not d[_NEED_REKEY]:
                        d[_P + "received_bytes_overflow"] = 0
                        d[_P + "received_packets_overflow"] = 0
                        pk._trigger_rekey()
                    sent = True
    finally:
        lock.release()
        if not sent:
            with ch.lock:  # give the window back: paramiko's path takes it again
                ch.out_window_size += n
    return sent


_POOL = 16 * 1024  # random padding drawn ahead per connection: one getrandom per ~1000 keys


def _padding(d: dict, n: int) -> bytes:
    """`n` random padding bytes, each used once, from a per-connection pool (write lock
    held). RFC 4253 asks for random padding; under AES-GCM it is encrypted anyway. A
    getrandom() call per keystroke cost ~10 us on a cold CPU; one per 16 KiB does not."""
    pool = d.get("_portal_pad")
    if pool is None or pool[1] + n > _POOL:
        pool = d["_portal_pad"] = [os.urandom(_POOL), 0]
    at = pool[1]
    pool[1] = at + n
    return pool[0][at : at + n]


def _write(pk, d: dict, out: bytes) -> None:
    """`Packetizer.write_all(out)` in one write(2) when the kernel takes it all at once.

    paramiko's `write_all` is a retry loop around `send` (and on a socket with a Python
    timeout each `send` is a poll(2) and then a send(2)). A keystroke's packet (~70 bytes)
    fits an idle socket's buffer: one `os.write` on the descriptor sends it. A partial write, a
    full buffer or anything other than a plain socket (a jump host's channel) goes on
    through paramiko's `write_all`, which also sends what is left."""
    sock = d[_SOCKET]
    raw = getattr(sock, "_sock", sock)  # under connect.ReadAhead
    # a socket that never blocks for long: non-blocking under a Python timeout, or with the
    # kernel's send timeout (connect.ReadAhead)
    if type(raw) is socket.socket and (
        raw.gettimeout() is not None or sock is not raw and sock.timed
    ):
        try:
            n = os.write(raw.fileno(), out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = 0  # let paramiko meet the error and raise as it does
        d[_KEEPALIVE] = time.time()
        if n == len(out):
            return
        out = out[n:]
    pk.write_all(out)
