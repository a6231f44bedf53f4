"""Installable on a phone: the manifest and the service worker pass Chromium's installability
checks (CDP Page.getInstallabilityErrors) in mobile emulation; the worker caches only the
static shell, never pages or API answers, and shows the offline page when the portal is gone."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS, LiveServer
from tests.fixtures.terminal import wait_for

ROOT = Path(__file__).resolve().parent.parent
SHELL = {
    "/static/pwa/offline.html",
    "/static/css/app.css",
    "/static/img/favicon.svg",
    "/static/pwa/icon-192.png",
}


def test_the_manifest_names_the_app_its_icons_and_colours(app, live_server):
    r = requests.get(f"{live_server.url}/manifest.webmanifest", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/manifest+json")
    m = r.json()
    assert m["name"] and m["short_name"]
    assert m["display"] == "standalone"
    assert m["start_url"] == "/" and m["scope"] == "/"
    assert m["theme_color"] and m["background_color"]
    sizes = {(i["sizes"], i["purpose"]) for i in m["icons"]}
    assert {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")} <= sizes
    for i in m["icons"]:
        png = requests.get(f"{live_server.url}{i['src']}", timeout=10)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    sw = requests.get(f"{live_server.url}/sw.js", timeout=10)
    assert sw.status_code == 200
    assert "javascript" in sw.headers["Content-Type"]
    assert "no-cache" in sw.headers["Cache-Control"]


@pytest.fixture
def installed_phone(_playwright, tmp_path):
    """A phone-sized Chromium with a profile on disk: Chromium never offers to install from
    an incognito context (what a plain Playwright context is)."""
    ctx = _playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 375, "height": 740},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page = ctx.pages[0] if ctx.pages else ctx.new_page()
    page.set_default_timeout(15_000)
    yield page
    ctx.close()


def test_installable_on_a_phone_and_offline_page_when_the_portal_is_gone(app, installed_phone):
    phone = installed_phone
    server = LiveServer(app).start()
    try:
        phone.goto(f"{server.url}/login")
        assert wait_for(
            lambda: phone.evaluate("() => navigator.serviceWorker.controller !== null"),
            timeout=15,
            interval=0.2,
        ), "the service worker did not take the page"
        cdp = phone.context.new_cdp_session(phone)

        def installable():
            errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
            return errors == [] or None

        assert wait_for(installable, timeout=15, interval=0.5), cdp.send(
            "Page.getInstallabilityErrors"
        )
        # Browsing pages and API answers stores none of them: the cache is the shell only.
        phone.goto(f"{server.url}/login")
        phone.evaluate("fetch('/api/machines').then(r => r.text())")
        cached = phone.evaluate(
            """async () => {
                const out = [];
                for (const name of await caches.keys()) {
                    for (const req of await (await caches.open(name)).keys()) {
                        out.push(new URL(req.url).pathname);
                    }
                }
                return out;
            }"""
        )
        assert set(cached) == SHELL
        # A shell file changed since it was cached (an upgrade): online, the page gets the
        # served one, and the offline copy is refreshed with it.
        served = (ROOT / "static/css/app.css").read_text()
        stale = phone.evaluate(
            """async () => {
                for (const name of await caches.keys()) {
                    await (await caches.open(name)).put(
                        '/static/css/app.css', new Response('/* an older app.css */'));
                }
                const got = await (await fetch('/static/css/app.css')).text();
                await new Promise((done) => setTimeout(done, 300));
                const copies = [];
                for (const name of await caches.keys()) {
                    const hit = await (await caches.open(name)).match('/static/css/app.css');
                    copies.push(await hit.text());
                }
                return [got, copies];
            }"""
        )
        assert stale[0] == served
        assert stale[1] and all(c == served for c in stale[1])
    finally:
        server.stop()
    # The portal is gone: a page load shows the offline page, not the browser's error.
    phone.goto(f"{server.url}/machines")
    assert phone.locator("#offline h1").inner_text() == "You are offline"
    assert phone.locator("#offline a[href='/']").count() == 1
