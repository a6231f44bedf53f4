"""The files drawer in real Chromium against the real server and a real sshd (SFTP): open it
beside the terminal, list the home folder, browse, sort, hidden files, names shown as text,
upload with the file picker (tus) and a conflict choice, rename (and its error next to the
field), delete with the list of what goes, chmod, a new folder, a terminal opened in a
folder; an upload resumed after a page reload from the machine's offset; the editor's save
and its conflict prompt when the file changed on the machine; a viewer's files page without
changing controls; the full-screen sheet at phone width."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat

import pytest

from tests.conftest import PASSWORD
from tests.fixtures.browser import sign_in

pytestmark = pytest.mark.timeout(90)

SHOTS = os.environ.get("PORTAL_SHOTS", "/tmp/shots")
CONNECTED = """(i) => { const pt = window.portalTerminals; const t = pt && pt.tabs[i];
  return !!t && t.state === 'connected'; }"""
HAS_LINE = """([line, i]) => { const pt = window.portalTerminals; const t = pt && pt.tabs[i];
  return !!t && pt.text(t).split('\\n').some(l => l.trim() === line); }"""
ROWS = "() => Array.from(document.querySelectorAll('[data-role=files-rows] tr')).map(r => r.dataset.name)"


def shot(page, name: str) -> None:
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, name))


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def sha(path) -> str:
    return hashlib.sha256(read(path)).hexdigest()


@pytest.fixture
def folder(sshd_user):
    """A fresh folder in the sshd user's home (owned by them), removed afterwards."""
    path = os.path.join(sshd_user.home, f"portal-drawer-{secrets.token_hex(4)}")
    os.mkdir(path)
    os.chown(path, sshd_user.uid, sshd_user.gid)

    def put(rel: str, data: bytes = b"", mode: int | None = None) -> str:
        full = os.path.join(path, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        for p in (full, os.path.dirname(full)):
            os.chown(p, sshd_user.uid, sshd_user.gid)
        if mode is not None:
            os.chmod(full, mode)
        return full

    yield path, put
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def box(live_server, make_user, sshd_machine):
    user = make_user("filesuser")
    machine = sshd_machine(user, name="files-box")
    return user, machine, live_server.url


def open_terminal(p, base, user, machine) -> None:
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.js_errors = errors
    sign_in(p, base, user.username, PASSWORD)
    p.goto(f"{base}/machines/{machine.agent_id}/terminal")
    p.wait_for_function(CONNECTED, arg=0)


def go_to(p, path: str) -> None:
    p.fill("[data-role=files-path]", path)
    p.press("[data-role=files-path]", "Enter")
    p.wait_for_function(
        "(p) => document.querySelector('[data-role=files-path]').value === p "
        "&& !document.querySelector('[data-role=files]').hasAttribute('aria-busy')",
        arg=path,
    )


def row(p, name: str):
    return p.locator(f"[data-role=files-rows] tr[data-name={json.dumps(name)}]")


def menu(p, name: str, action: str) -> None:
    row(p, name).locator("[data-action=files-row-menu]").click()
    p.click(f"[data-role=files-menu] [data-menu={action}]")


def wait_rows(p, names: list[str]) -> None:
    p.wait_for_function(f"(want) => JSON.stringify(({ROWS})()) === JSON.stringify(want)", arg=names)


def test_drawer_browses_uploads_and_manages(box, folder, sshd_user, page):
    user, machine, base = box
    path, put = folder
    put("b-small.txt", b"x" * 10)
    put("c-big.bin", b"y" * 5000)
    put("a-dir/inner.txt", b"inner")
    put("a-dir/deeper/leaf.txt", b"leaf")
    put(".hidden-file", b"h")
    evil = "<img src=x onerror=alert(1)>.txt"
    put(evil, b"evil")
    put("line\nbreak.txt", b"nl")
    open_terminal(page, base, user, machine)
    cols_before = page.evaluate("portalTerminals.tabs[0].term.cols")

    # opens at the home folder, beside the terminal (which narrows)
    page.click("[data-action=files]")
    page.wait_for_function(
        "(h) => document.querySelector('[data-role=files-path]').value === h", arg=sshd_user.home
    )
    assert page.get_attribute("[data-action=files]", "aria-pressed") == "true"
    row(page, os.path.basename(path)).wait_for()
    drawer = page.locator("[data-role=files]").bounding_box()
    assert drawer["x"] + drawer["width"] == pytest.approx(1280, abs=1) and drawer["width"] < 700
    page.wait_for_function("(c) => portalTerminals.tabs[0].term.cols < c", arg=cols_before)

    # into the folder by its name; folders first; names shown as text, never as markup
    row(page, os.path.basename(path)).locator("button.files-name").click()
    page.wait_for_function(
        "(p) => document.querySelector('[data-role=files-path]').value === p", arg=path
    )
    wait_rows(page, ["a-dir", evil, "b-small.txt", "c-big.bin", "line\nbreak.txt"])
    assert page.locator("[data-role=files] img").count() == 0
    assert row(page, evil).locator(".files-col-name").inner_text() == evil
    shown = page.evaluate(
        """() => Array.from(document.querySelectorAll('[data-role=files-rows] tr'))
             .find(r => r.dataset.name === 'line\\nbreak.txt').querySelector('.files-col-name').textContent"""
    )
    assert shown == "line\\x0abreak.txt"  # the newline made visible, not a line break
    crumbs = page.locator("[data-role=files-crumbs] button").all_inner_texts()
    assert crumbs[-1] == os.path.basename(path) and crumbs[0] == "/"
    # sortable: by size, largest first after a second click; folders stay first
    page.click("[data-sort=size]")
    page.click("[data-sort=size]")
    assert page.get_attribute("th.files-col-size", "aria-sort") == "descending"
    assert page.evaluate(ROWS)[:2] == ["a-dir", "c-big.bin"]
    page.click("[data-sort=name]")
    # hidden files on request
    page.check("[data-role=files-hidden]")
    row(page, ".hidden-file").wait_for()
    page.uncheck("[data-role=files-hidden]")
    row(page, ".hidden-file").wait_for(state="detached")

    # upload several files with the file picker (tus; three at a time, the rest wait):
    # listed, on the machine's disk, the right bytes
    data = secrets.token_bytes(300_000)
    extra = {f"m{i}.txt": secrets.token_bytes(1000 + i) for i in range(4)}
    page.set_input_files(
        "[data-role=files-input]",
        files=[{"name": "up.bin", "mimeType": "application/octet-stream", "buffer": data}]
        + [{"name": n, "mimeType": "text/plain", "buffer": b} for n, b in extra.items()],
    )
    for name in ["up.bin", *extra]:
        page.locator(f".files-upload[data-upload-name='{name}'][data-state=done]").wait_for()
        row(page, name).wait_for()
    assert sha(os.path.join(path, "up.bin")) == hashlib.sha256(data).hexdigest()
    assert all(read(os.path.join(path, n)) == b for n, b in extra.items())
    # the same name again: asked, "keep both" writes "up (1).bin"
    page.set_input_files(
        "[data-role=files-input]",
        files=[{"name": "up.bin", "mimeType": "application/octet-stream", "buffer": b"second"}],
    )
    page.locator("dialog.files-dialog", has_text="already exists").wait_for()
    page.click("dialog.files-dialog [data-choice=keep]")
    row(page, "up (1).bin").wait_for()
    assert read(os.path.join(path, "up (1).bin")) == b"second"
    assert read(os.path.join(path, "up.bin")) == data

    # rename: a taken name is refused next to the field and nothing moves; then a free one
    menu(page, "up.bin", "rename")
    page.fill("dialog.files-dialog [data-field=to]", "c-big.bin")
    page.click("dialog.files-dialog [data-choice=rename]")
    err = page.locator("dialog.files-dialog [data-role=dialog-error]")
    err.wait_for()
    assert "exists" in err.inner_text()
    assert os.path.exists(os.path.join(path, "up.bin"))
    page.fill("dialog.files-dialog [data-field=to]", "renamed.bin")
    page.click("dialog.files-dialog [data-choice=rename]")
    row(page, "renamed.bin").wait_for()
    assert not os.path.exists(os.path.join(path, "up.bin"))
    assert sha(os.path.join(path, "renamed.bin")) == hashlib.sha256(data).hexdigest()

    # chmod
    menu(page, "b-small.txt", "chmod")
    page.fill("dialog.files-dialog [data-field=mode]", "0600")
    page.click("dialog.files-dialog [data-choice=chmod]")
    page.wait_for_function(
        "() => document.querySelector('tr[data-name=\"b-small.txt\"] .files-col-mode').textContent === '-rw-------'"
    )
    assert stat.S_IMODE(os.stat(os.path.join(path, "b-small.txt")).st_mode) == 0o600

    # new folder
    page.click("[data-action=files-mkdir]")
    page.fill("dialog.files-dialog [data-field=name]", "made here")
    page.click("dialog.files-dialog [data-choice=create]")
    row(page, "made here").wait_for()
    assert os.path.isdir(os.path.join(path, "made here"))
    shot(page, "files-drawer-1280.png")

    # delete a folder: the confirmation lists what goes; cancel keeps it, delete removes it
    menu(page, "a-dir", "delete")
    goes = page.locator("dialog.files-dialog [data-role=files-goes]")
    goes.wait_for()
    text = goes.inner_text()
    assert "a-dir/inner.txt" in text and "a-dir/deeper/ (and everything in it)" in text
    page.click("dialog.files-dialog [data-choice=cancel]")
    assert os.path.isdir(os.path.join(path, "a-dir"))
    menu(page, "a-dir", "delete")
    page.click("dialog.files-dialog [data-choice=delete]")
    row(page, "a-dir").wait_for(state="detached")
    assert not os.path.exists(os.path.join(path, "a-dir"))

    # a terminal in a folder: a new tab whose shell starts there
    menu(page, "made here", "terminal")
    page.wait_for_function(CONNECTED, arg=1)
    page.keyboard.type("pwd\n")
    page.wait_for_function(HAS_LINE, arg=[os.path.join(path, "made here"), 1])

    # nothing half-written anywhere, no script errors
    assert not [n for n in os.listdir(path) if n.startswith(".portal-upload-")]
    assert page.js_errors == []


def test_upload_resumes_after_a_reload_from_the_machines_offset(box, folder, page, app, tmp_path):
    user, machine, base = box
    path, put = folder
    data = secrets.token_bytes(4 * 1024 * 1024)
    src = tmp_path / "resume.bin"
    src.write_bytes(data)
    hold_from = 1024 * 1024
    held, seen = [], []
    state = {"mode": "hold"}

    def on_tus(route, request):
        if state["mode"] == "block":  # the old page's retries while it reloads
            route.abort()
            return
        if request.method == "PATCH":
            seen.append(int(request.headers["upload-offset"]))
            if state["mode"] == "hold" and int(request.headers["upload-offset"]) >= hold_from:
                held.append(route)  # never answered: the upload is in flight when we reload
                return
        elif request.method == "HEAD":
            seen.append("HEAD")
        route.continue_()

    open_terminal(page, base, user, machine)
    page.route("**/files/tus/**", on_tus)
    page.click("[data-action=files]")
    page.wait_for_selector("[data-role=files-rows] tr")
    go_to(page, path)
    page.evaluate("portalFiles.chunkSize = 256 * 1024")
    page.set_input_files("[data-role=files-input]", str(src))
    while not held:
        page.wait_for_timeout(50)

    # the server's record: the bytes before the held PATCH reached the machine
    from portal.extensions import db
    from portal.files.models import FileUpload

    with app.app_context():
        rows = db.session.query(FileUpload).filter_by(machine_id=machine.id).all()
        assert [(r.name, r.offset) for r in rows] == [("resume.bin", hold_from)]

    state["mode"] = "block"
    page.reload()
    page.wait_for_function(CONNECTED, arg=0)
    state["mode"] = "pass"
    seen.clear()
    # the drawer comes back at the same folder and names the unfinished upload
    unfinished = page.locator("[data-role=files-unfinished] [data-upload-name='resume.bin']")
    unfinished.wait_for()
    assert page.input_value("[data-role=files-path]") == path
    shot(page, "files-unfinished-1280.png")
    page.set_input_files("[data-role=files-input]", str(src))  # the same file, picked again
    page.locator(".files-upload[data-upload-name='resume.bin'][data-state=done]").wait_for()
    row(page, "resume.bin").wait_for()

    # it continued from the machine's offset (HEAD, then PATCHes from there), not from zero
    assert seen[0] == "HEAD" and seen[1] == hold_from, seen[:3]
    assert page.evaluate("portalFiles.uploads[0].firstOffset") == hold_from
    assert sha(os.path.join(path, "resume.bin")) == hashlib.sha256(data).hexdigest()
    assert not [n for n in os.listdir(path) if n.startswith(".portal-upload-")]
    assert unfinished.count() == 0
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('tus::'))") == []
    with app.app_context():
        assert db.session.query(FileUpload).filter_by(machine_id=machine.id).count() == 0
    assert page.js_errors == []


def test_editor_saves_and_asks_when_the_file_changed_on_the_machine(box, folder, page):
    user, machine, base = box
    path, put = folder
    notes = put("notes.txt", b"hello\n")
    open_terminal(page, base, user, machine)
    # the shell reports its folder (OSC 7): the drawer opens there
    osc7 = 'printf \'\\033]7;file://%s%s\\007\' "$HOSTNAME" "$PWD"'
    page.keyboard.type(f"cd {path} && {osc7}\n")
    page.wait_for_function("(p) => portalTerminals.tabs[0].cwd === p", arg=path)
    page.click("[data-action=files]")
    page.wait_for_function(
        "(p) => document.querySelector('[data-role=files-path]').value === p", arg=path
    )
    row(page, "notes.txt").wait_for()

    menu(page, "notes.txt", "edit")
    page.locator("[data-role=files-editor] .CodeMirror").wait_for()
    page.click("[data-role=files-editor] .CodeMirror-code")
    page.keyboard.press("Control+End")
    page.keyboard.type("world\n")
    assert page.inner_text("[data-role=editor-state]") == "modified"
    page.click("[data-action=editor-save]")
    page.wait_for_function(
        "() => document.querySelector('[data-role=editor-msg]').textContent.startsWith('Saved')"
    )
    assert read(notes) == b"hello\nworld\n"

    # changed on the machine meanwhile: the save is refused and the editor asks
    with open(notes, "ab") as f:
        f.write(b"theirs\n")
    page.keyboard.type("mine\n")
    page.click("[data-action=editor-save]")
    page.locator("dialog.files-dialog", has_text="Changed on the machine").wait_for()
    shot(page, "files-editor-conflict-1280.png")
    page.click("dialog.files-dialog [data-choice=cancel]")  # keep editing
    page.wait_for_function(
        "() => document.querySelector('[data-role=editor-msg]').textContent.startsWith('Not saved')"
    )
    assert read(notes) == b"hello\nworld\ntheirs\n"
    page.click("[data-action=editor-save]")
    page.click("dialog.files-dialog [data-choice=overwrite]")
    page.wait_for_function(
        "() => document.querySelector('[data-role=editor-msg]').textContent.startsWith('Saved')"
    )
    assert read(notes) == b"hello\nworld\nmine\n"
    page.click("[data-action=editor-close]")
    page.locator("[data-role=files-editor]").wait_for(state="detached")
    assert page.js_errors == []


def test_viewer_browses_and_downloads_without_changing_controls(
    live_server, make_user, sshd_machine, grant_role, folder, page
):
    path, put = folder
    put("report.txt", b"quarterly\n")
    put("sub/x.txt", b"x")
    owner = make_user("owner")
    machine = sshd_machine(owner, name="shared-box")
    viewer = make_user("watcher")
    grant_role(machine, viewer, "viewer")
    base = live_server.url
    sign_in(page, base, viewer.username, PASSWORD)
    page.goto(f"{base}/machines/{machine.agent_id}")
    page.click("text=Browse files")
    page.wait_for_selector("[data-role=files-rows] tr")
    go_to(page, path)
    row(page, "report.txt").wait_for()
    assert page.get_attribute("[data-role=files]", "data-can-write") == "false"
    assert page.is_hidden("[data-action=files-upload]")
    assert page.is_hidden("[data-action=files-mkdir]")
    row(page, "report.txt").locator("[data-action=files-row-menu]").click()
    items = page.locator("[data-role=files-menu] [role=menuitem]").evaluate_all(
        "els => els.map(e => e.dataset.menu)"
    )
    assert items == ["download", "edit", "copy"]
    href = page.get_attribute("[data-role=files-menu] [data-menu=download]", "href")
    assert page.request.get(base + href).body() == b"quarterly\n"
    page.keyboard.press("Escape")
    # the folder menu: open, zip, copy; the server refuses a write anyway
    row(page, "sub").locator("[data-action=files-row-menu]").click()
    items = page.locator("[data-role=files-menu] [role=menuitem]").evaluate_all(
        "els => els.map(e => e.dataset.menu)"
    )
    assert items == ["open", "zip", "copy"]
    status = page.evaluate(
        """async (p) => (await fetch('/api/machines/' + portalFiles.agentId + '/files/delete', {
             method: 'POST', headers: {'Content-Type': 'application/json',
             'X-CSRFToken': JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']},
             body: JSON.stringify({path: p})})).status""",
        os.path.join(path, "report.txt"),
    )
    assert status == 403 and os.path.exists(os.path.join(path, "report.txt"))
    page.keyboard.press("Escape")
    shot(page, "files-page-viewer-1280.png")


def test_phone_width_shows_a_full_screen_sheet(box, folder, phone):
    user, machine, base = box
    path, put = folder
    put("phone.txt", b"p")
    open_terminal(phone, base, user, machine)
    phone.tap("[data-action=files]")
    phone.wait_for_selector("[data-role=files-rows] tr")
    go_to(phone, path)
    row(phone, "phone.txt").wait_for()
    sheet = phone.locator("[data-role=files]").bounding_box()
    assert (sheet["x"], sheet["y"], sheet["width"]) == (0, 0, 375)
    assert sheet["height"] == pytest.approx(740, abs=2)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    assert row(phone, "phone.txt").bounding_box()["width"] <= 375
    shot(phone, "files-sheet-375.png")
    row(phone, "phone.txt").locator("[data-action=files-row-menu]").tap()
    phone.locator("[data-role=files-menu]").wait_for()
    menu_box = phone.locator("[data-role=files-menu]").bounding_box()
    assert menu_box["x"] >= 0 and menu_box["x"] + menu_box["width"] <= 375
    shot(phone, "files-sheet-menu-375.png")
    phone.keyboard.press("Escape")
    phone.tap("[data-action=files-close]")
    phone.locator("[data-role=files]").wait_for(state="hidden")
    assert phone.js_errors == []
