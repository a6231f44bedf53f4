"""Pasted private keys that ask for absurd key-derivation work (2^31 bcrypt rounds or PBKDF2
iterations: hours of CPU) are refused from their header, before any decryption, on the
JSON API and on the page form; ordinary encrypted keys still work."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

# Without the header check each refused key below keeps a CPU busy for hours: the marker
# (not a timing assertion) turns that into a failure.
pytestmark = pytest.mark.timeout(60, method="thread")

HUGE = 2**31 - 1
PASSPHRASE = "correct horse"


def _machine_count(app) -> int:
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.machines.models import Machine

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(Machine)).scalar()


def _pem(label: str, der: bytes) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def _openssh_key(rounds: int, build_rounds: int = 16) -> str:
    """A real ed25519 key encrypted by cryptography with `build_rounds` bcrypt rounds, whose
    header then says `rounds` (what an attacker edits: the field is not authenticated)."""
    key = ed25519.Ed25519PrivateKey.generate()
    enc = (
        serialization.PrivateFormat.OpenSSH.encryption_builder()
        .kdf_rounds(build_rounds)
        .build(PASSPHRASE.encode())
    )
    text = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, enc
    ).decode()
    body = base64.b64decode("".join(text.strip().splitlines()[1:-1]))
    pos = len(b"openssh-key-v1\0")
    for _ in range(2):  # ciphername, kdfname
        (n,) = struct.unpack_from(">I", body, pos)
        pos += 4 + n
    pos += 4  # kdfoptions' length
    (salt_len,) = struct.unpack_from(">I", body, pos)
    at = pos + 4 + salt_len
    assert struct.unpack_from(">I", body, at)[0] == build_rounds
    body = body[:at] + struct.pack(">I", rounds) + body[at + 4 :]
    return _pem("OPENSSH PRIVATE KEY", body)


# a minimal DER writer for EncryptedPrivateKeyInfo (RFC 5958 / 8018)
def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    head = (
        bytes([n])
        if n < 128
        else bytes([0x80 | ((n.bit_length() + 7) // 8)])
        + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + head + body


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _int(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    a, b, *rest = (int(x) for x in dotted.split("."))
    out = bytearray([40 * a + b])
    for v in rest:
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _octets(b: bytes) -> bytes:
    return _tlv(0x04, b)


def _pbes2_pbkdf2_key(iterations: int) -> str:
    """PBES2 / PBKDF2-HMAC-SHA256 / AES-256-CBC with `iterations` (random ciphertext: the
    passphrase is wrong for it whatever it is, which only shows after the derivation)."""
    kdf = _seq(
        _oid("1.2.840.113549.1.5.12"),
        _seq(_octets(os.urandom(16)), _int(iterations), _seq(_oid("1.2.840.113549.2.9"))),
    )
    enc = _seq(_oid("2.16.840.1.101.3.4.1.42"), _octets(os.urandom(16)))
    algorithm = _seq(_oid("1.2.840.113549.1.5.13"), _seq(kdf, enc))
    return _pem("ENCRYPTED PRIVATE KEY", _seq(algorithm, _octets(os.urandom(64))))


def _pbes2_scrypt_key(n: int, r: int = 8, p: int = 1) -> str:
    kdf = _seq(
        _oid("1.3.6.1.4.1.11591.4.11"),
        _seq(_octets(os.urandom(16)), _int(n), _int(r), _int(p)),
    )
    enc = _seq(_oid("2.16.840.1.101.3.4.1.42"), _octets(os.urandom(16)))
    algorithm = _seq(_oid("1.2.840.113549.1.5.13"), _seq(kdf, enc))
    return _pem("ENCRYPTED PRIVATE KEY", _seq(algorithm, _octets(os.urandom(64))))


def _pkcs12_pbe_key(iterations: int) -> str:
    """pbeWithSHAAnd3-KeyTripleDES-CBC (what `openssl pkcs8 -v1 PBE-SHA1-3DES` writes)."""
    algorithm = _seq(
        _oid("1.2.840.113549.1.12.1.3"), _seq(_octets(os.urandom(8)), _int(iterations))
    )
    return _pem("ENCRYPTED PRIVATE KEY", _seq(algorithm, _octets(os.urandom(64))))


def _data(sshd, private_key: str, passphrase: str | None = PASSPHRASE) -> dict:
    data = {
        "name": "kdf",
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "auth_method": "key",
        "host_key": sshd.host_key_lines[0],
        "private_key": private_key,
        "verify": False,
    }
    if passphrase is not None:
        data["passphrase"] = passphrase
    return data


COSTLY = {
    "openssh-bcrypt-2^31": lambda: _openssh_key(HUGE),
    "openssh-bcrypt-101": lambda: _openssh_key(101),
    "pkcs8-pbkdf2-2^31": lambda: _pbes2_pbkdf2_key(HUGE),
    "pkcs8-pbkdf2-10M": lambda: _pbes2_pbkdf2_key(10_000_000),
    "pkcs8-scrypt-2^30": lambda: _pbes2_scrypt_key(2**30),
    "pkcs12-pbe-2^31": lambda: _pkcs12_pbe_key(HUGE),
}


@pytest.mark.parametrize("kind", list(COSTLY))
@pytest.mark.parametrize("passphrase", [PASSPHRASE, None])
def test_costly_key_derivation_is_refused_on_the_api(
    client, make_user, auth, sshd, kind, passphrase
):
    alice = make_user("alice")
    r = client.post(
        "/api/machines", json=_data(sshd, COSTLY[kind](), passphrase), headers=auth(alice)
    )
    assert r.status_code == 400, r.json
    assert r.json["field"] == "private_key"
    assert "at most" in r.json["error"]
    assert _machine_count(client.application) == 0


def test_costly_key_derivation_is_refused_on_the_page(client, login, make_user, sshd):
    alice = make_user("alice")
    csrf = login(alice)
    form = {"csrf_token": csrf, **_data(sshd, _openssh_key(HUGE))}
    form.pop("verify")
    r = client.post("/machines/new", data=form)
    html = r.get_data(as_text=True)
    assert r.status_code == 422
    assert "bcrypt rounds" in html and "at most 100" in html
    assert _machine_count(client.application) == 0


def test_crafted_keys_reach_the_decryption_when_cheap(client, make_user, auth, sshd):
    """The same crafting with a sane cost is a well-formed key that cryptography derives and
    decrypts (then finds the passphrase wrong): the refusals above are the cost check."""
    alice = make_user("alice")
    for key in (_pbes2_pbkdf2_key(2048), _pkcs12_pbe_key(2048), _openssh_key(16, 4)):
        r = client.post("/api/machines", json=_data(sshd, key), headers=auth(alice))
        assert r.status_code == 400, r.json
        assert r.json["field"] == "passphrase", r.json


@pytest.mark.parametrize("rounds", [16, 100])
def test_ordinary_encrypted_openssh_key_is_accepted(client, make_user, auth, sshd, rounds):
    alice = make_user("alice")
    key = _openssh_key(rounds, build_rounds=rounds)
    r = client.post("/api/machines", json=_data(sshd, key), headers=auth(alice))
    assert r.status_code == 201, r.json


def test_ordinary_encrypted_pkcs8_key_is_accepted(client, make_user, auth, sshd):
    alice = make_user("alice")
    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )
    r = client.post("/api/machines", json=_data(sshd, key.decode()), headers=auth(alice))
    assert r.status_code == 201, r.json


@pytest.mark.parametrize(
    "der",
    [
        b"\x30\x84\xff\xff\xff\xff",  # a length far past the end
        b"\x30\x03\x02\x01\x00",  # not an EncryptedPrivateKeyInfo
        b"",
    ],
)
def test_malformed_encrypted_pkcs8_is_a_clear_400(client, make_user, auth, sshd, der):
    alice = make_user("alice")
    key = _pem("ENCRYPTED PRIVATE KEY", der)
    r = client.post("/api/machines", json=_data(sshd, key), headers=auth(alice))
    assert r.status_code == 400, r.json
    assert r.json["field"] == "private_key" and r.json["error"]
