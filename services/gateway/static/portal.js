// Sonae residents' portal: the areas a resident follows (up to three, by choice or by
// position), each with its level (number and name, never colour alone), what to do
// now, the open shelters suitable for the hazard in force nearest first, and the
// public messages; "notify me" through Web Push; and the form for residents sheltering
// at home (在宅避難), posted to the gateway, which forwards it to intake. Open
// stranded-commuter facilities (一時滞在施設) join the shelter list only while an order
// for a hazard they open after (an earthquake) is in force in the area. app.js owns
// the picture and the connection and calls render(); text goes in with textContent
// only, as in app.js.
"use strict";

window.SonaePortal = function (api) {
  const { S, t, el, name, time } = api;
  const MAX_AREAS = 3;
  const OPEN = ["open", "crowded", "full"];
  const P = { areas: [], origin: null, located: null, sites: null, key: undefined,
              subscription: null, note: "", busy: false, formLang: null,
              form: { state: "idle", reference: "", problems: [] } };
  const PENDING = "sonae.portal.athome";
  const LABELS = { area_id: "athome_area", size: "athome_size", needs: "athome_needs",
                   contact: "athome_contact", address: "athome_address", note: "athome_note" };

  // --- the areas followed ----------------------------------------------------------
  function known(id) { return S.region.districts.some((d) => d.id === id); }
  function loadAreas() {
    const query = new URLSearchParams(location.search).getAll("area")
      .flatMap((v) => v.split(",")).filter(Boolean);
    let stored = [];
    try { stored = JSON.parse(localStorage.getItem("sonae.portal.areas") || "[]"); } catch (e) { stored = []; }
    const chosen = [...query, ...stored].filter(known);
    P.areas = [...new Set(chosen)].slice(0, MAX_AREAS);
    saveAreas();
  }
  function saveAreas() { localStorage.setItem("sonae.portal.areas", JSON.stringify(P.areas)); }
  function toggleArea(id, on) {
    P.areas = P.areas.filter((a) => a !== id);
    if (on) P.areas.push(id);
    P.areas = P.areas.slice(0, MAX_AREAS);
    saveAreas();
    P.note = "";
    render();
    if (P.subscription) sendSubscription(P.subscription).catch(() => undefined);
  }

  // --- geometry --------------------------------------------------------------------
  function polygons(geometry) {
    return geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
  }
  function inRing([x, y], ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }
  function contains(geometry, point) {
    return polygons(geometry).some(([outer, ...holes]) =>
      inRing(point, outer) && !holes.some((hole) => inRing(point, hole)));
  }
  function centre(district) {
    const ring = polygons(district.geometry)[0][0];
    const sum = ring.reduce(([a, b], [x, y]) => [a + x, b + y], [0, 0]);
    return [sum[0] / ring.length, sum[1] / ring.length];
  }
  function metres([lon1, lat1], [lon2, lat2]) {
    const rad = Math.PI / 180, dLat = (lat2 - lat1) * rad, dLon = (lon2 - lon1) * rad;
    const h = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
    return 2 * 6371000 * Math.asin(Math.sqrt(h));
  }
  function distanceText(m) {
    return m < 1000 ? Math.round(m / 10) * 10 + " m" : (m / 1000).toFixed(1) + " km";
  }
  function locate() {
    if (!navigator.geolocation) { P.note = "location_denied"; render(); return; }
    P.note = "locating"; render();
    navigator.geolocation.getCurrentPosition((where) => {
      const point = [where.coords.longitude, where.coords.latitude];
      const district = S.region.districts.find((d) => contains(d.geometry, point));
      if (!district) { P.note = "location_outside"; render(); return; }
      P.origin = point; P.located = district.id; P.note = "";
      if (!P.areas.includes(district.id)) P.areas = [district.id, ...P.areas].slice(0, MAX_AREAS);
      saveAreas(); render();
    }, () => { P.note = "location_denied"; render(); }, { maximumAge: 300000, timeout: 15000 });
  }

  // --- the shelter list (whole region, kept offline by the service worker) ----------
  function sites() { return (P.sites && P.sites.sites) || S.region.sites; }
  function site(id) { return sites().find((s) => s.id === id); }
  async function loadSites() {
    try {
      const response = await fetch("/v1/public/shelters");
      if (response.ok) P.sites = await response.json();
    } catch (e) { /* the region document's sites will do */ }
  }

  // --- drawing ---------------------------------------------------------------------
  function levelLine(level, hazards) {
    if (!level) return el("p", { class: "level l0" }, el("strong", {}, t("level_none")));
    return el("p", { class: "level l" + level },
      el("span", { class: "badge l" + level }, t("level") + " " + level),
      el("strong", {}, t("L" + level)),
      hazards.length ? el("span", {}, "（" + hazards.map(t).join("・") + "）") : null);
  }
  function isFacility(info) { return (info.kinds || []).includes("temporary_stay"); }
  // A shelter suits the hazards of the area's level (any, when none is in force); a
  // stranded-commuter facility is listed only while an order for one of its hazards is.
  function suits(info, hazards, inForce) {
    if (isFacility(info)) return inForce.some((h) => info.hazards.includes(h));
    return !hazards.length || hazards.some((h) => info.hazards.includes(h));
  }
  function kindTags(info) {
    if (!isFacility(info)) return [];
    return [" ", el("span", { class: "kind-tag" }, t("temporary_stay")), " ",
            el("span", { class: "kind-tag" }, t(info.accessible ? "accessible" : "not_accessible"))];
  }
  function openShelters(areaId, hazards, inForce) {
    const district = S.region.districts.find((d) => d.id === areaId);
    const origin = P.origin && P.located === areaId ? P.origin : centre(district);
    const found = Object.values(S.state.shelter || {}).filter((s) => OPEN.includes(s.status))
      .map((s) => ({ state: s, info: site(s.shelter_id) })).filter(({ info }) => info)
      .filter(({ info }) => suits(info, hazards, inForce))
      .map((item) => ({ ...item, metres: metres(origin, [item.info.lon, item.info.lat]) }))
      .sort((a, b) => a.metres - b.metres).slice(0, 5);
    if (!found.length) return el("p", { class: "muted" }, t("no_open_shelters"));
    return el("ol", { class: "shelters-open" }, ...found.map(({ state, info, metres: m }) =>
      el("li", { "data-shelter": state.shelter_id },
        el("strong", {}, name(info.names)), ...kindTags(info), " ",
        el("span", { class: "status status-" + state.status }, t(state.status)), " ",
        el("span", { class: "muted" }, t("distance") + " " + distanceText(m)),
        el("div", { class: "muted" }, info.address || ""))));
  }
  function areaSites(areaId) {
    const status = (id) => ((S.state.shelter || {})[id] || {}).status;
    return el("ul", { class: "sites" }, ...sites().filter((s) => s.district_id === areaId)
      .sort((a, b) => name(a.names).localeCompare(name(b.names)))
      .map((s) => el("li", { "data-site": s.id },
        el("strong", {}, name(s.names)), ...kindTags(s), " ",
        status(s.id) ? el("span", { class: "status status-" + status(s.id) }, t(status(s.id))) : null,
        el("div", { class: "muted" }, s.address || ""),
        s.hazards.length ? el("div", { class: "muted" },
          t("suitable_for") + ": " + s.hazards.map(t).join("、")) : null)));
  }
  function areaMessages(areaId) {
    const messages = Object.values(S.state.message || {})
      .filter((m) => !m.area_ids || !m.area_ids.length || m.area_ids.includes(areaId))
      .sort((a, b) => String(b.published_at || "").localeCompare(String(a.published_at || "")))
      .slice(0, 5);
    if (!messages.length) return null;
    return el("ul", { class: "messages" }, ...messages.map((m) => {
      const text = (m.texts || {})[S.lang] || (m.texts || {}).ja;
      return el("li", { "data-message": m.message_id },
        el("strong", {}, text ? text.headline : t(m.kind)),
        text ? el("div", {}, text.full) : null,
        el("div", { class: "muted" }, time(m.published_at || m.requested_at)));
    }));
  }
  function card(areaId) {
    const district = S.region.districts.find((d) => d.id === areaId);
    const orders = Object.values(S.state.order || {})
      .filter((o) => o.status === "active" && o.area_ids.includes(areaId));
    const level = ((S.state.area || {})[areaId] || {}).level ||
      orders.reduce((top, o) => Math.max(top, o.level), 0) || null;
    const hazards = [...new Set(orders.filter((o) => o.level === level).map((o) => o.hazard))];
    const inForce = [...new Set(orders.map((o) => o.hazard))];
    const headingId = "area-" + areaId;
    return el("article", { class: "area-card l" + (level || 0), "data-area": areaId,
                           "aria-labelledby": headingId },
      el("h3", { id: headingId }, name(district.names)),
      levelLine(level, hazards),
      el("h4", {}, t("todo")),
      el("p", { class: "todo" }, t(level ? "todo_L" + level : "todo_none")),
      el("h4", {}, t("open_shelters")),
      openShelters(areaId, hazards, inForce),
      el("h4", {}, t("messages")),
      areaMessages(areaId) || el("p", { class: "muted" }, t("none")),
      el("h4", {}, t("area_shelters")),
      areaSites(areaId));
  }
  function freshness() {
    const node = document.getElementById("freshness");
    const asOf = S.asOf ? t("as_of_time").replace("{time}", time(S.asOf.toISOString())) : "";
    node.dataset.source = S.source;
    if (S.source === "offline") node.textContent = t("offline_banner") + " — " + asOf;
    else if (S.source === "http") node.textContent = t("polling") + " — " + asOf;
    else node.textContent = S.source === "live" ? t("live") : t("connecting");
  }
  function picker() {
    const full = P.areas.length >= MAX_AREAS;
    return S.region.districts.map((d) => {
      const on = P.areas.includes(d.id);
      const box = el("input", { type: "checkbox", value: d.id, name: "area",
                                onchange: (e) => toggleArea(d.id, e.target.checked) });
      box.checked = on;
      box.disabled = full && !on;
      return el("label", { class: "area-choice" }, box, " ", name(d.names));
    });
  }
  function notifyControl() {
    const button = document.getElementById("notify");
    const supported = "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
    button.hidden = !(typeof P.key === "string" && supported && P.areas.length);
    // What the key probe found (tests wait on it): unknown, absent (404) or present.
    button.dataset.key = P.key === undefined ? "unknown" : P.key === null ? "absent" : "present";
    button.textContent = t(P.subscription ? "notify_off" : "notify_on");
    button.setAttribute("aria-pressed", P.subscription ? "true" : "false");
    button.disabled = P.busy;
  }
  function render() {
    if (!S.region) return;
    const section = document.getElementById("portal");
    const role = (S.welcome && S.welcome.role) || "public";
    section.hidden = role !== "public";
    if (section.hidden) return;
    document.getElementById("area-picker-legend").textContent = t("choose_areas");
    document.getElementById("area-picker-choices").replaceChildren(...picker());
    document.getElementById("locate").textContent = t("use_location");
    const note = P.note || (P.areas.length >= MAX_AREAS ? "max_areas" : "");
    document.getElementById("portal-note").textContent = note ? t(note) : "";
    freshness();
    const cards = P.areas.map(card);
    document.getElementById("area-cards").replaceChildren(
      ...(cards.length ? cards : [el("p", { class: "muted" }, t("no_areas"))]));
    notifyControl();
    formControl();
  }

  // --- residents at home: the form (nothing of anyone else's report is ever shown) --
  // The report waits in localStorage, with its random id, until the ward acknowledges
  // it: a resend after a lost connection is the same report (intake replays or replaces).
  function pending() {
    try { return JSON.parse(localStorage.getItem(PENDING) || "null"); } catch (e) { return null; }
  }
  function randomId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  function formBody() {
    const form = document.getElementById("athome");
    const text = (id) => document.getElementById(id).value.trim();
    const body = { client_id: (pending() || {}).client_id || randomId(),
                   area_id: text("athome-area"),
                   size: Number.parseInt(text("athome-size"), 10),
                   needs: [...form.querySelectorAll('input[name="need"]:checked')].map((x) => x.value) };
    for (const [field, id] of [["contact", "athome-contact"], ["address", "athome-address"],
                               ["note", "athome-note"]]) {
      if (text(id)) body[field] = text(id);
    }
    return body;
  }
  async function sendPending() {
    const report = pending();
    if (!report || P.form.state === "sending") return;
    P.form = { state: "sending", reference: "", problems: [] }; formControl();
    try {
      const response = await fetch("/v1/public/at-home", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(report) });
      const answer = await response.json().catch(() => ({}));
      if (response.ok) {
        localStorage.removeItem(PENDING);
        P.form = { state: "received", reference: String(answer.household_id || "").slice(0, 8),
                   problems: [] };
        document.getElementById("athome").reset();
      } else if (response.status === 422 || response.status === 413 || response.status === 403) {
        localStorage.removeItem(PENDING);  // the ward refused it: fix and send again
        P.form = { state: "invalid", reference: "",
                   problems: (answer.errors || []).map((e) => (e.pointer || "").split("/")[1] || "") };
      } else {
        P.form = { state: "saved", reference: "", problems: [] };  // 429, 503: kept, sent later
      }
    } catch (e) {
      P.form = { state: "saved", reference: "", problems: [] };
    }
    formControl();
  }
  function submitForm(event) {
    event.preventDefault();
    localStorage.setItem(PENDING, JSON.stringify(formBody()));
    sendPending();
  }
  function formControl() {
    const select = document.getElementById("athome-area");
    if (P.formLang !== S.lang) {
      const chosen = select.value || P.areas[0] || "";
      select.replaceChildren(...S.region.districts.map((d) =>
        el("option", { value: d.id }, name(d.names))));
      if (chosen) select.value = chosen;
      P.formLang = S.lang;
    }
    const status = document.getElementById("athome-status");
    const f = P.form;
    status.dataset.state = f.state;
    status.textContent = {
      idle: "", sending: t("athome_sending"),
      received: t("athome_received") + (f.reference ? " " + t("athome_reference") + ": " + f.reference : ""),
      saved: t("athome_saved"),
      invalid: t("athome_invalid") + (f.problems.length ? ": " + [...new Set(f.problems)]
        .map((field) => t(LABELS[field] || "athome_refused")).join("、") : ""),
    }[f.state] || "";
    document.getElementById("athome-send").disabled = f.state === "sending";
  }

  // --- Web Push ----------------------------------------------------------------------
  function keyBytes(base64url) {
    const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(base64url.length / 4) * 4, "="));
    return Uint8Array.from(text, (c) => c.charCodeAt(0));
  }
  async function probeKey() {
    try {
      const response = await fetch("/v1/push/key");
      P.key = response.ok ? (await response.json()).publicKey : null;
    } catch (e) { P.key = null; }
    if (typeof P.key === "string" && "serviceWorker" in navigator) {
      const registration = await navigator.serviceWorker.ready;
      P.subscription = registration.pushManager ? await registration.pushManager.getSubscription() : null;
    }
    render();
  }
  async function sendSubscription(subscription) {
    const json = subscription.toJSON();
    const response = await fetch("/v1/push/subscriptions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ subscription: { endpoint: json.endpoint, keys: json.keys },
                             areas: P.areas, lang: S.lang }) });
    if (!response.ok) throw new Error("subscription refused: " + response.status);
  }
  async function toggleNotify() {
    P.busy = true; render();
    try {
      const registration = await navigator.serviceWorker.ready;
      if (P.subscription) {
        const endpoint = P.subscription.endpoint;
        await fetch("/v1/push/subscriptions", { method: "DELETE",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify({ endpoint }) });
        await P.subscription.unsubscribe();
        P.subscription = null; P.note = "";
      } else {
        if (await Notification.requestPermission() !== "granted") { P.note = "notify_denied"; return; }
        const subscription = await registration.pushManager.subscribe({
          userVisibleOnly: true, applicationServerKey: keyBytes(P.key) });
        await sendSubscription(subscription);
        P.subscription = subscription; P.note = "notify_active";
      }
    } catch (e) {
      P.note = "notify_failed";
    } finally {
      P.busy = false; render();
    }
  }

  async function start() {
    loadAreas();
    document.getElementById("locate").addEventListener("click", locate);
    document.getElementById("notify").addEventListener("click", toggleNotify);
    document.getElementById("athome").addEventListener("submit", submitForm);
    window.addEventListener("online", sendPending);
    await loadSites();
    render();
    probeKey();
    sendPending();  // a report left from a lost connection goes now
  }
  function relanguage() {
    // A subscription's notifications come in its language: tell the server the new one.
    if (P.subscription) sendSubscription(P.subscription).catch(() => undefined);
  }
  return { start, render, relanguage };
};
