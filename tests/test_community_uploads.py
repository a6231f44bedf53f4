"""Image uploads: checked by content with Pillow, re-encoded without metadata, random names,
served with nosniff and a sandboxing CSP; files follow their issue when it is deleted."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.test_community_api import quick_users


def image_bytes(fmt: str, size=(40, 30), **save) -> bytes:
    img = Image.new("RGB", size, (200, 30, 30))
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), (i * 100, 50, 200 - i * 60)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=80,
        loop=0,
        comment=b"secret comment",
    )
    return out.getvalue()


def jpeg_with_exif() -> bytes:
    img = Image.new("RGB", (32, 16), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc"  # Make
    exif[0x0110] = "Model X"  # Model
    exif[0x8825] = {2: (52.0, 31.0, 0.0), 1: "N"}  # GPS latitude
    exif[0x0112] = 6  # rotated 90: re-encoding applies it
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def png_with_text_chunk() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>alert(1)</script> private note")
    out = io.BytesIO()
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def multipart(data: bytes, name: str, mimetype: str) -> tuple[bytes, str]:
    """Encoded by hand: the test client would spool big bodies to a temp file it never closes."""
    boundary = "----portal-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {mimetype}\r\n\r\n"
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


@pytest.fixture
def uploader(app, auth):
    (u,) = quick_users(app, "painter")
    headers = auth(u)

    def _up(data: bytes, name: str = "shot.png", mimetype: str = "image/png", h=None):
        body, ctype = multipart(data, name, mimetype)
        return app.test_client().post(
            "/api/community/upload", data=body, headers=h or headers, content_type=ctype
        )

    _up.user = u
    _up.headers = headers
    return _up


def _stored(app, url: str) -> str:
    return os.path.join(app.config["PORTAL_UPLOADS_DIR"], "community", url.rsplit("/", 1)[1])


@pytest.mark.parametrize(
    "fmt, ext, ctype",
    [
        ("PNG", "png", "image/png"),
        ("JPEG", "jpg", "image/jpeg"),
        ("GIF", "gif", "image/gif"),
        ("WEBP", "webp", "image/webp"),
    ],
)
def test_real_images_are_accepted_and_reencoded(uploader, app, client, login, fmt, ext, ctype):
    # The declared name and type are wrong on purpose: only the content counts.
    r = uploader(image_bytes(fmt), name="whatever.bin", mimetype="application/octet-stream")
    assert r.status_code == 200, r.json
    url = r.json["url"]
    assert re.fullmatch(rf"/community/uploads/[0-9a-f]{{32}}\.{ext}", url)
    assert r.json["width"] == 40 and r.json["height"] == 30
    path = _stored(app, url)
    assert os.path.exists(path)
    with Image.open(path) as img:
        assert img.format == fmt and img.size == (40, 30)
    login(uploader.user)
    resp = client.get(url)
    body = resp.get_data()
    resp.close()
    assert resp.status_code == 200 and resp.mimetype == ctype
    assert body == Path(path).read_bytes()
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_names_are_random(uploader):
    data = image_bytes("PNG")
    urls = {uploader(data).json["url"] for _ in range(3)}
    assert len(urls) == 3


def test_metadata_is_stripped(uploader, app):
    r = uploader(jpeg_with_exif(), name="IMG_0001.jpg", mimetype="image/jpeg")
    assert r.status_code == 200
    path = _stored(app, r.json["url"])
    raw = Path(path).read_bytes()
    assert b"SpyCam" not in raw and b"Exif" not in raw
    with Image.open(path) as img:
        assert not img.getexif()
        assert img.size == (16, 32)  # the orientation was applied, then dropped
    r = uploader(png_with_text_chunk())
    raw = Path(_stored(app, r.json["url"])).read_bytes()
    assert b"private note" not in raw and b"<script" not in raw


def test_animated_gif_stays_animated_without_comments(uploader, app):
    r = uploader(animated_gif(), name="demo.gif", mimetype="image/gif")
    assert r.status_code == 200
    path = _stored(app, r.json["url"])
    with Image.open(path) as img:
        assert img.format == "GIF" and img.n_frames == 3
    assert b"secret comment" not in Path(path).read_bytes()


def test_gif_bomb_with_a_huge_canvas_is_refused_before_decoding(uploader, app):
    """A few KB: 2000x2000 canvas, 20 one-pixel frames — decoding would take ~320 MB."""
    frames = [Image.new("P", (2000, 2000), 0) for _ in range(20)]
    for i, f in enumerate(frames):
        f.putpixel((i, i), 1)
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], optimize=True)
    data = out.getvalue()
    assert len(data) < 200_000
    r = uploader(data, name="bomb.gif", mimetype="image/gif")
    assert r.status_code == 400 and "too large" in r.json["error"]
    assert (
        not os.listdir(os.path.join(app.config["PORTAL_UPLOADS_DIR"], "community"))
        if os.path.isdir(os.path.join(app.config["PORTAL_UPLOADS_DIR"], "community"))
        else True
    )


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


@pytest.mark.parametrize(
    "data, name, mimetype",
    [
        (SVG, "logo.svg", "image/svg+xml"),
        (SVG, "logo.png", "image/png"),
        (HTML, "cat.png", "image/png"),
        (HTML, "cat.jpg", "image/jpeg"),
        (b"GIF89a<script>alert(1)</script>", "x.gif", "image/gif"),  # magic bytes only
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "broken.png", "image/png"),  # truncated PNG
        (image_bytes("PNG")[:60], "cut.png", "image/png"),
        (image_bytes("BMP"), "x.bmp", "image/bmp"),  # a real image, not an allowed format
        (image_bytes("TIFF"), "x.tiff", "image/tiff"),
        (b"%PDF-1.4\n%...", "doc.png", "image/png"),
    ],
)
def test_non_images_and_other_formats_are_refused(uploader, app, data, name, mimetype):
    r = uploader(data, name=name, mimetype=mimetype)
    assert r.status_code == 400, r.json
    assert "PNG, JPEG, GIF or WebP" in r.json["error"] and r.json["field"] == "file"
    folder = os.path.join(app.config["PORTAL_UPLOADS_DIR"], "community")
    assert not os.path.isdir(folder) or os.listdir(folder) == []


def test_polyglot_loses_its_payload(uploader, app):
    # A valid GIF with an HTML/JS tail (a classic GIF/JS polyglot): decodes as an image,
    # and the re-encoded file keeps only pixels.
    payload = b"<html><script>alert(document.domain)</script></html>"
    r = uploader(image_bytes("GIF") + payload, name="poly.gif", mimetype="image/gif")
    assert r.status_code == 200
    assert payload not in Path(_stored(app, r.json["url"])).read_bytes()
    jpeg = bytearray(image_bytes("JPEG"))
    jpeg[2:2] = b"\xff\xfe\x00\x22<script>alert(1)</script>........"  # COM segment
    r = uploader(bytes(jpeg), name="poly.jpg", mimetype="image/jpeg")
    assert r.status_code == 200
    assert b"<script>" not in Path(_stored(app, r.json["url"])).read_bytes()


def test_oversized_upload_is_413(uploader, app):
    big = image_bytes("PNG") + os.urandom(5 * 1024 * 1024)  # over 5 MB, under the app cap
    r = uploader(big)
    assert r.status_code == 413 and "5 MB" in r.json["error"]
    huge = os.urandom(7 * 1024 * 1024)  # over the request cap
    r = uploader(huge)
    assert r.status_code == 413


def test_too_many_pixels_is_refused(uploader):
    # A tiny file that would decode to 10000 x 10000 pixels (a decompression bomb).
    img = Image.new("1", (10000, 10000))
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    r = uploader(out.getvalue())
    assert r.status_code == 400 and "pixels" in r.json["error"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {}},
        {"data": {"other": (io.BytesIO(b"x"), "a.png")}},
        {"json": {"file": "x"}},
        {"data": {"file": (io.BytesIO(b""), "empty.png")}},
    ],
)
def test_missing_or_empty_file_is_400(app, uploader, kwargs):
    r = app.test_client().post("/api/community/upload", headers=uploader.headers, **kwargs)
    assert r.status_code == 400 and "error" in r.json


def test_upload_needs_auth(client):
    r = client.post(
        "/api/community/upload", data={"file": (io.BytesIO(image_bytes("PNG")), "a.png")}
    )
    assert r.status_code == 401


def test_serving_checks_names_and_login(uploader, client, login):
    url = uploader(image_bytes("PNG")).json["url"]
    assert client.get(url).status_code in (302, 303)  # signed-out: to the login page
    login(uploader.user)
    for bad in [
        "../../instance/secret_key",
        "..%2f..%2fsecret_key",
        "x.png",
        "0" * 32 + ".svg",
        "0" * 32 + ".png",
    ]:
        assert client.get("/community/uploads/" + bad).status_code == 404


def test_deleting_an_issue_removes_its_attachment_files(uploader, app, auth):
    c = app.test_client()
    h = uploader.headers
    keep = uploader(image_bytes("PNG")).json["url"]  # never used: stays (pruned after a day)
    in_issue = uploader(image_bytes("PNG")).json["url"]
    in_fix = uploader(image_bytes("JPEG")).json["url"]
    r = c.post(
        "/api/community/issues",
        json={"title": "screen is red", "body": f"see ![s]({in_issue})"},
        headers=h,
    )
    issue_id = r.json["issue"]["id"]
    assert f'<img src="{in_issue}" alt="s">' in r.json["issue"]["body_html"]
    c.post(
        f"/api/community/issues/{issue_id}/fixes", json={"body": f"![fixed]({in_fix})"}, headers=h
    )

    # someone else referencing those files cannot claim them
    (other,) = quick_users(app, "thief")
    c.post(
        "/api/community/issues",
        json={"title": "my copy", "body": f"![x]({keep})"},
        headers=auth(other),
    )

    paths = [_stored(app, u) for u in (keep, in_issue, in_fix)]
    assert all(os.path.exists(p) for p in paths)
    assert c.delete(f"/api/community/issues/{issue_id}", headers=h).status_code == 204
    assert os.path.exists(paths[0])
    assert not os.path.exists(paths[1]) and not os.path.exists(paths[2])

    from sqlalchemy import func, select

    from portal.community.models import Attachment
    from portal.extensions import db

    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Attachment)) == 1
