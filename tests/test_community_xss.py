"""Markdown is rendered with markdown-it-py and cleaned by nh3: nothing executable survives,
whatever the payload. The same sanitiser feeds pages, previews and the API's body_html."""

from __future__ import annotations

import html as htmllib
import re

import pytest

from portal.community.markdown import render
from tests.test_community_api import quick_users

PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<img src=x oNeRrOr=alert(1)//",
    '<svg onload="alert(1)">',
    "<svg><script>alert(1)</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<iframe src=javascript:alert(1)></iframe>",
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "<object data=javascript:alert(1)></object>",
    "<embed src=javascript:alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    "[click](javascript:alert(1))",
    "[click](JAVASCRIPT:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](<javascript:alert(1)>)",
    "[click](data:text/html,<script>alert(1)</script>)",
    "[click](vbscript:msgbox(1))",
    '[click](https://ok.example "title" onclick="alert(1)")',
    "![x](javascript:alert(1))",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    '![x](x" onerror="alert(1))',
    "[ref]: javascript:alert(1)\n\n[ref]",
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<p style="position:fixed;top:0">overlay</p>',
    "<style>body{display:none}</style>",
    "<link rel=stylesheet href=//evil.example/x.css>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "<body onload=alert(1)>",
    '<form action="javascript:alert(1)"><input type=submit></form>',
    '<button formaction="javascript:alert(1)">x</button>',
    "<details open ontoggle=alert(1)>",
    "<!--><script>alert(1)</script>-->",
    "<!-- --!><img src=x onerror=alert(1)> -->",
    "<![CDATA[<script>alert(1)</script>]]>",
    "<base href=javascript:alert(1)//>",
    '<a href="#" onmouseover="alert(1)">hover</a>',
    '<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
    "<video><source onerror=alert(1)></video>",
    "<audio src=x onerror=alert(1)>",
    '<input autofocus onfocus="alert(1)">',
    "<marquee onstart=alert(1)>x</marquee>",
    "<template><script>alert(1)</script></template>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "`<script>alert(1)</script>` and ```\n<img src=x onerror=alert(1)>\n```",
    "<x onclick=alert(1)>click</x>",
    '<a href="java\u0000script:alert(1)">x</a>',
]

_TAG = re.compile(r"<\s*([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>")
_ALLOWED = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s",
            "code", "pre", "blockquote", "ul", "ol", "li", "a", "img", "table", "thead",
            "tbody", "tr", "th", "td"}  # fmt: skip


def assert_inert(out: str) -> None:
    """Parse the output's real tags: only allow-listed tags, no handlers, no style, and every
    URL is http(s), mailto, a same-site path, or one of our uploads."""
    for m in _TAG.finditer(out):
        tag, attrs = m.group(1).lower(), m.group(2)
        assert tag in _ALLOWED, f"tag <{tag}> survived: {out!r}"
        names = re.findall(r"([a-zA-Z-]+)\s*=", attrs)
        for name in names:
            name = name.lower()
            assert not name.startswith("on"), f"handler {name} survived: {out!r}"
            assert name in {"href", "src", "alt", "title", "rel", "class", "start", "align"}, out
        for url in re.findall(r'(?:href|src)="([^"]*)"', attrs):
            url = htmllib.unescape(url).strip().lower()
            assert re.match(r"^(https?://|mailto:|/(?!/)|#)", url), f"url {url!r} survived"
    # Any "javascript:" left is inert text (escaped), never inside a tag.
    for m in _TAG.finditer(out):
        assert "javascript:" not in htmllib.unescape(m.group(0)).lower()
        assert "vbscript:" not in htmllib.unescape(m.group(0)).lower()
        assert "data:" not in htmllib.unescape(m.group(0)).lower()
    assert "<script" not in out.lower() and "<iframe" not in out.lower()
    # Every raw "<" opens or closes an allow-listed tag: no comment, CDATA, doctype, processing
    # instruction or stray "<" a browser could read as markup outside the checks above (a "<"
    # from the input is there only escaped, as "&lt;").
    for m in re.finditer("<", out):
        rest = out[m.start() :]
        opening = _TAG.match(rest)
        closing = re.match(r"</([a-zA-Z][a-zA-Z0-9]*)>", rest)
        tag = (opening or closing).group(1).lower() if (opening or closing) else None
        assert tag in _ALLOWED, f"raw '<' at {m.start()} is not an allowed tag: {out!r}"


def test_there_are_enough_payloads():
    assert len(PAYLOADS) >= 30


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_renders_inert(payload):
    assert_inert(render(payload))


def test_useful_markdown_survives():
    out = render(
        "# Title\n\nSome `code` and **bold** and [a link](https://example.org/x?a=1&b=2).\n\n"
        "```bash\nsudo systemctl restart sshd\n```\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "![shot](/community/uploads/0123456789abcdef0123456789abcdef.png) [docs](/community) "
        "[mail](mailto:ops@example.org)"
    )
    assert "<h1>Title</h1>" in out and "<code>code</code>" in out and "<strong>bold</strong>" in out
    assert '<a href="https://example.org/x?a=1&amp;b=2" rel="noopener noreferrer nofollow">' in out
    assert '<pre><code class="language-bash">sudo systemctl restart sshd' in out
    assert "<li>one</li>" in out and "<table>" in out and "<td>1</td>" in out
    assert '<img src="/community/uploads/0123456789abcdef0123456789abcdef.png" alt="shot">' in out
    assert '<a href="/community" rel="noopener noreferrer nofollow">' in out
    assert 'href="mailto:ops@example.org"' in out


@pytest.mark.parametrize(
    "src",
    [
        "https://tracker.example/pixel.gif",
        "//evil.example/a.png",
        "/community/uploads/../x.png",
        "/static/img/favicon.svg",
        "/community/uploads/ABC.png",
    ],
)
def test_images_only_from_our_uploads(src):
    assert "src=" not in render(f"![x]({src})")


def test_protocol_relative_links_are_dropped():
    assert "href" not in render("[x](//evil.example/)")
    out = render("[x](/\\evil.example/)")  # encoded to a same-site path, never a host
    assert 'href="/%5Cevil.example/"' in out


def test_api_and_pages_serve_only_sanitised_html(client, app, auth, login):
    (u,) = quick_users(app, "mallory")
    h = auth(u)
    body = "\n\n".join(p for p in PAYLOADS if "\x00" not in p)  # NUL is refused (400)
    r = client.post(
        "/api/community/issues",
        json={"title": "<script>alert(1)</script>", "body": body},
        headers=h,
    )
    assert r.status_code == 201
    issue = r.json["issue"]
    assert issue["body"] == body  # the source is kept as written
    assert_inert(issue["body_html"])
    r = client.post(f"/api/community/issues/{issue['id']}/fixes", json={"body": body}, headers=h)
    assert_inert(r.json["fix"]["body_html"])

    token = login(u)
    page = client.get(f"/community/issues/{issue['id']}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the title is escaped text
    assert issue["body_html"] in page  # the page shows the same cleaned HTML as the API
    for payload in PAYLOADS:
        if "<" in payload and not payload.startswith("`"):
            assert payload not in page
    preview = client.post(
        "/community/preview",
        data={"body": body, "csrf_token": token},
        headers={"HX-Request": "true"},
    ).get_data(as_text=True)
    assert_inert(preview)
