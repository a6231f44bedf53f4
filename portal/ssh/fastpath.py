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


def _send_small(ch: paramiko.Channel, data: bytes) -> bool:
    """Send `data` as one packet; False (nothing sent, nothing changed) if it does not apply."""
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
            with d[_P + "write_lock"]:
                if (
                    d[_P + "aead_out"]
                    and d[_P + "compress_engine_out"] is None
                    and not d[_P + "dump_packets"]
                ):
                    # SSH_MSG_CHANNEL_DATA (94), recipient channel, data
                    payload = struct.pack(">BII", 94, ch.remote_chanid, n) + data
                    _seal_and_write(pk, d, payload)
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

    paramiko's socket has a timeout, so each `send` is a poll(2) and then a send(2), plus
    paramiko's retry loop around it. A keystroke's packet (~70 bytes) fits an idle socket's
    buffer: one `os.write` on the (non-blocking) descriptor sends it. A partial write, a
    full buffer or anything other than a plain socket (a jump host's channel) goes on
    through paramiko's `write_all`, which also sends what is left."""
    sock = d[_P + "socket"]
    raw = getattr(sock, "_sock", sock)  # under connect.ReadAhead
    if type(raw) is socket.socket and raw.gettimeout() is not None:
        try:
            n = os.write(raw.fileno(), out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = 0  # let paramiko meet the error and raise as it does
        d[_P + "keepalive_last"] = time.time()
        if n == len(out):
            return
        out = out[n:]
    pk.write_all(out)


def _seal_and_write(pk, d: dict, payload: bytes) -> None:
    """Packetizer.send_message for an AEAD cipher, without compression (write lock held)."""
    bsize = d[_P + "block_size_out"]
    padding = 3 + bsize - ((len(payload) + 4) % bsize)
    length = struct.pack(">I", len(payload) + padding + 1)
    iv = d[_P + "iv_out"]
    out = length + d[_P + "block_engine_out"].encrypt(
        iv, bytes((padding,)) + payload + _padding(d, padding), length
    )
    # RFC 5647 7.1: the invocation counter is the IV's last 8 bytes, incremented per packet.
    counter = (int.from_bytes(iv[4:], "big") + 1) & 0xFFFFFFFFFFFFFFFF
    d[_P + "iv_out"] = iv[:4] + counter.to_bytes(8, "big")
    d[_P + "sequence_number_out"] = (d[_P + "sequence_number_out"] + 1) & 0xFFFFFFFF
    _write(pk, d, out)
    d[_P + "sent_bytes"] += len(out)
    d[_P + "sent_packets"] += 1
    if (
        d[_P + "sent_packets"] >= pk.REKEY_PACKETS or d[_P + "sent_bytes"] >= pk.REKEY_BYTES
    ) and not d[_P + "need_rekey"]:
        d[_P + "received_bytes_overflow"] = 0
        d[_P + "received_packets_overflow"] = 0
        pk._trigger_rekey()
