/* The portal's service worker: caches the static shell and an offline page, nothing else.
   Pages and API answers (which carry user data, CSRF tokens, secrets) always go to the
   network and are never stored; when the network is gone a page load shows the offline page. */
"use strict";

const CACHE = "portal-shell-v2"; // the shell files are fetched fresh whenever online; the cache is the offline copy
const OFFLINE = "/static/pwa/offline.html";
const SHELL = [
  OFFLINE,
  "/static/css/app.css",
  "/static/img/favicon.svg",
  "/static/pwa/icon-192.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim())
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (req.mode === "navigate") {
    // A page: always from the network; the offline page only when there is none.
    event.respondWith(fetch(req).catch(() => caches.match(OFFLINE)));
    return;
  }
  if (SHELL.includes(url.pathname)) {
    // Network first (a changed app.css is seen at once), refreshing the offline copy; the
    // cached copy only when the network is gone.
    event.respondWith(
      fetch(req)
        .then((resp) => {
          if (resp.ok) {
            const copy = resp.clone();
            caches.open(CACHE).then((cache) => cache.put(url.pathname, copy));
          }
          return resp;
        })
        .catch(() => caches.match(req, { ignoreSearch: true }))
    );
  }
  // Everything else (API, HTMX partials, other static files): the network, uncached.
});
