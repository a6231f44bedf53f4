"""portal.ssh against a real OpenSSH sshd (tests/fixtures/sshd.py): no doubles."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from portal.errors import HostKeyError, MachineUnreachable, ValidationError
from portal.ssh import (
    AuthenticationFailed,
    CommandTimeout,
    ConnectionPool,
    HostKeyMismatch,
    HostKeyUnknown,
    InvalidHostKey,
    InvalidPrivateKey,
    PassphraseRequired,
    Target,
    WrongPassphrase,
    fingerprint,
    generate_ed25519,
    open_shell,
    parse_host_key_line,
    parse_private_key,
    run,
    scan_host_key,
)
from tests.fixtures.sshd import _descendants, keygen_fingerprint

pytestmark = pytest.mark.timeout(60)


def wait_until(predicate, timeout=10.0, interval=0.05):
    """Poll `predicate` until true or `timeout` (a bound against hangs, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def remote_pids(pattern: str) -> list[str]:
    out = subprocess.run(
        ["pgrep", "-u", "portaltest", "-f", pattern], capture_output=True, text=True
    ).stdout
    return out.split()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there


def read_until_closed(channel: paramiko.Channel, timeout: float = 20.0) -> str:
    data = b""
    channel.settimeout(timeout)
    while True:
        chunk = channel.recv(65536)
        if not chunk:
            return data.decode("utf-8", "replace")
        data += chunk


def terminal_lines(output: str) -> list[str]:
    """PTY output as lines: CR/LF split, escape sequences (prompt colours, bracketed paste) removed."""
    output = re.sub(r"\x1b\][^\x07]*\x07|\x1b\[[0-9;?]*[A-Za-z]", "", output)
    return [line.strip() for line in re.split(r"[\r\n]+", output)]


# --------------------------------------------------------------------------- exec


def test_exec_with_key_auth(sshd, ssh_pool):
    result = run(sshd.target(), "echo hello; id -un", pool=ssh_pool)
    assert result.exit_code == 0
    assert result.stdout == "hello\nportaltest\n"
    assert result.stderr == ""
    assert result.truncated is False
    assert result.duration_ms >= 0


def test_exec_with_password_auth(sshd, ssh_pool):
    result = run(sshd.target(auth="password"), "id -un", pool=ssh_pool)
    assert (result.exit_code, result.stdout) == (0, "portaltest\n")


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_codes(sshd, ssh_pool, code):
    assert run(sshd.target(), f"exit {code}", pool=ssh_pool).exit_code == code


def test_stdout_and_stderr_are_separate(sshd, ssh_pool):
    result = run(sshd.target(), "echo out; echo err >&2; echo out2; exit 3", pool=ssh_pool)
    assert result.stdout == "out\nout2\n"
    assert result.stderr == "err\n"
    assert result.exit_code == 3


def test_stdin_is_closed_so_readers_do_not_hang(sshd, ssh_pool):
    result = run(sshd.target(), "cat; echo done", timeout=20, pool=ssh_pool)
    assert (result.exit_code, result.stdout) == (0, "done\n")


def test_invalid_utf8_is_replaced(sshd, ssh_pool):
    result = run(sshd.target(), r"printf 'caf\303\251 \377\n'", pool=ssh_pool)
    assert result.stdout == "café \ufffd\n"


def test_large_output_is_truncated_without_hanging(sshd, ssh_pool):
    limit = 1024 * 1024
    result = run(
        sshd.target(),
        "head -c 5000000 /dev/zero | tr '\\0' a; echo tail >&2",
        max_output=limit,
        pool=ssh_pool,
    )
    assert result.exit_code == 0  # the remote side was never blocked by the cap
    assert result.truncated is True
    assert len(result.stdout) == limit and set(result.stdout) == {"a"}
    assert result.stderr == "tail\n"


def test_both_streams_flooded_at_once_do_not_deadlock(sshd, ssh_pool):
    result = run(
        sshd.target(),
        "(yes out | head -c 4000000) & (yes err | head -c 4000000 >&2); wait",
        max_output=64 * 1024,
        pool=ssh_pool,
    )
    assert result.exit_code == 0
    assert result.truncated is True
    assert len(result.stdout) == len(result.stderr) == 64 * 1024
    assert result.stdout.startswith("out\nout\n") and result.stderr.startswith("err\nerr\n")


def test_output_just_under_the_cap_is_not_truncated(sshd, ssh_pool):
    result = run(
        sshd.target(), "head -c 1000 /dev/zero | tr '\\0' b", max_output=1000, pool=ssh_pool
    )
    assert len(result.stdout) == 1000
    assert result.truncated is False


def test_truncation_does_not_split_a_utf8_character(sshd, ssh_pool):
    # 5 bytes: "a", then "é" twice (2 bytes each). A cap of 4 cuts the second "é" in half:
    # the half character is dropped, not shown as U+FFFD.
    result = run(sshd.target(), r"printf 'a\303\251\303\251'", max_output=4, pool=ssh_pool)
    assert result.truncated is True
    assert result.stdout == "aé"


def test_empty_command_is_rejected(sshd, ssh_pool):
    with pytest.raises(ValidationError):
        run(sshd.target(), "   ", pool=ssh_pool)


def test_timeout_kills_the_remote_process(sshd, ssh_pool):
    marker = f"sleep {secrets.randbelow(80000) + 10000}"
    with pytest.raises(CommandTimeout) as info:
        run(sshd.target(), marker, timeout=1, pool=ssh_pool)
    assert info.value.message == "command timed out after 1 s"
    assert info.value.status == 504
    assert wait_until(lambda: not remote_pids(f"^{marker}$")), "remote process survived the timeout"
    # The connection is still good for the next command.
    assert run(sshd.target(), "echo alive", pool=ssh_pool).stdout == "alive\n"


# --------------------------------------------------------------------------- host keys


def test_unknown_host_key_is_refused_with_the_presented_key(sshd, ssh_pool):
    with pytest.raises(HostKeyUnknown) as info:
        run(sshd.target(pin=False), "true", pool=ssh_pool)
    err = info.value
    assert isinstance(err, HostKeyError) and err.status == 502
    assert err.key_line in sshd.host_key_lines
    assert err.fingerprint == fingerprint(err.key_line)
    assert err.fingerprint in sshd.host_key_fingerprints
    assert err.fingerprint in err.message
    assert ssh_pool.stats()["connections"] == 0  # nothing unverified is pooled


def test_changed_host_key_is_refused_with_both_fingerprints(sshd, ssh_pool):
    _, impostor_line = generate_ed25519("not the real host key")
    target = sshd.target(host_keys=(impostor_line,))
    with pytest.raises(HostKeyMismatch) as info:
        run(target, "true", pool=ssh_pool)
    err = info.value
    expected_fp = fingerprint(impostor_line)
    presented_fp = sshd.host_key_fingerprints[sshd.host_key_lines.index(err.key_line)]
    assert err.expected == [expected_fp]
    assert err.presented == presented_fp
    assert err.message == (
        f"host key for 127.0.0.1:{sshd.port} changed: expected {expected_fp}, got {presented_fp}"
        " — if this change is expected, an admin of the machine can re-trust it"
    )


def test_the_pinned_key_type_is_negotiated(sshd, ssh_pool):
    """A server with ed25519 and RSA keys presents the RSA one when only RSA is pinned."""
    rsa_line = next(line for line in sshd.host_key_lines if line.startswith("ssh-rsa "))
    target = sshd.target(host_keys=(rsa_line,))
    assert run(target, "true", pool=ssh_pool).exit_code == 0
    (conn,) = ssh_pool.connections(target)
    assert conn.transport.get_remote_server_key().get_name() == "ssh-rsa"


def test_connections_are_fabric_connections_holding_only_the_pinned_keys(sshd, ssh_pool):
    import fabric

    target = sshd.target()
    run(target, "true", pool=ssh_pool)
    (conn,) = ssh_pool.connections(target)
    assert isinstance(conn.connection, fabric.Connection)
    assert conn.connection.transport is conn.transport
    store = conn.connection.client.get_host_keys()
    assert store.keys() == [f"[127.0.0.1]:{sshd.port}"]
    pinned = store.lookup(f"[127.0.0.1]:{sshd.port}")
    assert sorted(f"{k.get_name()} {k.get_base64()}" for k in pinned.values()) == sorted(
        sshd.host_key_lines
    )


def test_a_second_pinned_key_of_the_same_type_is_accepted(sshd, ssh_pool):
    """Several keys of one type may be pinned (servers behind one address): the one the
    server presents is accepted whichever comes first; none of them matching is refused."""
    _, impostor = generate_ed25519("another server behind the address")
    real = next(line for line in sshd.host_key_lines if line.startswith("ssh-ed25519 "))
    assert run(sshd.target(host_keys=(impostor, real)), "echo ok", pool=ssh_pool).ok
    _, other = generate_ed25519("a third one")
    with pytest.raises(HostKeyMismatch) as info:
        run(sshd.target(host_keys=(impostor, other)), "true", pool=ssh_pool)
    assert info.value.expected == [fingerprint(impostor), fingerprint(other)]


def test_nothing_on_the_portal_host_makes_a_connection_trusted_or_authenticated(
    make_sshd, ssh_pool, tmp_path, monkeypatch
):
    """The portal host's ~/.ssh/known_hosts (with the real keys), ~/.ssh/config (a
    ProxyCommand, an IdentityFile), ~/.ssh/id_ed25519 and an SSH agent holding keys the server
    accepts: none of them is used. A wrongly pinned target is still refused and a wrong
    password still fails (SSHClient's defaults would trust known_hosts, log in with the
    key file or the agent, and Fabric's default config would run the ProxyCommand)."""
    server = make_sshd("homefiles")
    home = tmp_path / "home"
    dot_ssh = home / ".ssh"
    dot_ssh.mkdir(parents=True)
    (dot_ssh / "known_hosts").write_text("\n".join(server.known_hosts_lines()) + "\n")
    marker = tmp_path / "proxycommand-ran"
    key_file_text, key_file_public = generate_ed25519("portal host key file")
    (dot_ssh / "id_ed25519").write_text(key_file_text)
    (dot_ssh / "id_ed25519").chmod(0o600)
    (dot_ssh / "config").write_text(
        f"Host *\n  ProxyCommand touch {marker}\n  IdentityFile {dot_ssh / 'id_ed25519'}\n"
    )
    server.authorize_key(key_file_public)
    agent_text, agent_public = generate_ed25519("portal host agent key")
    server.authorize_key(agent_public)
    (tmp_path / "agent_key").write_text(agent_text)
    (tmp_path / "agent_key").chmod(0o600)
    agent_sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_sock)], stdout=subprocess.DEVNULL)
    try:
        assert wait_until(agent_sock.exists)
        env = {**os.environ, "SSH_AUTH_SOCK": str(agent_sock)}
        subprocess.run(
            ["ssh-add", str(tmp_path / "agent_key")], env=env, check=True, capture_output=True
        )
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent_sock))
        probe = paramiko.Agent()
        try:
            assert probe.get_keys()  # the agent is there and holds the key
        finally:
            probe.close()

        _, impostor = generate_ed25519("impostor")
        with pytest.raises(HostKeyMismatch):
            run(server.target(host_keys=(impostor,)), "true", pool=ssh_pool)
        with pytest.raises(HostKeyUnknown):
            run(server.target(pin=False), "true", pool=ssh_pool)
        wrong = server.target(auth="password", password="wrong-" + secrets.token_hex(4))
        with pytest.raises(AuthenticationFailed):
            run(wrong, "true", pool=ssh_pool)
        assert ssh_pool.stats()["connections"] == 0
        # The target's own credentials still work, straight to the server.
        assert run(server.target(), "echo ok", pool=ssh_pool).stdout == "ok\n"
        assert not marker.exists()
        assert "Accepted publickey" in server.log_text()
        assert "portal host" not in server.log_text()
    finally:
        agent.terminate()
        agent.wait(10)


def test_scan_host_key_matches_ssh_keygen(sshd):
    found = scan_host_key(sshd.host, sshd.port, timeout=10)
    assert sorted(fp for _, fp in found) == sorted(sshd.host_key_fingerprints)
    assert sorted(line for line, _ in found) == sorted(sshd.host_key_lines)
    # The fixture's fingerprints come from `ssh-keygen -lf`; double-check one independently.
    assert all(fingerprint(line) == fp for line, fp in found)


def test_scanned_keys_then_work_as_pins(sshd, ssh_pool):
    lines = [line for line, _ in scan_host_key(sshd.host, sshd.port)]
    assert run(sshd.target(host_keys=lines), "true", pool=ssh_pool).exit_code == 0


def test_scan_of_a_closed_port_is_unreachable():
    with pytest.raises(MachineUnreachable, match="connection refused"):
        scan_host_key("127.0.0.1", closed_port(), timeout=5)


# --------------------------------------------------------------------------- connect failures


def test_refused_port_is_unreachable(sshd, ssh_pool):
    port = closed_port()
    target = sshd.target(port=port, connect_timeout=5)
    with pytest.raises(MachineUnreachable) as info:
        run(target, "true", pool=ssh_pool)
    assert info.value.message == f"could not connect to 127.0.0.1:{port}: connection refused"
    assert info.value.status == 502


def test_unresolvable_host_is_unreachable(sshd, ssh_pool):
    target = sshd.target(host="no-such-host.invalid", connect_timeout=5)
    with pytest.raises(MachineUnreachable, match="could not resolve"):
        run(target, "true", pool=ssh_pool)


def test_non_ssh_server_is_unreachable(ssh_pool):
    """A port that accepts TCP but never speaks SSH fails within connect_timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        target = Target(
            "127.0.0.1", listener.getsockname()[1], "nobody", password="x", connect_timeout=1
        )
        with pytest.raises(MachineUnreachable, match="could not connect to 127.0.0.1"):
            run(target, "true", pool=ssh_pool)


def test_wrong_password_is_an_authentication_failure(sshd, ssh_pool):
    wrong = "wrong-" + secrets.token_hex(8)
    with pytest.raises(AuthenticationFailed) as info:
        run(sshd.target(auth="password", password=wrong), "true", pool=ssh_pool)
    assert info.value.message.startswith("SSH authentication failed for portaltest@127.0.0.1")
    assert wrong not in str(info.value) and wrong not in repr(info.value.extra)
    assert isinstance(info.value, MachineUnreachable)
    assert ssh_pool.stats()["connections"] == 0


def test_unauthorized_key_is_an_authentication_failure(sshd, ssh_pool):
    private_text, _ = generate_ed25519("never authorized")
    target = sshd.target(pkey=parse_private_key(private_text))
    with pytest.raises(AuthenticationFailed, match="SSH authentication failed for portaltest@"):
        run(target, "true", pool=ssh_pool)


def test_generated_key_works_once_authorized(sshd, ssh_pool):
    private_text, public_line = generate_ed25519("portal generated")
    assert public_line.startswith("ssh-ed25519 ") and public_line.endswith(" portal generated")
    sshd.authorize_key(public_line)
    target = sshd.target(pkey=parse_private_key(private_text))
    assert run(target, "echo ok", pool=ssh_pool).stdout == "ok\n"


# --------------------------------------------------------------------------- keys


@pytest.fixture(scope="module")
def keyfiles(tmp_path_factory):
    """Real key files from ssh-keygen and cryptography, in every format we accept."""
    d = tmp_path_factory.mktemp("keys")
    made = {}

    def keygen(name, *args):
        subprocess.run(["ssh-keygen", "-q", "-C", "t", "-f", str(d / name), *args], check=True)
        made[name] = d / name

    keygen("ed25519", "-t", "ed25519", "-N", "")
    keygen("ed25519_enc", "-t", "ed25519", "-N", "correct horse")
    keygen("rsa", "-t", "rsa", "-b", "2048", "-N", "")
    keygen("rsa_pem", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "")
    keygen("rsa_pem_enc", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "correct horse")
    keygen("ecdsa", "-t", "ecdsa", "-N", "")
    keygen("ecdsa_pem", "-t", "ecdsa", "-b", "384", "-m", "PEM", "-N", "")
    keygen("ecdsa_enc", "-t", "ecdsa", "-b", "521", "-N", "correct horse")
    # PKCS#8 (BEGIN [ENCRYPTED] PRIVATE KEY), as openssl writes them.
    for name, key, enc in (
        ("rsa_pkcs8_enc", rsa.generate_private_key(65537, 2048), b"correct horse"),
        ("ec_pkcs8", ec.generate_private_key(ec.SECP256R1()), None),
    ):
        encryption = (
            serialization.BestAvailableEncryption(enc) if enc else serialization.NoEncryption()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        (d / name).write_bytes(pem)
        pub = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        (d / f"{name}.pub").write_bytes(pub + b" t\n")
        made[name] = d / name
    return made


@pytest.mark.parametrize(
    ("name", "passphrase", "keytype"),
    [
        ("ed25519", None, "ssh-ed25519"),
        ("ed25519_enc", "correct horse", "ssh-ed25519"),
        ("rsa", None, "ssh-rsa"),
        ("rsa_pem", None, "ssh-rsa"),
        ("rsa_pem_enc", "correct horse", "ssh-rsa"),
        ("ecdsa", None, "ecdsa-sha2-nistp256"),
        ("ecdsa_pem", None, "ecdsa-sha2-nistp384"),
        ("ecdsa_enc", "correct horse", "ecdsa-sha2-nistp521"),
        ("rsa_pkcs8_enc", "correct horse", "ssh-rsa"),
        ("ec_pkcs8", None, "ecdsa-sha2-nistp256"),
    ],
)
def test_parse_private_key_formats(keyfiles, name, passphrase, keytype):
    text = keyfiles[name].read_text()
    pkey = parse_private_key(text, passphrase)
    assert pkey.can_sign()
    assert pkey.get_name() == keytype
    assert fingerprint(pkey) == keygen_fingerprint(f"{keyfiles[name]}.pub")
    # Pasted through a browser: CRLF line ends and surrounding blanks are fine.
    assert parse_private_key("\r\n  " + text.replace("\n", "\r\n") + "  ", passphrase) == pkey


@pytest.mark.parametrize("name", ["ed25519_enc", "rsa_pem_enc", "ecdsa_enc", "rsa_pkcs8_enc"])
def test_wrong_and_missing_passphrase(keyfiles, name):
    text = keyfiles[name].read_text()
    with pytest.raises(WrongPassphrase) as info:
        parse_private_key(text, "battery staple")
    assert not isinstance(info.value, PassphraseRequired)
    assert info.value.field == "passphrase" and info.value.status == 400
    assert "battery" not in info.value.message
    with pytest.raises(PassphraseRequired):
        parse_private_key(text)


def test_passphrase_for_an_unencrypted_key_is_ignored(keyfiles):
    assert parse_private_key(keyfiles["ed25519"].read_text(), "unused").can_sign()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAnotakey\n-----END OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGmxByf3Pt8UUz7L4PopaVO0niJ54nJsKN+/Mp9HXs5I me",
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n",
    ],
)
def test_invalid_private_keys(text):
    with pytest.raises(InvalidPrivateKey) as info:
        parse_private_key(text)
    assert isinstance(info.value, ValidationError)
    assert info.value.field == "private_key"


def test_dsa_keys_are_rejected(tmp_path):
    path = tmp_path / "dsa"
    made = subprocess.run(
        ["ssh-keygen", "-q", "-t", "dsa", "-N", "", "-f", str(path)], capture_output=True
    )
    if made.returncode != 0:  # newer OpenSSH builds cannot make DSA keys at all
        pytest.skip("this ssh-keygen has no DSA support")
    with pytest.raises(InvalidPrivateKey):
        parse_private_key(path.read_text())


def test_parse_host_key_line_forms(sshd):
    line = sshd.host_key_lines[0]
    keytype, b64 = line.split()
    for form in (
        line,
        f"{line} root@somewhere",
        f"  {line}  \n",
        f"[127.0.0.1]:{sshd.port} {line}",
        f"host.example,10.0.0.1 {line} comment",
        f"|1|c2FsdA==|aGFzaA== {line}",
    ):
        parsed_type, parsed_b64, pkey = parse_host_key_line(form)
        assert (parsed_type, parsed_b64) == (keytype, b64)
        assert fingerprint(pkey) == sshd.host_key_fingerprints[0]
        assert fingerprint(form) == sshd.host_key_fingerprints[0]


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!",
        "ssh-ed25519 AAAA",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "@revoked host ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGmxByf3Pt8UUz7L4PopaVO0niJ54nJsKN+/Mp9HXs5I",
        "two\nlines",
    ],
)
def test_parse_host_key_line_rejects(line):
    with pytest.raises(InvalidHostKey) as info:
        parse_host_key_line(line)
    assert info.value.field == "host_key"


def test_host_key_line_type_must_match_its_data(sshd):
    ed_b64 = sshd.host_key_lines[0].split()[1]
    with pytest.raises(InvalidHostKey, match="not ssh-rsa"):
        parse_host_key_line(f"ssh-rsa {ed_b64}")


def test_fingerprints_match_ssh_keygen_for_every_host_key(sshd):
    for line, expected in zip(sshd.host_key_lines, sshd.host_key_fingerprints, strict=True):
        assert fingerprint(line) == expected
        assert fingerprint(parse_host_key_line(line)[2]) == expected


# --------------------------------------------------------------------------- Target


def test_target_repr_has_no_secrets(sshd):
    target = sshd.target(auth="both")
    text = repr(target) + str(target) + repr(target.pool_key)
    assert sshd.password not in text
    assert "PRIVATE" not in text and target.pkey.get_base64() not in text
    assert "auth=key+password" in text


def test_target_pool_key_tracks_credentials_and_pins(sshd):
    a = sshd.target(auth="password")
    assert a.pool_key == sshd.target(auth="password").pool_key
    assert a.pool_key != sshd.target(auth="password", password="other").pool_key
    assert a.pool_key != sshd.target(auth="password", host_keys=sshd.host_key_lines[:1]).pool_key
    assert a.pool_key[:3] == ("127.0.0.1", sshd.port, "portaltest")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": ""},
        {"host": "a b"},
        {"host": "root@example.test"},  # Fabric would read a user from it
        {"host": "example.test:2222"},  # ... or a port
        {"port": 0},
        {"port": 70000},
        {"username": ""},
        {"username": "a@b"},
        {"connect_timeout": 0},
        {"host_keys": ("garbage",)},
    ],
)
def test_target_validation(kwargs):
    base = {"host": "example.test", "port": 22, "username": "u", "password": "p"}
    with pytest.raises(ValidationError):
        Target(**{**base, **kwargs})


# --------------------------------------------------------------------------- the pool


def test_second_exec_reuses_the_connection(sshd, ssh_pool):
    target = sshd.target()
    run(target, "true", pool=ssh_pool)
    (first,) = ssh_pool.connections(target)
    run(target, "true", pool=ssh_pool)
    (second,) = ssh_pool.connections(target)
    assert second.transport is first.transport
    assert ssh_pool.handshakes == 1


def test_concurrent_first_use_shares_one_handshake(sshd, ssh_pool):
    target = sshd.target()
    results = run_concurrently(lambda i: run(target, f"echo {i}", pool=ssh_pool), 8)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]
    assert ssh_pool.handshakes == 1


def test_dead_connection_is_replaced(sshd, ssh_pool):
    target = sshd.target()
    run(target, "true", pool=ssh_pool)
    (conn,) = ssh_pool.connections(target)
    conn.transport.close()  # as if the network dropped it
    assert run(target, "echo again", pool=ssh_pool).stdout == "again\n"
    assert ssh_pool.handshakes == 2
    (replacement,) = ssh_pool.connections(target)
    assert replacement.transport is not conn.transport


def test_sftp_on_a_pooled_connection(sshd, ssh_pool):
    """Fabric's Connection.sftp() on the pool's connection lists the remote home directory."""
    target = sshd.target()
    name = f"sftp-marker-{secrets.token_hex(4)}"
    run(target, f"touch ~/{name}", pool=ssh_pool)
    connection = ssh_pool.connection(target)
    sftp = connection.sftp()
    assert name in sftp.listdir(".")
    assert sftp.normalize(".") == run(target, "pwd", pool=ssh_pool).stdout.strip()
    (conn,) = ssh_pool.connections(target)
    assert conn.connection is connection and ssh_pool.handshakes == 1
    run(target, f"rm ~/{name}", pool=ssh_pool)


def test_idle_connections_are_closed_after_the_ttl(sshd):
    pool = ConnectionPool(idle_ttl=0.2)
    try:
        run(sshd.target(), "true", pool=pool)
        assert pool.stats()["connections"] == 1
        assert wait_until(lambda: pool.stats()["connections"] == 0), (
            "idle connection was not reaped"
        )
    finally:
        pool.close_all()


class _ConnectionDiesAfterOpen(ConnectionPool):
    """A real pool whose first channel's connection is then cut by the server: the
    per-connection sshd process is killed between the channel open and the exec request."""

    def __init__(self, server):
        super().__init__()
        self.server = server
        self.opened = 0

    def open_session(self, target):
        channel = super().open_session(target)
        self.opened += 1
        if self.opened == 1:
            for pid in _descendants(self.server.pid):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while channel.transport.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not channel.transport.is_active()
        return channel


def test_a_connection_lost_before_the_command_was_sent_is_retried_once(make_sshd):
    import shutil
    import tempfile
    from pathlib import Path

    server = make_sshd("dies")
    where = Path(tempfile.mkdtemp(prefix="portal-retry-"))  # pytest's tmp is 0700
    where.chmod(0o777)
    marker = where / "runs"
    pool = _ConnectionDiesAfterOpen(server)
    try:
        result = run(server.target(), f"echo ran >> {marker} && echo done", pool=pool)
        assert result.ok and result.stdout == "done\n"
        assert marker.read_text() == "ran\n"  # ran exactly once
        assert pool.opened == 2 and pool.handshakes == 2
    finally:
        pool.close_all()
        shutil.rmtree(where, ignore_errors=True)


def test_closing_a_channel_on_a_dead_connection_does_not_raise(make_sshd):
    from portal.ssh import close_channel

    server = make_sshd("dies2")
    pool = ConnectionPool()
    try:
        channel = pool.open_session(server.target())
        for pid in _descendants(server.pid):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while channel.transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        close_channel(channel)
        close_channel(None)
        assert channel.closed
    finally:
        pool.close_all()


def test_no_eof_after_our_close(sshd, ssh_pool):
    """sshd drops the whole connection when an EOF comes for a channel it has freed. The
    command ends while its EOF waits to be sent: the server's CLOSE is handled and answered
    first, and the EOF must then be dropped, not sent after the CLOSE (paramiko's
    shutdown_write() built it before the CLOSE and sent it after; on CI that cut a pooled
    connection under a neighbour's command)."""
    from portal.ssh.chansend import send_eof

    target = sshd.target()
    run(target, "true", pool=ssh_pool)
    (conn,) = ssh_pool.connections(target)
    transport = conn.transport
    for _ in range(8):  # which waiting sender goes first is up to the scheduler
        channel = ssh_pool.open_session(target)
        channel.exec_command("sleep 0.1")
        sent = []
        transport.clear_to_send.clear()  # as during a key exchange: every sender waits
        try:
            eof = threading.Thread(target=lambda ch=channel: sent.append(send_eof(ch)))
            eof.start()
            assert wait_until(lambda ch=channel: ch.closed)  # the server's CLOSE is handled
            time.sleep(0.05)  # our CLOSE and the EOF both wait to be sent now
        finally:
            transport.clear_to_send.set()
        eof.join(10)
        assert sent == [False]
        channel.close()
    # the connection survived: the next command runs on it
    assert run(target, "echo still here", pool=ssh_pool).stdout == "still here\n"
    (conn,) = ssh_pool.connections(target)
    assert conn.transport is transport and transport.is_active()
    assert "nonexistent channel" not in sshd.log_text()


def test_channel_requests_after_close_are_dropped(sshd, ssh_pool):
    """Resize and signal requests on a channel the server closed are not sent (sshd would
    drop the connection for an unknown channel); the connection keeps working."""
    from portal.ssh.chansend import send_request

    target = sshd.target()
    channel = open_shell(target, pool=ssh_pool)
    transport = channel.get_transport()
    assert send_request(channel, "window-change", 100, 30, 0, 0)  # open: sent
    channel.sendall(b"exit\n")
    read_until_closed(channel)
    assert wait_until(lambda: channel.closed)
    assert not send_request(channel, "window-change", 90, 20, 0, 0)
    assert not send_request(channel, "signal", "INT")
    assert run(target, "echo alive", pool=ssh_pool).stdout == "alive\n"
    assert transport.is_active()
    assert "unknown channel" not in sshd.log_text()


def test_close_all_closes_connections(sshd):
    pool = ConnectionPool()
    run(sshd.target(), "true", pool=pool)
    (conn,) = pool.connections()
    pool.close_all()
    assert not conn.transport.is_active()
    assert pool.stats()["connections"] == 0


def run_concurrently(fn, n):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def worker(i):
        try:
            barrier.wait(timeout=20)
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert not errors, errors
    return results


def test_more_than_ten_channels_open_more_connections(sshd, ssh_pool):
    """The pool stays under OpenSSH's default MaxSessions (10) per connection by itself."""
    target = sshd.target()
    n = 25
    results = run_concurrently(lambda i: run(target, f"sleep 1; echo {i}", pool=ssh_pool), n)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(n)]
    conns = ssh_pool.connections(target)
    assert len(conns) >= 3  # ceil(25 / 10)
    assert ssh_pool.handshakes == len(conns)


def test_more_than_ten_channels_on_one_connection_when_allowed(sshd):
    """With max_channels raised (the fixture's sshd allows 200 sessions), one connection carries all."""
    pool = ConnectionPool(max_channels=50)
    try:
        target = sshd.target()
        results = run_concurrently(lambda i: run(target, f"sleep 1; echo {i}", pool=pool), 25)
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(25)]
        assert pool.handshakes == 1
    finally:
        pool.close_all()


def test_server_session_limit_is_learned(make_sshd):
    """A server with the default MaxSessions 10, a pool that assumes 50: refused sessions move on."""
    strict = make_sshd("strict", MaxSessions=10)
    pool = ConnectionPool(max_channels=50)
    try:
        target = strict.target()
        results = run_concurrently(lambda i: run(target, f"sleep 1; echo {i}", pool=pool), 25)
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(25)]
        assert pool.handshakes >= 3
        assert any(c.channel_limit <= 10 for c in pool.connections(target))
    finally:
        pool.close_all()


# --------------------------------------------------------------------------- jump host


def test_exec_through_a_jump_host(sshd, sshd_jump, ssh_pool):
    gateway = sshd_jump.target()
    target = sshd.target(gateway=gateway)
    result = run(target, "echo through; echo $SSH_CONNECTION", pool=ssh_pool)
    assert result.exit_code == 0 and result.stdout.startswith("through\n")
    (inner,) = ssh_pool.connections(target)
    (outer,) = ssh_pool.connections(gateway)
    assert inner.via_gateway
    # The inner connection's byte stream is a direct-tcpip channel of the gateway's transport.
    assert isinstance(inner.transport.sock, paramiko.Channel)
    assert inner.transport.sock.get_transport() is outer.transport
    assert inner.connection.gateway is outer.connection  # Fabric's gateway=
    assert "Accepted publickey for portaltest" in sshd_jump.log_text()
    # Warm again: no new handshake on either hop.
    run(target, "true", pool=ssh_pool)
    assert ssh_pool.handshakes == 2


def test_jump_host_checks_the_inner_host_key_separately(sshd, sshd_jump, ssh_pool):
    _, impostor = generate_ed25519("impostor")
    target = sshd.target(host_keys=(impostor,), gateway=sshd_jump.target())
    with pytest.raises(HostKeyMismatch, match=f"host key for 127.0.0.1:{sshd.port} changed"):
        run(target, "true", pool=ssh_pool)
    target = sshd.target(gateway=sshd_jump.target(pin=False))
    with pytest.raises(HostKeyUnknown, match=f"127.0.0.1:{sshd_jump.port}"):
        run(target, "true", pool=ssh_pool)


def test_jump_host_to_a_closed_port_is_unreachable(sshd, sshd_jump, ssh_pool):
    port = closed_port()
    target = sshd.target(port=port, gateway=sshd_jump.target())
    with pytest.raises(MachineUnreachable) as info:
        run(target, "true", pool=ssh_pool)
    assert info.value.message.startswith(
        f"could not connect to 127.0.0.1:{port} via 127.0.0.1:{sshd_jump.port}"
    )


def test_scan_through_a_jump_host(sshd, sshd_jump, ssh_pool):
    found = scan_host_key(sshd.host, sshd.port, gateway=sshd_jump.target(), pool=ssh_pool)
    assert sorted(fp for _, fp in found) == sorted(sshd.host_key_fingerprints)


# --------------------------------------------------------------------------- shells


def test_shell_has_a_pty_and_term(sshd, ssh_pool):
    target = sshd.target()
    channel = open_shell(
        target, cols=120, rows=40, env={"PORTAL_TEST_VAR": "from-env"}, pool=ssh_pool
    )
    try:
        assert ssh_pool.connections(target)[0].open_channels == 1
        channel.sendall(b"tty; echo TERM=$TERM; stty size; echo VAR=$PORTAL_TEST_VAR; exit 7\n")
        lines = terminal_lines(read_until_closed(channel))
        assert any(re.fullmatch(r"/dev/pts/\d+", line) for line in lines), lines
        assert "TERM=xterm-256color" in lines
        assert "40 120" in lines
        assert "VAR=from-env" in lines
        assert channel.recv_exit_status() == 7
    finally:
        channel.close()
    assert wait_until(lambda: ssh_pool.connections(target)[0].open_channels == 0)


def test_shell_resize(sshd, ssh_pool):
    from portal.ssh import resize

    channel = open_shell(sshd.target(), cols=80, rows=24, pool=ssh_pool)
    try:
        resize(channel, 100, 30)
        channel.sendall(b"sleep 0.2; stty size; exit\n")
        assert "30 100" in terminal_lines(read_until_closed(channel))
    finally:
        channel.close()


def test_shell_rejects_bad_sizes(sshd, ssh_pool):
    with pytest.raises(ValidationError):
        open_shell(sshd.target(), cols=0, rows=24, pool=ssh_pool)
    with pytest.raises(ValidationError):
        open_shell(sshd.target(), term="xterm; rm -rf /", pool=ssh_pool)


# --------------------------------------------------------------------------- SSRF hardening

SECRET_LINE = "internal-secret-line-99"


@pytest.mark.parametrize(
    "greeting,reason",
    [
        # paramiko: 'Incompatible version (internal instead of 2.0)'
        (f"SSH-{SECRET_LINE}\r\n".encode(), "not an SSH server"),
        # paramiko: 'Incompatible version (9.9 instead of 2.0)'
        (f"SSH-9.9-{SECRET_LINE}\r\n".encode(), "not an SSH server"),
        # paramiko: 'Invalid SSH banner'
        (b"SSH-secret\r\n", "not an SSH server"),
        # not SSH at all, then the peer hangs up: "Error reading SSH protocol banner"
        (f"{SECRET_LINE}\r\n".encode() * 3, None),
    ],
)
def test_remote_text_never_reaches_errors(fake_service, ssh_pool, greeting, reason):
    """Scan and exec against a non-SSH service: fixed messages, nothing the remote sent."""
    svc = fake_service(greeting)
    for call in (
        lambda: scan_host_key(svc.host, svc.port, timeout=3),
        lambda: run(
            Target(svc.host, svc.port, "nobody", password="x", connect_timeout=3),
            "true",
            pool=ssh_pool,
        ),
    ):
        with pytest.raises(MachineUnreachable) as info:
            call()
        err = info.value
        assert SECRET_LINE not in err.message and SECRET_LINE not in repr(err.extra)
        assert "9.9" not in err.message and "internal" not in err.message
        assert err.message.startswith(f"could not connect to 127.0.0.1:{svc.port}: ")
        if reason:
            assert err.message.endswith(reason), err.message


def test_allowed_networks_are_checked_before_connecting(sshd, ssh_pool, fake_service):
    from ipaddress import ip_network

    from portal.ssh import TargetNotAllowed

    svc = fake_service(b"SSH-2.0-x\r\n")
    elsewhere = (ip_network("10.0.0.0/8"),)
    with pytest.raises(TargetNotAllowed) as info:
        run(Target(svc.host, svc.port, "u", password="x", allowed=elsewhere), "true", pool=ssh_pool)
    assert info.value.status == 400 and "127.0.0.1" in info.value.message
    with pytest.raises(TargetNotAllowed):
        scan_host_key(svc.host, svc.port, timeout=3, allowed=elsewhere)
    assert svc.accepted == 0  # refused before any TCP connection
    here = (ip_network("127.0.0.0/8"),)
    assert run(sshd.target(allowed=here), "true", pool=ssh_pool).exit_code == 0
    assert len(scan_host_key(sshd.host, sshd.port, timeout=10, allowed=here)) == 2
    # An empty allow-list allows nothing; None allows everything.
    with pytest.raises(TargetNotAllowed):
        run(sshd.target(allowed=()), "true", pool=ssh_pool)


def test_one_resolution_no_rebinding(sshd, ssh_pool, monkeypatch):
    """The host is resolved once and the checked address is the one connected to: a second
    answer (DNS rebinding to an address outside the allow-list) is never used."""
    from ipaddress import ip_network

    import portal.ssh.connect as connect_mod

    real = socket.getaddrinfo
    calls = []

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.test":
            calls.append(host)
            # first answer: the allowed sshd; any later answer: somewhere forbidden
            addr = "127.0.0.1" if len(calls) == 1 else "10.255.255.1"
            return real(addr, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(connect_mod.socket, "getaddrinfo", rebinding)
    allowed = (ip_network("127.0.0.0/8"),)
    keys = scan_host_key("rebind.test", sshd.port, timeout=10, allowed=allowed)
    assert {fp for _, fp in keys} == set(sshd.host_key_fingerprints)
    assert len(calls) == 1  # five probes, one lookup
    calls.clear()
    target = sshd.target(host="rebind.test", allowed=allowed)
    assert run(target, "true", pool=ssh_pool).exit_code == 0
    assert len(calls) == 1

    # Every address a name resolves to must be allowed.
    def mixed(host, port, *args, **kwargs):
        return real("127.0.0.1", port, *args, **kwargs) + real("10.1.2.3", port, *args, **kwargs)

    monkeypatch.setattr(connect_mod.socket, "getaddrinfo", mixed)
    from portal.ssh import TargetNotAllowed

    with pytest.raises(TargetNotAllowed):
        scan_host_key("mixed.test", sshd.port, timeout=5, allowed=allowed)


def test_scan_does_not_log_errors_for_missing_key_types(sshd, caplog):
    """The fixture sshd has ed25519 and RSA keys only: the ECDSA probes fail by design and
    must not log paramiko tracebacks at ERROR."""
    import logging

    caplog.set_level(logging.DEBUG)
    found = scan_host_key(sshd.host, sshd.port, timeout=10)
    assert len(found) == 2
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert loud == [], [r.getMessage()[:200] for r in loud]


def test_auth_failure_message_has_no_remote_text(sshd, ssh_pool):
    with pytest.raises(AuthenticationFailed) as info:
        run(
            sshd.target(auth="password", password="wrong-" + secrets.token_hex(4)),
            "true",
            pool=ssh_pool,
        )
    msg = info.value.message
    assert re.fullmatch(
        r"SSH authentication failed for portaltest@127\.0\.0\.1( \(the server "
        r"accepts: [a-z, -]+\))?",
        msg,
    ), msg


def test_a_slow_banner_and_quiet_connection_are_not_errors(sshd, ssh_pool):
    """paramiko reads with a 0.1 s timeout, kept by the kernel here (connect.ReadAhead): a
    server whose banner takes longer than that (a busy machine) must still connect, and a
    connection left quiet for many timeouts must still work."""
    import socket as _socket

    listener = _socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()
    socks, pumps = [], []

    def pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(_socket.SHUT_WR)
            except OSError:
                pass

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = _socket.create_connection((sshd.host, sshd.port))
            socks.extend((client, upstream))
            time.sleep(0.5)  # the banner (and everything else) comes late
            for src, dst in ((upstream, client), (client, upstream)):
                pumps.append(threading.Thread(target=pump, args=(src, dst), daemon=True))
                pumps[-1].start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        target = sshd.target(port=port)
        assert run(target, "echo slow banner", pool=ssh_pool).stdout == "slow banner\n"
        (conn,) = ssh_pool.connections(target)
        assert conn.transport.sock.timed  # the kernel keeps paramiko's timeout
        time.sleep(0.6)  # several of paramiko's timeouts with nothing to read
        assert run(target, "echo still", pool=ssh_pool).stdout == "still\n"
        assert ssh_pool.connections(target)[0].transport is conn.transport
    finally:
        stop.set()
        server.join(5)
        listener.close()
        ssh_pool.close_all()
        for sock in socks:
            try:
                sock.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in pumps:
            thread.join(5)
        for sock in socks:
            sock.close()


def test_read_ahead_serves_exact_reads_from_one_kernel_read():
    """paramiko asks for exact sizes; the wrapper reads what the kernel has once and hands
    it out in order, passes timeouts and the end of the stream through, and is otherwise
    the socket itself."""
    from portal.ssh.connect import ReadAhead

    a, b = socket.socketpair()
    try:
        b.settimeout(0.2)
        reader = ReadAhead(b)
        payload = bytes(range(256)) * 700  # 179,200 bytes: more than one read-ahead
        a.sendall(payload)
        got = bytearray()
        sizes = [16, 4080, 1, 70000, 3]
        i = 0
        while len(got) < len(payload):
            chunk = reader.recv(sizes[i % len(sizes)])
            assert 0 < len(chunk) <= sizes[i % len(sizes)]
            got += chunk
            i += 1
        assert bytes(got) == payload
        with pytest.raises(TimeoutError):  # socket.timeout: paramiko's keepalive tick
            reader.recv(16)
        a.sendall(b"tail")
        a.close()
        assert reader.recv(2) == b"ta" and reader.recv(16) == b"il"
        assert reader.recv(16) == b""  # the end of the stream
        assert reader.gettimeout() == 0.2 and reader.fileno() == b.fileno()
    finally:
        b.close()


def test_connections_read_through_read_ahead(sshd, ssh_pool):
    from portal.ssh.connect import ReadAhead

    channel = open_shell(sshd.target(), pool=ssh_pool)
    try:
        assert isinstance(channel.get_transport().sock, ReadAhead)
        channel.sendall(b"head -c 300000 /dev/zero | tr '\\0' x; echo; echo END$((1+1)); exit\n")
        out = read_until_closed(channel)
        assert out.count("x") >= 300000 and "END2" in out
    finally:
        channel.close()


def test_a_forked_child_gets_its_own_pool_and_leaves_the_parent_s_alone(sshd):
    """The parent's pooled connection keeps working after a fork, and the child (a live
    server, a worker of a preloaded app) opens its own connection instead of reading the
    parent's socket, whose reader thread did not come along."""
    import os
    import signal

    from portal.ssh import pool as poolmod
    from portal.ssh.exec import run

    target = sshd.target()
    old = poolmod.set_pool(poolmod.ConnectionPool(max_channels=7))
    try:
        parent_pool = poolmod.get_pool()
        assert run(target, "echo parent").stdout.strip() == "parent"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return into pytest
            code = 1
            try:
                child_pool = poolmod.get_pool()
                out = run(target, "echo child").stdout.strip().encode()
                fresh = child_pool is not parent_pool and child_pool.max_channels == 7
                os.write(write_end, b"%s %d" % (out, fresh))
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:  # hung on the parent's socket: never leave it behind
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the parent's pooled connection")
        status = done[1]
        report = os.read(read_end, 100)
        os.close(read_end)
        assert os.waitstatus_to_exitcode(status) == 0
        assert report == b"child 1"
        assert parent_pool.handshakes == 1  # the child's handshake was its own
        assert run(target, "echo again").stdout.strip() == "again"
    finally:
        poolmod.get_pool().close_all()
        poolmod.set_pool(old)
