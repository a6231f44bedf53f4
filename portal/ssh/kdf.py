"""How much work a pasted private key asks for before its passphrase is even checked.

A key encrypted with 2^31 bcrypt rounds or PBKDF2 iterations takes hours to decrypt: its
key-derivation parameters are read from the header alone (OpenSSH's `kdfoptions`, PKCS#8's
AlgorithmIdentifier) and a key over the caps is refused at once (`check_cost`).
"""

from __future__ import annotations

import base64
import binascii
import struct

from portal.ssh.errors import InvalidPrivateKey

# Key-derivation work a pasted key may ask for before its passphrase is even checked: each
# cap decodes in well under a second here. ssh-keygen's default is 16 bcrypt rounds (`-a 100`
# is a common hardening advice, ~0.7 s); OpenSSL writes PKCS#8 with 2048 PBKDF2 iterations.
MAX_BCRYPT_ROUNDS = 100
MAX_PBE_ITERATIONS = 1_000_000
MAX_SCRYPT_COST = 2**19  # N * r * p: 64 MiB of memory at p = 1


def _pem_body(data: bytes, label: str) -> bytes:
    """The DER/binary content of the first `label` PEM block (InvalidPrivateKey if unreadable)."""
    begin, end = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
    start = data.find(begin)
    stop = data.find(end, start)
    if start < 0 or stop < 0:
        raise InvalidPrivateKey()
    try:
        return base64.b64decode(b"".join(data[start + len(begin) : stop].split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPrivateKey() from None


def check_cost(label: str, data: bytes) -> None:
    """Refuse a key whose passphrase derivation would burn a CPU (2^31 bcrypt rounds or
    PBKDF2 iterations take hours), from its header alone, before anything is decrypted.

    OpenSSH keys name their KDF in the clear (`kdfname`, `kdfoptions`: salt, rounds);
    encrypted PKCS#8 carries it in the AlgorithmIdentifier (PBES2 with PBKDF2 or scrypt,
    PBES1, PKCS#12 PBE). Traditional encrypted PEM derives its key with one MD5 round.
    """
    if label == "OPENSSH PRIVATE KEY":
        rounds = _openssh_bcrypt_rounds(_pem_body(data, label))
        if rounds is not None and rounds > MAX_BCRYPT_ROUNDS:
            raise InvalidPrivateKey(
                f"the key is encrypted with {rounds} bcrypt rounds; at most "
                f"{MAX_BCRYPT_ROUNDS} are accepted (re-encrypt it: `ssh-keygen -p -a 16 -f key`)"
            )
    elif label == "ENCRYPTED PRIVATE KEY":
        try:
            kind, cost = _pkcs8_kdf_cost(_pem_body(data, label))
        except (IndexError, ValueError):
            raise InvalidPrivateKey() from None
        limit = MAX_SCRYPT_COST if kind == "scrypt" else MAX_PBE_ITERATIONS
        if cost > limit:
            what = "scrypt cost (N*r*p)" if kind == "scrypt" else "key-derivation iterations"
            raise InvalidPrivateKey(
                f"the key is encrypted with {cost} {what}; at most {limit} are accepted "
                "(re-encrypt it, e.g. `ssh-keygen -p -f key` for the OpenSSH format)"
            )


def _openssh_bcrypt_rounds(blob: bytes) -> int | None:
    """The bcrypt rounds of an `openssh-key-v1` blob (None when it is not encrypted)."""
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        raise InvalidPrivateKey()
    pos = len(magic)
    fields = []
    try:
        for _ in range(3):  # ciphername, kdfname, kdfoptions
            (n,) = struct.unpack_from(">I", blob, pos)
            if pos + 4 + n > len(blob):
                raise InvalidPrivateKey()
            fields.append(blob[pos + 4 : pos + 4 + n])
            pos += 4 + n
        kdfname, options = fields[1], fields[2]
        if kdfname != b"bcrypt":
            return None  # "none" (not encrypted); anything else cryptography refuses
        (salt_len,) = struct.unpack_from(">I", options, 0)
        (rounds,) = struct.unpack_from(">I", options, 4 + salt_len)
    except struct.error:
        raise InvalidPrivateKey() from None
    return rounds


# DER object identifiers (content bytes) of password-based encryption schemes
_PKCS5 = bytes.fromhex("2a864886f70d0105")  # 1.2.840.113549.1.5: PBES1 (.1 .3 .4 .6 .10 .11)
_PBES2 = _PKCS5 + b"\x0d"  # 1.2.840.113549.1.5.13
_PBKDF2 = _PKCS5 + b"\x0c"  # 1.2.840.113549.1.5.12
_PKCS12_PBE = bytes.fromhex("2a864886f70d010c01")  # 1.2.840.113549.1.12.1.x
_SCRYPT = bytes.fromhex("2b06010401da47040b")  # 1.3.6.1.4.1.11591.4.11


def _der(buf: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """One DER element of type `tag` at `pos`: (its content, the position after it)."""
    if buf[pos] != tag:
        raise ValueError("unexpected DER tag")
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        width = n & 0x7F
        if not 1 <= width <= 4:
            raise ValueError("unsupported DER length")
        n = int.from_bytes(buf[pos : pos + width], "big")
        pos += width
    if pos + n > len(buf):
        raise ValueError("truncated DER")
    return buf[pos : pos + n], pos + n


def _der_int(buf: bytes, pos: int) -> tuple[int, int]:
    body, pos = _der(buf, pos, 0x02)
    if not body or len(body) > 16:
        raise ValueError("unsupported DER integer")
    value = int.from_bytes(body, "big", signed=True)
    if value < 1:
        raise ValueError("not a positive DER integer")
    return value, pos


def _pkcs8_kdf_cost(der: bytes) -> tuple[str, int]:
    """("iterations", n) or ("scrypt", N*r*p) for an EncryptedPrivateKeyInfo."""
    SEQ, OID, OCTETS = 0x30, 0x06, 0x04
    info, _ = _der(der, 0, SEQ)
    algorithm, _ = _der(info, 0, SEQ)
    oid, pos = _der(algorithm, 0, OID)
    params, _ = _der(algorithm, pos, SEQ)
    if oid == _PBES2:
        kdf, _ = _der(params, 0, SEQ)
        kdf_oid, pos = _der(kdf, 0, OID)
        kdf_params, _ = _der(kdf, pos, SEQ)
        if kdf_oid == _PBKDF2:
            _, pos = _der(kdf_params, 0, OCTETS)  # salt
            return "iterations", _der_int(kdf_params, pos)[0]
        if kdf_oid == _SCRYPT:
            _, pos = _der(kdf_params, 0, OCTETS)  # salt
            n, pos = _der_int(kdf_params, pos)
            r, pos = _der_int(kdf_params, pos)
            p, pos = _der_int(kdf_params, pos)
            return "scrypt", n * r * p
    elif oid.startswith((_PKCS5, _PKCS12_PBE)) and len(oid) in (
        len(_PKCS5) + 1,
        len(_PKCS12_PBE) + 1,
    ):
        _, pos = _der(params, 0, OCTETS)  # salt
        return "iterations", _der_int(params, pos)[0]
    raise InvalidPrivateKey("the private key's encryption scheme is not supported")
