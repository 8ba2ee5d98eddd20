// Sonae service worker (scope "/"): the portal opens with no network, and pushed
// messages become notifications.
//
// Cache: the page's files and the public documents (/v1/public/snapshot, the whole
// shelter list) are fetched network-first and the last good answer is kept; with no
// network the kept answer is served, public documents marked "X-Sonae-Offline: 1" so
// the page can say it is offline and show "as of" (the answer's own Date header).
// Push: the payload is JSON {title, body, url, level, tag}, already in the
// subscriber's language (the broadcaster's push channel writes it).
"use strict";

const CACHE = "sonae-portal-v1";
const SHELL = ["/", "/static/app.js", "/static/portal.js", "/static/i18n.json",
  "/static/style.css", "/region.json", "/config.json", "/manifest.webmanifest",
  "/icons/icon-192.png", "/icons/icon-512.png"];
const DATA = ["/v1/public/snapshot", "/v1/public/shelters"];

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL);
    // Best effort: a gateway still catching up answers the snapshot 503.
    await Promise.all(DATA.map((path) => fetch(path).then((response) => {
      if (response.ok) return cache.put(path, response);
      return undefined;
    }).catch(() => undefined)));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (DATA.includes(url.pathname)) event.respondWith(networkFirst(request, url, true));
  else if (SHELL.includes(url.pathname)) event.respondWith(networkFirst(request, url, false));
});

async function networkFirst(request, url, isData) {
  const cache = await caches.open(CACHE);
  // The page itself is kept once, whatever its query (?area=…&lang=… from a notification).
  const key = isData ? request : url.pathname;
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match(key);
    if (!kept) return Response.error();
    if (!isData) return kept;
    const headers = new Headers(kept.headers);
    headers.set("X-Sonae-Offline", "1");
    return new Response(await kept.blob(), { status: 200, headers });
  }
}

function sameOriginUrl(value) {
  // A notification may only open a page of this portal.
  try {
    const url = new URL(value || "/", self.location.origin);
    return url.origin === self.location.origin ? url.href : self.location.origin + "/";
  } catch (error) {
    return self.location.origin + "/";
  }
}

self.addEventListener("push", (event) => {
  let message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch (error) {
    message = { body: event.data ? event.data.text() : "" };
  }
  const options = {
    body: String(message.body || ""),
    data: { url: sameOriginUrl(message.url), level: message.level },
    icon: "/icons/icon-192.png",
    badge: "/icons/icon-192.png",
    // Level 4 and 5 stay on screen until the resident acts on them.
    requireInteraction: Number(message.level) >= 4,
  };
  if (message.tag) options.tag = String(message.tag);
  event.waitUntil(self.registration.showNotification(String(message.title || "備え"), options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = sameOriginUrl(event.notification.data && event.notification.data.url);
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const same = windows.find((client) => client.url === url);
    if (same) return same.focus();
    if (windows.length && "navigate" in windows[0]) {
      const client = await windows[0].navigate(url);
      return client ? client.focus() : undefined;
    }
    return self.clients.openWindow(url);
  })());
});
