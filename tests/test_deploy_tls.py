"""The shipped nginx site (deploy/nginx/portal.conf) as a whole, TLS blocks included.

tests/test_topology.py runs the proxy snippet in front of two instances over plain HTTP;
this file runs the site itself — the port-80 redirect, the 443 server with its certificate
and HSTS header, the upstream and the snippet — with only what differs on a test machine
replaced: ports, the certificate (a self-signed one made here), the snippet's path and the
upstream's servers (the live test portal). `nginx -t` must accept it and requests must go
through it."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests
import urllib3

from tests.conftest import PASSWORD
from tests.fixtures.nginx import free_port, nginx_conf, start_nginx
from tests.fixtures.terminal import wait_for

ROOT = Path(__file__).resolve().parent.parent


def _site(tmp: Path, backend: int, http_port: int, https_port: int) -> str:
    site = (ROOT / "deploy/nginx/portal.conf").read_text()
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=portal.example.com",
            "-keyout", str(tmp / "privkey.pem"), "-out", str(tmp / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    replaced = {
        r"listen 80;": f"listen 127.0.0.1:{http_port};",
        r"listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        r"/etc/letsencrypt/live/portal\.example\.com/": f"{tmp}/",
        r"include snippets/portal-proxy\.conf;": (
            f"include {ROOT / 'deploy/nginx/portal-proxy.conf'};"
        ),
    }
    for pattern, repl in replaced.items():
        site, n = re.subn(pattern, repl, site)
        assert n == (2 if "letsencrypt" in pattern else 1), (
            f"deploy/nginx/portal.conf no longer has {pattern!r}: update this test"
        )
    site = re.sub(r"^\s*listen \[::\]:\d+.*$", "", site, flags=re.M)  # no IPv6 needed here
    site, n = re.subn(
        r"(upstream portal \{)(.*?)(\n\s*keepalive)",
        lambda m: f"{m.group(1)}\n    server 127.0.0.1:{backend};{m.group(3)}",
        site,
        flags=re.S,
    )
    assert n == 1
    return nginx_conf(tmp, site)


@pytest.fixture
def app_config(app_config):
    return {**app_config, "PORTAL_TRUSTED_PROXIES": 1}  # as docs/operations.md says


@pytest.fixture
def tls_site(live_server, tmp_path):
    ports = {"http": free_port(), "https": free_port()}
    proc = start_nginx(tmp_path, _site(tmp_path, live_server.port, ports["http"], ports["https"]))
    base = f"https://127.0.0.1:{ports['https']}"

    def up():
        try:
            return requests.get(f"{base}/health", verify=False, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    try:
        assert wait_for(up, timeout=15, interval=0.2), (tmp_path / "error.log").read_text()
        yield {"http": f"http://127.0.0.1:{ports['http']}", "https": base}
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_shipped_site_serves_the_portal_over_tls_and_redirects_plain_http(tls_site, make_user):
    r = requests.get(
        f"{tls_site['http']}/machines?x=1", allow_redirects=False, timeout=5
    )  # port 80 only redirects
    assert r.status_code == 301
    assert r.headers["Location"].startswith("https://127.0.0.1")
    assert r.headers["Location"].endswith("/machines?x=1")

    r = requests.get(f"{tls_site['https']}/login", verify=False, timeout=5)
    assert r.status_code == 200 and "<form" in r.text
    # the portal knows the request was HTTPS (X-Forwarded-Proto through ProxyFix) and sends
    # HSTS itself, once
    assert r.raw.headers.getlist("Strict-Transport-Security") == ["max-age=31536000"]
    # the API's JSON errors come through unchanged
    r = requests.get(f"{tls_site['https']}/api/machines", verify=False, timeout=5)
    assert r.status_code == 401 and "error" in r.json()

    # the portal sees the address people use (Host, port and scheme forwarded on every
    # location): the enroll command it prints points there, not at the upstream's name
    user = make_user("tlsadmin", role="admin")
    r = requests.post(
        f"{tls_site['https']}/api/login",
        json={"login": user.username, "password": PASSWORD},
        verify=False,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    r = requests.post(
        f"{tls_site['https']}/api/machines",
        json={"name": "pending-one"},
        headers={"Authorization": f"Bearer {r.json()['token']}"},
        verify=False,
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert f"{tls_site['https']}/api/machines/enroll.sh" in r.json()["enroll_command"]


def test_file_transfers_stream_through_the_proxy_past_its_body_cap(
    tls_site, make_user, sshd_machine
):
    """The drawer's 16 MiB tus PATCHes and a large plain PUT pass the proxy (its 7 MiB cap
    is for everything else: an 8 MiB JSON body is still refused), and the download comes
    back whole."""
    import hashlib

    user = make_user("tlsfiles", role="admin")
    machine = sshd_machine(user)
    r = requests.post(
        f"{tls_site['https']}/api/login",
        json={"login": user.username, "password": PASSWORD},
        verify=False,
        timeout=10,
    )
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    base = f"{tls_site['https']}/api/machines/{machine.agent_id}/files"
    folder = requests.post(
        f"{base}/mkdir", json={"path": f"tls-files-{os.getpid()}"}, headers=auth, verify=False
    ).json()["path"]
    data = os.urandom(16 * 1024 * 1024 + 5)
    try:
        meta = f"filename {base64.b64encode(b'big.bin').decode()},folder {base64.b64encode(folder.encode()).decode()}"
        tus = {**auth, "Tus-Resumable": "1.0.0"}
        r = requests.post(
            f"{base}/tus",
            headers={**tus, "Upload-Length": str(len(data)), "Upload-Metadata": meta},
            verify=False,
            timeout=10,
        )
        assert r.status_code == 201, r.text
        r = requests.patch(
            f"{tls_site['https']}{r.headers['Location']}",
            data=data,
            headers={
                **tus,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            verify=False,
            timeout=60,
        )
        assert r.status_code == 204, r.text
        r = requests.put(
            f"{base}/content?path={folder}/put.bin",
            data=data[:9_000_000],
            headers=auth,
            verify=False,
            timeout=60,
        )
        assert r.status_code == 201, r.text
        r = requests.get(
            f"{base}/content?path={folder}/big.bin", headers=auth, verify=False, timeout=60
        )
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(data).digest()
        r = requests.post(
            f"{tls_site['https']}/api/machines",
            data=b"{" + b" " * (8 * 1024 * 1024) + b"}",
            headers={**auth, "Content-Type": "application/json"},
            verify=False,
            timeout=30,
        )
        assert r.status_code == 413
    finally:
        requests.post(f"{base}/delete", json={"path": folder}, headers=auth, verify=False)
