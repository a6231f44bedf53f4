"""Private keys, public keys and fingerprints.

Private keys are parsed with `cryptography` (which knows the OpenSSH format, the
traditional PEM formats and PKCS#8, encrypted or not) and then handed to
paramiko's key classes. Loading in two steps lets us tell "wrong passphrase"
from "not a key at all", which paramiko alone reports the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import struct

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from portal.ssh import kdf
from portal.ssh.errors import (
    InvalidHostKey,
    InvalidPrivateKey,
    PassphraseRequired,
    WrongPassphrase,
)

__all__ = [
    "HOST_KEY_TYPES",
    "fingerprint",
    "generate_ed25519",
    "host_key_algorithms",
    "key_line",
    "parse_host_key_line",
    "parse_private_key",
    "public_key_line",
]

#: Public key types accepted as host keys and as client keys (no DSA, no certificates).
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)

#: The longest private key text accepted (the add-machine page's maxlength too).
KEY_TEXT_MAX = 64 * 1024
#: The longest host key line accepted.
HOST_KEY_LINE_MAX = 16 * 1024
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")

# --------------------------------------------------------------------------- private keys


def parse_private_key(text: str | bytes, passphrase: str | bytes | None = None) -> paramiko.PKey:
    """Parse a pasted private key into a paramiko key that can sign.

    Accepts ed25519, RSA and ECDSA keys in the OpenSSH format
    (`-----BEGIN OPENSSH PRIVATE KEY-----`), traditional PEM
    (`BEGIN RSA/EC PRIVATE KEY`, optionally `Proc-Type: 4,ENCRYPTED`) and PKCS#8
    (`BEGIN [ENCRYPTED] PRIVATE KEY`). A passphrase given for an unencrypted key
    is ignored.

    Raises `InvalidPrivateKey` for anything that is not such a key,
    `PassphraseRequired` when the key is encrypted and no passphrase was given,
    `WrongPassphrase` when the passphrase does not decrypt it.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPrivateKey(
                "the private key is not text (paste the key file's content)"
            ) from None
    if not isinstance(text, str) or not text.strip():
        raise InvalidPrivateKey("the private key is empty")
    if len(text) > KEY_TEXT_MAX:
        raise InvalidPrivateKey("the private key is too long")
    data = _normalise_pem(text).encode("ascii", "replace")

    match = _PEM_BEGIN.search(text)
    if match is None:
        stripped = text.strip()
        if stripped.startswith("PuTTY-User-Key-File"):
            raise InvalidPrivateKey(
                "PuTTY .ppk keys are not supported: convert it with "
                "`puttygen key.ppk -O private-openssh -o key`"
            )
        if stripped.split(" ", 1)[0] in HOST_KEY_TYPES or stripped.startswith("ssh-"):
            raise InvalidPrivateKey("this is a public key: paste the private key instead")
        raise InvalidPrivateKey()
    label = match.group(1)
    if label == "OPENSSH PRIVATE KEY":
        loader = serialization.load_ssh_private_key
    elif label in ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"):
        loader = serialization.load_pem_private_key
    elif label == "DSA PRIVATE KEY":
        raise InvalidPrivateKey("DSA keys are not supported: use an ed25519, RSA or ECDSA key")
    elif label.endswith("PUBLIC KEY"):
        raise InvalidPrivateKey("this is a public key: paste the private key instead")
    else:
        raise InvalidPrivateKey()

    kdf.check_cost(label, data)

    password = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
    if password == b"":
        password = None

    # First learn whether the key is encrypted at all, so that a later decryption
    # failure can be reported as a wrong passphrase rather than a bad key.
    try:
        key = loader(data, password=None)
    except TypeError:  # "password-protected, but password was not provided"
        if password is None:
            raise PassphraseRequired() from None
        try:
            key = loader(data, password=password)
        except (ValueError, TypeError):
            raise WrongPassphrase() from None
    except (ValueError, binascii.Error, IndexError, struct.error):
        raise InvalidPrivateKey() from None
    except Exception:  # cryptography's UnsupportedAlgorithm and friends
        raise InvalidPrivateKey() from None
    return _to_paramiko(key)


def _normalise_pem(text: str) -> str:
    """Undo what browsers and editors do to pasted keys (CRLF, indentation, no final newline)."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    # Keep inner blank lines: encrypted traditional PEM separates its headers with one.
    return "\n".join(lines).strip("\n") + "\n"


def _to_paramiko(key) -> paramiko.PKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise InvalidPrivateKey(
                f"RSA keys shorter than 2048 bits are not accepted ({key.key_size})"
            )
        return paramiko.RSAKey(key=key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise InvalidPrivateKey(f"unsupported ECDSA curve {key.curve.name}")
        return paramiko.ECDSAKey(vals=(key, key.public_key()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        # paramiko's Ed25519Key only loads from the OpenSSH format: re-serialise in memory.
        text = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode("ascii")
        return paramiko.Ed25519Key.from_private_key(io.StringIO(text))
    raise InvalidPrivateKey(
        f"unsupported key type ({type(key).__name__.replace('PrivateKey', '')}): "
        "use an ed25519, RSA or ECDSA key"
    )


def generate_ed25519(comment: str = "", passphrase: str | None = None) -> tuple[str, str]:
    """A new ed25519 key pair: (private key in OpenSSH format, public key line).

    The public line is what goes into `~/.ssh/authorized_keys`.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    private_text = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    comment = " ".join(comment.split())  # no newlines or tabs in an authorized_keys line
    return private_text, f"{public} {comment}" if comment else public


# --------------------------------------------------------------------------- public keys


def key_line(pkey: paramiko.PKey) -> str:
    """`"<type> <base64>"` for a key (public part only, no comment)."""
    return f"{pkey.get_name()} {pkey.get_base64()}"


public_key_line = key_line


def fingerprint(key: paramiko.PKey | str) -> str:
    """The SHA256 fingerprint of a key, as `ssh-keygen -lf` prints it (`SHA256:...`).

    `key` is a paramiko key (public or private) or a public key line
    (`"ssh-ed25519 AAAA... comment"` or a known_hosts line).
    """
    if isinstance(key, str):
        _, b64, _ = parse_host_key_line(key)
        blob = base64.b64decode(b64)
    elif isinstance(key, paramiko.PKey):
        blob = key.asbytes()
    else:
        raise TypeError(f"expected a paramiko key or a key line, not {type(key).__name__}")
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def parse_host_key_line(line: str) -> tuple[str, str, paramiko.PKey]:
    """Parse a public key line into (key type, base64 blob, paramiko key).

    Accepts `"ssh-ed25519 AAAA... [comment]"` (a `.pub` file or `ssh-keyscan`
    output without host) and known_hosts lines `"host[,host2] ssh-ed25519 AAAA..."`
    (including `[host]:port` and hashed host names). Rejects DSA, certificates and
    `@cert-authority`/`@revoked` lines. Raises `InvalidHostKey`.
    """
    if not isinstance(line, str):
        raise InvalidHostKey()
    line = line.strip()
    if not line or "\n" in line or len(line) > HOST_KEY_LINE_MAX:
        raise InvalidHostKey("expected exactly one host key line")
    fields = line.split()
    if fields[0].startswith("@"):
        raise InvalidHostKey(f"{fields[0]} lines are not supported: paste a plain host key")
    if fields[0] in HOST_KEY_TYPES:
        keytype_index = 0
    elif len(fields) >= 3 and fields[1] in HOST_KEY_TYPES:
        keytype_index = 1
    else:
        candidate = (
            fields[1] if len(fields) >= 2 and not fields[1].startswith("AAAA") else fields[0]
        )
        if candidate.startswith("ssh-dss"):
            raise InvalidHostKey("DSA host keys are not supported")
        if "cert-v01@openssh.com" in candidate:
            raise InvalidHostKey("certificates are not supported as host keys")
        raise InvalidHostKey()
    if len(fields) <= keytype_index + 1:
        raise InvalidHostKey("the host key line has no key data")
    keytype, b64 = fields[keytype_index], fields[keytype_index + 1]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidHostKey("the host key is not valid base64") from None
    try:
        (name_len,) = struct.unpack(">I", blob[:4])
        embedded = blob[4 : 4 + name_len].decode("ascii")
    except (struct.error, UnicodeDecodeError):
        raise InvalidHostKey("the host key data is malformed") from None
    if embedded != keytype:
        raise InvalidHostKey(f"the key data is a {embedded or 'malformed'} key, not {keytype}")
    try:
        pkey = paramiko.PKey.from_type_string(keytype, blob)
    except Exception:  # SSHException, ValueError, UnknownKeyType, crypto errors
        raise InvalidHostKey("the host key data is malformed") from None
    return keytype, base64.b64encode(blob).decode("ascii"), pkey


def host_key_algorithms(keytype: str) -> tuple[str, ...]:
    """Host key algorithms to offer in key exchange for a key type (RSA keys sign with SHA-2)."""
    if keytype == "ssh-rsa":
        return ("rsa-sha2-512", "rsa-sha2-256")
    return (keytype,)
