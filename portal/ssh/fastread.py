"""A shorter path for received packets on an AES-GCM connection.

Every byte of terminal output, an echoed keystroke first of all, is read by paramiko's
transport thread through `Packetizer.read_message`: two `read_all` calls, a dozen checks for
ciphers, MACs, compression and packet dumps that do not apply, the IV stepped through
helpers, a name looked up for a debug line. On a CPU that was idle a moment before, each
step is several times slower than in a loop, and the echo waits for all of them.
`install(transport)` gives the transport's packetizer a `read_message` that does the same
work for the one case that matters — an AEAD cipher without compression or packet dumps —
in a few steps, on paramiko's own state:

1. the first block through paramiko's `read_all` (so its timeouts, keep-alives, the
   rekey check and a closed transport behave exactly as before), the rest of the packet
   from `connect.ReadAhead`'s buffer when it is there (it usually is: one kernel read
   takes the whole packet), else through `read_all`;
2. open it with the transport's AES-GCM engine (packet length as associated data,
   RFC 5647), step the invocation counter and the sequence number, count bytes and
   packets toward a rekey, as paramiko does;
3. SSH_MSG_CHANNEL_DATA for a known channel, once the connection is set up, goes
   straight into the channel's buffer (what `Channel._feed` does) and the transport's
   loop is handed an SSH_MSG_IGNORE, so it takes its own per-packet steps (rekey,
   `active`) before the next read; everything else is returned as a Message, as paramiko
   returns it.

Anything else (during a key exchange, another cipher, compression, packet dumps, a
pending rekey, bytes left over from the banner, a paramiko whose internals moved) goes to
paramiko's own `read_message`.
"""

from __future__ import annotations

import paramiko

__all__ = ["install"]

_P = "_Packetizer__"  # paramiko.packet.Packetizer's private attributes
_NAMES = (
    "aead_in",
    "etm_in",
    "compress_engine_in",
    "dump_packets",
    "remainder",
    "need_rekey",
    "block_size_in",
    "mac_size_in",
    "block_engine_in",
    "iv_in",
    "sequence_number_in",
    "received_bytes",
    "received_packets",
    "received_bytes_overflow",
    "received_packets_overflow",
    "socket",
)


def _unavailable() -> bool:
    """False when paramiko's Packetizer has the attributes this module relies on."""
    try:
        pk = paramiko.Packetizer(None)  # type: ignore[arg-type]
        d = pk.__dict__
        for name in _NAMES:
            d[_P + name]  # noqa: B018
        return not (
            callable(pk.read_all)
            and callable(pk.read_message)
            and callable(pk._trigger_rekey)
            and hasattr(pk, "_initial_kex_done")
        )
    except Exception:
        return True


_enabled = not _unavailable()  # False on a paramiko whose internals moved


def install(transport: paramiko.Transport) -> None:
    """Use the short path for this transport's received packets (before it starts)."""
    if _enabled:
        pk = transport.packetizer
        pk.read_message = _reader(pk, pk.read_message, transport)


_IGNORE = paramiko.common.MSG_IGNORE
_DATA = paramiko.common.MSG_CHANNEL_DATA
_FEED = paramiko.Channel._feed


def _reader(pk, slow, transport=None):
    d = pk.__dict__
    read_all = pk.read_all
    Message = paramiko.Message
    aead, etm, comp, dump, rem, rekey = (_P + n for n in _NAMES[:6])
    bsize, msize, engine, iv_in, seq_in = (_P + n for n in _NAMES[6:11])
    got_bytes, got_packets = _P + "received_bytes", _P + "received_packets"
    sock = _P + "socket"

    def read_message():
        if not d[aead] or d[etm] or d[comp] is not None or d[dump] or d[rem] or d[rekey]:
            return slow()
        bs = d[bsize]
        header = read_all(bs, check_rekey=True)
        size = int.from_bytes(header[:4], "big")
        rest = size - bs + 4 + d[msize]
        take = getattr(d[sock], "take", None)
        tail = take(rest) if take is not None else None
        if tail is None:
            tail = read_all(rest, check_rekey=False)
        iv = d[iv_in]
        packet = d[engine].decrypt(iv, header[4:] + tail, header[:4])
        # RFC 5647 7.1: the invocation counter is the IV's last 8 bytes, one per packet.
        d[iv_in] = iv[:4] + ((int.from_bytes(iv[4:], "big") + 1) & 0xFFFFFFFFFFFFFFFF).to_bytes(
            8, "big"
        )
        payload = packet[1 : size - packet[0]]
        seq = d[seq_in]
        nxt = (seq + 1) & 0xFFFFFFFF
        if nxt == 0 and not pk._initial_kex_done:
            raise paramiko.SSHException("Sequence number rolled over during initial kex!")
        d[seq_in] = nxt
        d[got_bytes] += size + d[msize] + 4
        d[got_packets] += 1
        if d[got_packets] >= pk.REKEY_PACKETS or d[got_bytes] >= pk.REKEY_BYTES:
            if not d[rekey]:  # only ask once, as paramiko does
                d[_P + "received_bytes_overflow"] = 0
                d[_P + "received_packets_overflow"] = 0
                pk._trigger_rekey()
        ptype = payload[0]
        if ptype == _DATA and transport is not None and _deliver(transport, payload):
            # Handed to its channel here, as the transport's loop would have (Channel._feed);
            # the loop gets an SSH_MSG_IGNORE, so it does its own per-packet steps (rekey,
            # `active`) before the next read, after the data is on its way.
            return _IGNORE, _EMPTY
        msg = Message(payload[1:])
        msg.seqno = seq
        return ptype, msg

    return read_message


_EMPTY = paramiko.Message(b"")


def _deliver(t: paramiko.Transport, payload: bytes) -> bool:
    """SSH_MSG_CHANNEL_DATA straight into its channel's buffer; False: the transport's
    loop should handle it (during a key exchange or authentication, an unknown channel, a
    channel class of its own, a packet not exactly in the expected shape)."""
    if t._expected_packet or not t.initial_kex_done or len(payload) < 9:
        return False
    chan = t._channels.get(int.from_bytes(payload[1:5], "big"))
    if chan is None or type(chan)._feed is not _FEED:
        return False
    if int.from_bytes(payload[5:9], "big") != len(payload) - 9:
        return False
    chan.in_buffer.feed(payload[9:])
    return True
