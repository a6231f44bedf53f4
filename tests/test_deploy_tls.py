"""The shipped nginx site (deploy/nginx/portal.conf) as a whole, TLS blocks included.

tests/test_topology.py runs the proxy snippet in front of two instances over plain HTTP;
this file runs the site itself — the port-80 redirect, the 443 server with its certificate
and HSTS header, the upstream and the snippet — with only what differs on a test machine
replaced: ports, the certificate (a self-signed one made here), the snippet's path and the
upstream's servers (the live test portal). `nginx -t` must accept it and requests must go
through it."""

from __future__ import annotations

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
