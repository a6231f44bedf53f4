// Session page: plays the recording (asciinema-player), share toggle, close button.
// No inline script (CSP): everything comes from data-* attributes.
import { THEMES } from "./terminal/themes.js";

function csrfToken() {
  try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
  catch (e) { return ""; }
}

function showError(message) {
  var box = document.querySelector("[data-role=action-error]");
  if (!box) return;
  box.textContent = message;
  box.hidden = false;
}

function call(method, url, body) {
  var opts = {
    method: method,
    credentials: "same-origin",
    headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" }
  };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  return fetch(url, opts).then(function (resp) {
    if (resp.ok) return resp.status === 204 ? {} : resp.json().catch(function () { return {}; });
    return resp.json().catch(function () { return {}; }).then(function (data) {
      throw new Error(data.error || ("the server answered " + resp.status));
    });
  });
}

// The vendored asciinema-player compiles WebAssembly; a CSP without 'wasm-unsafe-eval'
// forbids that, so check first and fall back to a small xterm.js player of our own.
function wasmAllowed() {
  try {
    new WebAssembly.Module(new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
    return true;
  } catch (e) {
    return false;
  }
}

function initPlayer() {
  var el = document.getElementById("player");
  if (!el) return;
  var src = el.getAttribute("data-src");
  if (!src) return;
  var lib = el.getAttribute("data-player-js");
  if (lib && !window.AsciinemaPlayer && window.WebAssembly && wasmAllowed()) {
    // Loaded only now: the bundle compiles its WebAssembly as soon as it runs.
    var tag = document.createElement("script");
    tag.src = lib;
    tag.onload = function () { el.removeAttribute("data-player-js"); initPlayer(); };
    tag.onerror = function () { el.removeAttribute("data-player-js"); initPlayer(); };
    document.head.appendChild(tag);
    return;
  }
  if (window.AsciinemaPlayer && window.WebAssembly && wasmAllowed()) {
    try {
      createAsciinema(el, src, { speed: 1, idleTimeLimit: 2 }, false);
      el.setAttribute("data-player", "asciinema");
      asciinemaControls(el, src);
      return;
    } catch (e) { /* fall through to the xterm player */ }
  }
  if (window.Terminal) castPlayer(el, src);
  else el.textContent = "The recording cannot be played here; download the .cast file instead.";
}

// The asciinema-player takes its speed and idle-gap limit when created: a change re-creates it.
function createAsciinema(el, src, opts, autoPlay) {
  if (window.portalPlayer && window.portalPlayer.dispose) window.portalPlayer.dispose();
  el.textContent = "";
  var options = {
    fit: "width",
    idleTimeLimit: opts.idleTimeLimit || undefined,
    speed: opts.speed,
    autoPlay: autoPlay,
    preload: true,
    poster: "npt:0:1",
    terminalFontFamily: '"DejaVu Sans Mono", ui-monospace, Menlo, Consolas, monospace',
    theme: "asciinema"
  };
  window.portalPlayer = window.AsciinemaPlayer.create(src, el, options);
  window.portalPlayerOptions = { speed: opts.speed, idleTimeLimit: opts.idleTimeLimit };
}

// A command's ▶ button: the recording from a moment before its Enter (the prompt shows).
document.addEventListener("click", function (e) {
  var btn = e.target.closest && e.target.closest("[data-seek]");
  if (!btn) return;
  var at = Math.max(parseFloat(btn.getAttribute("data-seek")) - 0.5, 0);
  var p = window.portalPlayer;
  var el = document.getElementById("player");
  if (el) el.scrollIntoView({ block: "center" });
  if (!p || typeof p.seek !== "function") return;
  // Offsets are real time: with idle gaps skipped the player's timeline is shorter, so seek
  // on the full timeline (the idle limit is set to "never").
  var idle = document.querySelector("[data-role=idle]");
  if (idle && window.portalPlayerOptions && window.portalPlayerOptions.idleTimeLimit) {
    idle.value = "0";
    idle.dispatchEvent(new Event("change"));
    p = window.portalPlayer;
  }
  window.portalSeeking = Promise.resolve(p.seek(at)).then(function () { return p.play && p.play(); })
    .catch(function () { /* the player reports its own errors */ });
});

function asciinemaControls(el, src) {
  var bar = document.createElement("div");
  bar.className = "player-controls";
  function select(label, role, choices, value) {
    var wrap = document.createElement("label");
    wrap.textContent = label + " ";
    var sel = document.createElement("select");
    sel.setAttribute("data-role", role);
    choices.forEach(function (c) {
      var o = document.createElement("option");
      o.value = c[0]; o.textContent = c[1];
      if (c[0] === value) o.selected = true;
      sel.appendChild(o);
    });
    wrap.appendChild(sel);
    bar.appendChild(wrap);
    return sel;
  }
  var speed = select("Speed", "speed", [["1", "1\u00d7"], ["2", "2\u00d7"], ["4", "4\u00d7"]], "1");
  var idle = select("Skip idle gaps over", "idle",
    [["0", "never"], ["1", "1 s"], ["2", "2 s"], ["5", "5 s"]], "2");
  function apply() {
    createAsciinema(el, src, { speed: parseFloat(speed.value) || 1, idleTimeLimit: parseFloat(idle.value) || 0 }, true);
  }
  speed.addEventListener("change", apply);
  idle.addEventListener("change", apply);
  el.parentNode.insertBefore(bar, el);
}

// asciicast v2 on xterm.js: shows the final screen, plays from the start with idle gaps
// capped at 2 s, at 1x/2x/4x.
function castPlayer(el, src) {
  el.setAttribute("data-player", "xterm");
  el.classList.add("cast-player");
  var bar = document.createElement("div");
  bar.className = "cast-bar";
  var play = document.createElement("button");
  play.type = "button"; play.className = "btn sm"; play.textContent = "Play"; play.disabled = true;
  play.setAttribute("data-action", "cast-play");
  var speed = document.createElement("select");
  speed.setAttribute("aria-label", "Playback speed");
  ["1", "2", "4"].forEach(function (v) { var o = document.createElement("option"); o.value = v; o.textContent = v + "\u00d7"; speed.appendChild(o); });
  var clock = document.createElement("span");
  clock.className = "cast-clock mono small";
  var progress = document.createElement("progress");
  progress.max = 1; progress.value = 0;
  bar.appendChild(play); bar.appendChild(speed); bar.appendChild(progress); bar.appendChild(clock);
  var screen = document.createElement("div");
  screen.className = "cast-screen";
  el.appendChild(screen);
  el.appendChild(bar);

  var cols = parseInt(el.getAttribute("data-cols"), 10) || 80;
  var rows = parseInt(el.getAttribute("data-rows"), 10) || 24;
  var term = new window.Terminal({
    cols: cols, rows: rows, disableStdin: true, cursorBlink: false, scrollback: 0, fontSize: 13,
    fontFamily: '"DejaVu Sans Mono", ui-monospace, Menlo, Consolas, monospace',
    theme: Object.assign({}, THEMES.dark, { cursor: "#0b1120" })
  });
  term.open(screen);
  // The recording's width on this screen: smaller text down to 7 px, then scaled down
  // (a 200-column session on a phone), never wider than the page.
  function fitWidth() {
    var avail = screen.clientWidth - 16, size = 13;
    var box = term.element;
    if (box) box.style.transform = "";
    screen.style.height = "";
    term.options.fontSize = size;
    var s = screen.querySelector(".xterm-screen");
    while (s && s.offsetWidth > avail && size > 7) { size -= 1; term.options.fontSize = size; }
    if (s && box && avail > 0 && s.offsetWidth > avail) {
      var scale = avail / s.offsetWidth;
      box.style.transformOrigin = "0 0";
      box.style.transform = "scale(" + scale + ")";
      screen.style.height = Math.ceil(s.offsetHeight * scale) + 16 + "px";
    }
  }
  window.addEventListener("resize", fitWidth);

  var events = [], total = 0, idx = 0, timer = null, playing = false, startAt = 0, offset = 0;
  function fmt(t) { t = Math.max(0, Math.round(t)); return Math.floor(t / 60) + ":" + ("0" + (t % 60)).slice(-2); }
  function apply(ev) {
    if (ev[1] === "o") term.write(ev[2]);
    else if (ev[1] === "r") {
      var m = /^(\d+)x(\d+)$/.exec(ev[2] || "");
      if (m) { term.resize(+m[1], +m[2]); fitWidth(); }
    }
  }
  function showClock(t) { clock.textContent = fmt(t) + " / " + fmt(total); progress.value = total ? t / total : 1; }
  function stop() { playing = false; clearTimeout(timer); play.textContent = idx >= events.length ? "Replay" : "Play"; }
  function step() {
    var rate = parseFloat(speed.value) || 1;
    var now = offset + (performance.now() - startAt) / 1000 * rate;
    while (idx < events.length && events[idx][0] <= now) apply(events[idx++]);
    showClock(Math.min(now, total));
    if (idx >= events.length) { stop(); showClock(total); return; }
    timer = setTimeout(step, Math.max(10, Math.min(250, (events[idx][0] - now) * 1000 / rate)));
  }
  play.addEventListener("click", function () {
    if (playing) { offset = idx ? events[idx - 1][0] : 0; stop(); return; }
    if (idx >= events.length) { term.reset(); term.resize(cols, rows); idx = 0; offset = 0; }
    playing = true; play.textContent = "Pause"; startAt = performance.now(); step();
  });
  speed.addEventListener("change", function () {
    if (!playing) return;
    offset = idx ? events[idx - 1][0] : offset; startAt = performance.now();
  });

  fetch(src, { credentials: "same-origin" }).then(function (r) {
    if (!r.ok) throw new Error("the server answered " + r.status);
    return r.text();
  }).then(function (text) {
    var lines = text.split("\n"), t = 0, last = 0;
    try { var head = JSON.parse(lines[0]); if (head.width && head.height) { cols = head.width; rows = head.height; term.resize(cols, rows); } } catch (e) { /* keep the session size */ }
    for (var i = 1; i < lines.length; i++) {
      if (!lines[i]) continue;
      var ev;
      try { ev = JSON.parse(lines[i]); } catch (e) { continue; }
      if (!Array.isArray(ev) || typeof ev[0] !== "number") continue;
      t += Math.min(Math.max(ev[0] - last, 0), 2); // idle gaps capped at 2 s
      last = ev[0];
      events.push([t, ev[1], ev[2]]);
    }
    total = t;
    // Poster: the final screen; Play replays it from the start.
    events.forEach(apply);
    idx = events.length;
    fitWidth();
    showClock(total);
    play.disabled = !events.length;
    play.textContent = "Replay";
  }).catch(function (err) {
    screen.textContent = "The recording could not be loaded: " + err.message;
  });
  window.portalPlayer = { term: term, events: events };
}

function initShare() {
  var btn = document.querySelector("[data-action=share]");
  if (!btn) return;
  btn.addEventListener("click", function () {
    var want = btn.getAttribute("data-shared") !== "true";
    btn.disabled = true;
    call("POST", btn.getAttribute("data-url"), { shared: want }).then(function (data) {
      var shared = data && data.session ? !!data.session.shared : want;
      btn.setAttribute("data-shared", shared ? "true" : "false");
      btn.setAttribute("aria-pressed", shared ? "true" : "false");
      btn.textContent = shared ? "Stop sharing" : "Share read-only";
      var link = document.querySelector("[data-role=watch-link]");
      if (link) link.hidden = !shared;
      var hint = document.querySelector("[data-role=share-hint]");
      if (hint) hint.hidden = !shared;
    }, function (err) { showError("Sharing failed: " + err.message); })
      .then(function () { btn.disabled = false; });
  });
}

function initClose() {
  var btn = document.querySelector("[data-action=close-session]");
  if (!btn) return;
  btn.addEventListener("click", function () {
    if (!window.confirm("Close this session? Its shell ends.")) return;
    btn.disabled = true;
    call("DELETE", btn.getAttribute("data-url")).then(function () {
      window.location.reload();
    }, function (err) {
      btn.disabled = false;
      showError("Closing failed: " + err.message);
    });
  });
}

function boot() { initPlayer(); initShare(); initClose(); }
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
