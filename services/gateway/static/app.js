// Sonae dashboard: mirrors the gateway's picture (snapshot + deltas) and draws it.
// Every piece of text from the server is inserted with textContent or as an SVG
// text node, never as HTML; the page's CSP forbids inline scripts as a second line.
// The public view also reads the picture over plain HTTP (/v1/public/snapshot) when
// the websocket is blocked or the network is gone (then from the service worker's
// cache, marked offline, "as of" the time it was fetched); portal.js draws the
// residents' part. All times are shown in the region's time zone, labelled.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const S = { lang: "ja", region: null, config: null, state: {}, position: null, i18n: null,
              welcome: null, ws: null, backoff: 500, lastMessage: 0, pending: {}, notes: {},
              source: "connecting", asOf: null, retry: null };
  const POLL_MS = 20000;  // the public snapshot's revalidation period without a websocket
  let portal = null;

  // --- tokens and language ---------------------------------------------------------
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.get("token")) sessionStorage.setItem("sonae.token", params.get("token"));
    if (params.get("areas")) sessionStorage.setItem("sonae.areas", params.get("areas"));
    if (params.get("lang")) localStorage.setItem("sonae.lang", params.get("lang"));
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  }
  const token = () => sessionStorage.getItem("sonae.token");
  const areas = () => {
    const text = sessionStorage.getItem("sonae.areas");
    return text ? text.split(",").filter(Boolean) : null;
  };
  const strings = (lang) => (S.i18n && S.i18n.strings[lang]) || {};
  const t = (key) => strings(S.lang)[key] || strings("en")[key] || key;
  const name = (names) => (names && (names[S.lang] || names.ja)) || "";
  const areaName = (id) => {
    const d = S.region && S.region.districts.find((x) => x.id === id);
    return d ? name(d.names) : id;
  };
  const siteName = (id) => {
    const s = S.region && S.region.sites.find((x) => x.id === id);
    return s ? name(s.names) : id;
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;  // CSSOM: allowed by the CSP, unlike the attribute
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }
  function fill(id, items) {
    const list = document.getElementById(id);
    list.replaceChildren(...items);
  }
  function time(iso) {
    // The region's clock, not the browser's: a phone abroad must show what the ward says.
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString(S.lang === "zh" ? "zh-CN" : S.lang, { month: "numeric",
      day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
      timeZone: (S.region && S.region.timezone) || "Asia/Tokyo", timeZoneName: "short" });
  }
  function levelBadge(level, lifted) {
    return el("span", { class: "badge " + (lifted ? "lifted" : "l" + level) },
      t("level") + " " + level);
  }

  // --- connection ------------------------------------------------------------------
  function setConn(state) {
    const node = document.getElementById("conn");
    node.dataset.state = state;
    node.textContent = t(state);
  }
  const isPublic = () => !token();
  async function refreshPublic() {
    // Plain HTTP: what a CDN can carry, and what the service worker keeps for offline.
    if (!isPublic() || S.source === "live") return;
    try {
      const response = await fetch("/v1/public/snapshot");
      if (!response.ok) throw new Error("snapshot " + response.status);
      const body = await response.json();
      if (S.source === "live") return;  // the websocket came back meanwhile: it is fresher
      S.state = body.state;
      S.position = null;  // an HTTP picture has no position: the websocket starts afresh
      S.source = response.headers.get("X-Sonae-Offline") ? "offline" : "http";
      const date = response.headers.get("Date");
      S.asOf = date ? new Date(date) : new Date();
    } catch (e) {
      S.source = "offline";
    }
    schedule();
  }
  function connect() {
    clearTimeout(S.retry);
    setConn("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.hostname}:${S.config.websocket_port}/`);
    S.ws = ws;
    ws.onopen = () => {
      const hello = { type: "hello", token: token(), position: S.position };
      if (areas()) hello.areas = areas();
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (event) => {
      if (S.ws !== ws) { ws.close(); return; }  // replaced by a newer connection
      S.lastMessage = Date.now();
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      receive(message);
    };
    ws.onclose = (event) => {
      if (S.ws !== ws) return;
      setConn("offline");
      if (S.source === "live") S.source = "connecting";
      if (event.code === 4401) sessionStorage.removeItem("sonae.token");  // bad token: public
      if (isPublic()) refreshPublic();
      // Resume from the last position; the server sends exactly what was missed.
      S.retry = setTimeout(connect, S.backoff);
      S.backoff = Math.min(S.backoff * 2, 10000);
    };
  }
  function watchdog() {
    // Browsers cannot see websocket pings: the server's heartbeat says the link lives.
    const limit = 2.5 * 1000 * ((S.welcome && S.welcome.heartbeat_interval) || 15);
    if (S.ws && S.ws.readyState === WebSocket.OPEN && Date.now() - S.lastMessage > limit) {
      S.ws.close();
    }
  }
  function receive(message) {
    S.asOf = new Date();
    switch (message.type) {
      case "welcome":
        S.welcome = message; S.backoff = 500; setConn("live"); S.source = "live";
        if (message.resume === "snapshot") S.state = {};
        reloadHouseholds();  // a new connection: the lists may have changed meanwhile
        break;
      case "snapshot":
        S.state = message.state; S.position = message.position; break;
      case "delta":
        for (const change of message.changes) {
          const kind = S.state[change.kind] || (S.state[change.kind] = {});
          if (change.value === null) delete kind[change.id]; else kind[change.id] = change.value;
        }
        S.position = message.position; break;
      case "heartbeat":
        S.position = message.position; break;
      case "ack": case "error":
        if (message.id && waiting[message.id]) {
          const done = waiting[message.id];
          delete waiting[message.id];
          done(message);
        }
        if (message.id && S.pending[message.id]) {
          const recId = S.pending[message.id];
          S.notes[recId] = message.type === "ack" ? t("sent") : message.message;
          delete S.pending[message.id];
        }
        break;
      default: break;
    }
    schedule();
  }
  // Staff requests (checkin, checkout, transfer, households, supply_request): forwarded
  // to intake with this tab's token; `done` gets the ack or the error.
  const waiting = {};
  function newId(prefix) {
    return prefix + "-" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  }
  function staffRequest(type, fields, done) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) { done({ type: "error", message: t("offline") }); return; }
    const id = newId("s");
    waiting[id] = done;
    S.ws.send(JSON.stringify({ type, id, ...fields }));
  }
  function command(fields, recId) {
    const id = "c-" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
    S.pending[id] = recId;
    S.ws.send(JSON.stringify({ type: "command", id, ...fields }));
  }

  // --- drawing ---------------------------------------------------------------------
  let queued = false;
  function schedule() {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; render(); });
  }
  function projector() {
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    const rings = [];
    for (const d of S.region.districts) {
      const polys = d.geometry.type === "Polygon" ? [d.geometry.coordinates] : d.geometry.coordinates;
      for (const poly of polys) for (const ring of poly) for (const [x, y] of ring) {
        minX = Math.min(minX, x); maxX = Math.max(maxX, x);
        minY = Math.min(minY, y); maxY = Math.max(maxY, y);
      }
      rings.push(d);
    }
    const k = Math.cos(((minY + maxY) / 2) * Math.PI / 180);  // equirectangular, true at mid-latitude
    const scale = Math.min(960 / ((maxX - minX) * k), 660 / (maxY - minY));
    return ([x, y]) => [20 + (x - minX) * k * scale, 20 + (maxY - y) * scale];
  }
  function drawMap() {
    const svg = document.getElementById("map");
    const project = S.project || (S.project = projector());
    const nodes = [];
    const areasState = S.state.area || {};
    for (const d of S.region.districts) {
      const level = (areasState[d.id] || {}).level;
      const polys = d.geometry.type === "Polygon" ? [d.geometry.coordinates] : d.geometry.coordinates;
      let path = "";
      let cx = 0, cy = 0, n = 0;
      for (const poly of polys) for (const ring of poly) {
        ring.forEach((pt, i) => {
          const [x, y] = project(pt);
          path += (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
          cx += x; cy += y; n += 1;
        });
        path += "Z";
      }
      const shape = document.createElementNS(NS, "path");
      shape.setAttribute("d", path);
      shape.setAttribute("class", level ? "l" + level : "l0");
      shape.setAttribute("data-area", d.id);
      const title = document.createElementNS(NS, "title");
      title.textContent = name(d.names) + (level ? " — " + t("level") + " " + level : "");
      shape.append(title);
      nodes.push(shape);
      const label = document.createElementNS(NS, "text");
      label.setAttribute("x", (cx / n).toFixed(1));
      label.setAttribute("y", (cy / n).toFixed(1));
      label.setAttribute("text-anchor", "middle");
      label.textContent = name(d.names);
      nodes.push(label);
    }
    const shelters = S.state.shelter || {};
    for (const site of S.region.sites.filter((s) => s.shelter)) {
      const [x, y] = project([site.lon, site.lat]);
      const status = (shelters[site.id] || {}).status || "closed";
      const dot = document.createElementNS(NS, "circle");
      dot.setAttribute("cx", x.toFixed(1)); dot.setAttribute("cy", y.toFixed(1));
      dot.setAttribute("r", status === "closed" ? 4 : 7);
      dot.setAttribute("fill", { open: "#2a7", crowded: "#e90", full: "#d22", opening: "#69c" }[status] || "#999");
      const title = document.createElementNS(NS, "title");
      title.textContent = name(site.names) + " — " + t(status);
      dot.append(title);
      nodes.push(dot);
    }
    // Generators: a square marked "G" with its state written beside it, never colour alone.
    for (const g of Object.values(S.state.generator || {})) {
      const [x, y] = project([g.location.lon, g.location.lat]);
      const state = g.state || "unknown";
      const group = document.createElementNS(NS, "g");
      group.setAttribute("class", "generator gen-" + state);
      group.setAttribute("data-generator", g.generator_id);
      group.setAttribute("data-state", state);
      const box = document.createElementNS(NS, "rect");
      box.setAttribute("x", (x - 8).toFixed(1)); box.setAttribute("y", (y - 8).toFixed(1));
      box.setAttribute("width", "16"); box.setAttribute("height", "16");
      const letter = document.createElementNS(NS, "text");
      letter.setAttribute("x", x.toFixed(1)); letter.setAttribute("y", (y + 5).toFixed(1));
      letter.setAttribute("text-anchor", "middle");
      letter.textContent = "G";
      const label = document.createElementNS(NS, "text");
      label.setAttribute("x", (x + 11).toFixed(1)); label.setAttribute("y", (y + 5).toFixed(1));
      label.setAttribute("class", "gen-label");
      label.textContent = t("gen_" + state);
      const title = document.createElementNS(NS, "title");
      title.textContent = t("generator") + " " + g.owner + " — " + t("gen_" + state);
      group.append(title, box, letter, label);
      nodes.push(group);
    }
    // The map's accessible name lives in its <title>: keep one when redrawing.
    const heading = document.createElementNS(NS, "title");
    heading.id = "map-title";
    heading.textContent = t("map") + " — " + name(S.region.names);
    svg.replaceChildren(heading, ...nodes);
    const legend = [3, 4, 5].map((l) => el("li", {}, el("span", { class: "badge l" + l }, String(l)),
      t("L" + l)));
    if (S.state.generator) legend.push(el("li", {}, el("span", { class: "gen-key" }, "G"), t("generator")));
    fill("legend", legend);
  }
  function render() {
    if (!S.region) return;
    document.documentElement.lang = S.lang;
    const pending = S.i18n.review[S.lang] === "pending";
    document.getElementById("review-note").hidden = !pending;
    document.getElementById("review-note").textContent = pending ? t("review_note") : "";
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    document.getElementById("region-name").textContent = name(S.region.names);
    const role = (S.welcome && S.welcome.role) || "public";
    document.getElementById("who").textContent = t(role + "_view") +
      (S.welcome && S.welcome.subject ? " · " + S.welcome.subject : "");
    document.getElementById("signin").hidden = Boolean(token());
    document.getElementById("signout").hidden = !token();
    const exercise = ((S.state.meta || {}).cop || {}).exercise;
    document.getElementById("drill").hidden = !(S.config.drill || (S.welcome && S.welcome.drill) || exercise);
    setConn(document.getElementById("conn").dataset.state);
    document.getElementById("position").textContent = S.position ? "@" + S.position.slice(0, 16) : "";
    drawMap();
    renderRecommendations(role);
    renderOrders();
    renderShelters();
    renderSupplies(role);
    renderStaff(role);
    renderAtHome();
    renderWelfare();
    renderGenerators();
    renderReports();
    renderGauges();
    renderWarnings();
    renderMessages();
    portal.render();
  }
  const byTime = (field) => (a, b) => String(b[field] || "").localeCompare(String(a[field] || ""));

  function renderRecommendations(role) {
    const panel = document.getElementById("recommendations-panel");
    const recs = Object.values(S.state.recommendation || {});
    panel.hidden = role !== "hq";
    fill("recommendations", recs.sort(byTime("occurred_at")).slice(0, 30).map((r) => {
      const actions = el("div", {});
      if (r.status === "pending" && S.welcome && S.welcome.can_command) {
        const reason = el("input", { type: "text", placeholder: t("reason"), "aria-label": t("reason") });
        actions.append(
          el("button", { class: "approve", type: "button", "data-recommendation": r.recommendation_id,
            onclick: () => command({ action: "approve", recommendation_id: r.recommendation_id },
              r.recommendation_id) }, t("approve")), " ",
          reason, " ",
          el("button", { class: "reject", type: "button", onclick: () => {
            if (!reason.value.trim()) { reason.focus(); return; }
            command({ action: "reject", recommendation_id: r.recommendation_id,
              reason: reason.value.trim() }, r.recommendation_id);
          } }, t("reject")));
      }
      const resolution = r.resolution || {};
      return el("li", { "data-recommendation": r.recommendation_id },
        levelBadge(r.level), t(r.hazard), " · ", r.area_ids.map(areaName).join("、"),
        el("div", { class: "muted" }, t(r.status), " · ", t(r.kind), " · ", time(r.occurred_at)),
        el("div", { class: "rationale" }, r.rationale),
        resolution.reason ? el("div", { class: "note" }, resolution.reason) : null,
        S.notes[r.recommendation_id] ? el("div", { class: "note" }, S.notes[r.recommendation_id]) : null,
        actions);
    }));
  }
  function renderOrders() {
    const orders = Object.values(S.state.order || {}).sort(byTime("changed_at"));
    fill("orders", orders.map((o) => el("li", { "data-order": o.order_id },
      levelBadge(o.level, o.status === "lifted"), t("L" + o.level), " (", t(o.hazard), ") ",
      el("strong", {}, t(o.status)),
      el("div", {}, o.area_ids.map(areaName).join("、")),
      o.designated_shelter_ids.length ? el("div", { class: "muted" },
        o.designated_shelter_ids.map(siteName).join("、")) : null,
      el("div", { class: "muted" }, time(o.changed_at), o.issued_by ? " · " + o.issued_by : ""))));
  }
  function renderShelters() {
    const shelters = Object.values(S.state.shelter || {});
    // Shelter staff: the sites they run (those with check-in counts) first.
    const own = (s) => (s.registered === undefined ? 1 : 0);
    fill("shelters", shelters.sort((a, b) => (own(a) - own(b)) ||
        siteName(a.shelter_id).localeCompare(siteName(b.shelter_id)))
      .map((s) => {
        const site = S.region.sites.find((x) => x.id === s.shelter_id);
        const capacity = s.capacity || (site && site.capacity) || 0;
        const share = capacity && s.occupancy !== undefined ? Math.min(1, s.occupancy / capacity) : null;
        const bar = share === null ? null : el("div", { class: "bar " + s.status },
          el("div", { style: "width:" + Math.round(share * 100) + "%" }));
        const power = s.power ? t("power") + ": " + t(s.power.kind === "none" ? "power_none" : s.power.kind) +
          (s.power.fuel_hours_left !== null && s.power.fuel_hours_left !== undefined
            ? " (" + s.power.fuel_hours_left + " h)" : "") : null;
        return el("li", { "data-shelter": s.shelter_id },
          el("strong", {}, siteName(s.shelter_id)), " ",
          el("span", { class: "status-" + s.status }, t(s.status)),
          s.occupancy !== undefined ? el("span", { class: "muted" }, " " + s.occupancy + " / " + capacity) : null,
          bar,
          checkIns(s),
          power ? el("div", { class: "muted" }, power) : null,
          el("div", { class: "muted" }, t("hazards") + ": " + (s.hazards || []).map(t).join("、")));
      }));
  }
  // Check-in counts reach HQ and the shelter's own staff only (the view omits them otherwise).
  function checkIns(s) {
    if (s.registered === undefined) return null;
    const diff = s.unregistered;
    const needs = Object.entries(s.household_needs || {}).filter(([, n]) => n > 0);
    return el("div", { class: "checkins" },
      el("span", { class: "registered", "data-registered": String(s.registered) },
        t("registered") + " " + s.registered + " (" + s.registered_households + " " + t("households") + ")"),
      diff === null || diff === undefined ? null : el("span", {
        class: "unregistered" + (diff ? " differs" : ""), "data-unregistered": String(diff) },
        " / " + t("unregistered") + " " + (diff > 0 ? "+" : diff < 0 ? "−" : "±") + Math.abs(diff)),
      needs.length ? el("div", { class: "muted" },
        needs.map(([k, n]) => t("need_" + k) + " " + n).join("・")) : null);
  }
  const URGENCY = { critical: 0, urgent: 1, routine: 2 };
  const CLOSED = new Set(["received", "cancelled"]);
  function renderSupplies(role) {
    const panel = document.getElementById("supplies-panel");
    panel.hidden = !S.state.supply_request;
    document.getElementById("supplies-title").textContent =
      t(role === "shelter_staff" ? "our_supplies" : "supplies");
    // One queue across the ward: open before closed, then by urgency, then oldest first.
    const requests = Object.values(S.state.supply_request || {}).sort((a, b) =>
      (CLOSED.has(a.status) - CLOSED.has(b.status)) || (URGENCY[a.urgency] - URGENCY[b.urgency]) ||
      String(a.requested_at).localeCompare(String(b.requested_at)));
    fill("supplies", requests.map((r) => el("li", { "data-supply": r.request_id, "data-status": r.status },
      el("span", { class: "urgency urgency-" + r.urgency }, t("urgency_" + r.urgency)), " ",
      el("strong", {}, siteName(r.site_id)), " ",
      el("span", { class: "supply-status status-" + r.status }, t("supply_" + r.status)),
      el("div", {}, r.lines.map((l) => t("item_" + l.item) + " × " + l.quantity +
        (l.note ? " (" + l.note + ")" : "")).join("、")),
      r.note ? el("div", { class: "note" }, r.note) : null,
      el("div", { class: "muted" }, t("requested_at") + " " + time(r.requested_at),
        r.updated_at !== r.requested_at ? " · " + t("updated_at") + " " + time(r.updated_at) : "",
        r.assignee ? " · " + t("assignee") + ": " + r.assignee : ""),
      role === "shelter_staff" ? supplySteps(r)
        : role === "hq" && S.welcome && S.welcome.can_command ? hqSupplySteps(r) : null)));
  }
  function supplyButton(r, step, body) {
    return el("button", { type: "button", class: "supply-" + step, "data-supply": r.request_id,
      onclick: (event) => {
        const button = event.currentTarget;
        const extra = body ? body() : {};
        if (extra === null) return;  // e.g. no assignee typed yet
        button.disabled = true;
        staffRequest("supply_step", { request_id: r.request_id, step,
          body: { client_id: newId(step), ...extra } }, (m) => {
          button.disabled = false;
          if (m.type !== "ack") button.textContent = t("refused") + ": " + (m.message || m.code);
        });
      } }, t("supply_action_" + step));
  }
  function supplySteps(r) {
    // The requesting site confirms delivery or withdraws a request not yet on its way.
    const step = r.status === "dispatched" ? "receive"
      : (r.status === "requested" || r.status === "assigned") ? "cancel" : null;
    return step ? supplyButton(r, step) : null;
  }
  function hqSupplySteps(r) {
    // HQ takes a request through the whole table: assign (to a team or depot), dispatch,
    // receive on the site's behalf, or cancel before dispatch.
    const box = el("div", { class: "supply-steps" });
    if (r.status === "requested") {
      const who = el("input", { type: "text", class: "assignee", maxlength: "100",
                                "aria-label": t("assignee"), placeholder: t("assignee") });
      box.append(who, supplyButton(r, "assign", () => {
        const assignee = who.value.trim();
        if (!assignee) { who.focus(); return null; }
        return { assignee };
      }));
    }
    if (r.status === "assigned") box.append(supplyButton(r, "dispatch"));
    if (r.status === "dispatched") box.append(supplyButton(r, "receive"));
    if (r.status === "requested" || r.status === "assigned") box.append(supplyButton(r, "cancel"));
    return box.childNodes.length ? box : null;
  }
  // --- the staff panel: check-in, the households in, check-out, transfer, supplies ----
  // Built once per site (forms keep what is typed while deltas redraw the rest); the
  // household list is personal data, asked for over the socket and never cached.
  const HOUSEHOLD_NEEDS = ["wheelchair", "medical_care", "infant", "pet", "language", "dietary"];
  const ITEMS = ["water", "food", "blankets", "medical", "fuel", "hygiene", "other"];
  const URGENCIES = ["routine", "urgent", "critical"];
  const staff = { sites: null, cards: {}, lists: {} };
  function staffSites() {
    const w = S.welcome || {};
    if (w.own_sites) return w.own_sites;
    const own = w.own_areas;
    return S.region.sites.filter((x) => x.shelter && (!own || own.includes(x.district_id))).map((x) => x.id);
  }
  function say(node, message) {
    node.textContent = message.type === "ack" ? t("done") : t("refused") + ": " + (message.message || message.code);
    node.dataset.outcome = message.type;
  }
  function renderStaff(role) {
    const panel = document.getElementById("staff-panel");
    panel.hidden = role !== "shelter_staff";
    if (panel.hidden) return;
    const sites = staffSites();
    const key = sites.join(",") + "|" + S.lang;
    if (staff.sites !== key) {
      staff.sites = key;
      staff.cards = {};
      document.getElementById("staff-title").textContent = t("staff_title");
      fill("staff", sites.map((id) => (staff.cards[id] = staffCard(id))));
      for (const id of sites) loadHouseholds(id);
    }
  }
  function reloadHouseholds() {
    for (const site of Object.keys(staff.cards)) loadHouseholds(site);
  }
  function loadHouseholds(site) {
    staffRequest("households", { shelter_id: site }, (m) => {
      staff.lists[site] = m.type === "ack" ? m.result.households : null;
      drawHouseholds(site, m);
    });
  }
  function drawHouseholds(site, message) {
    const card = staff.cards[site];
    if (!card) return;
    const list = card.querySelector(".households");
    const rows = staff.lists[site];
    if (!rows) { list.replaceChildren(el("li", { class: "muted" }, t("refused") + ": " + (message.message || ""))); return; }
    const others = S.region.sites.filter((x) => x.shelter && x.id !== site);
    list.replaceChildren(...(rows.length ? rows.map((h) => {
      const note = el("span", { class: "note", "aria-live": "polite" });
      const to = el("select", { "aria-label": t("transfer_to") },
        ...others.map((x) => el("option", { value: x.id }, name(x.names))));
      return el("li", { "data-household": h.household_code },
        el("strong", { class: "code" }, h.household_code), " · " + h.size + " " + t("people"),
        h.needs.length ? " · " + h.needs.map((n) => t("need_" + n)).join("・") : "",
        h.name ? el("div", {}, h.name + (h.contact ? " · " + h.contact : "")) : null,
        el("div", { class: "muted" }, t("checked_in_at") + " " + time(h.checked_in_at)),
        el("div", { class: "actions" },
          el("button", { type: "button", class: "checkout", onclick: () => staffRequest("checkout",
            { shelter_id: site, household_code: h.household_code, body: { client_id: newId("out") } },
            (m) => { say(note, m); if (m.type === "ack") loadHouseholds(site); }) }, t("check_out")),
          to,
          el("button", { type: "button", class: "transfer", onclick: () => staffRequest("transfer",
            { shelter_id: site, household_code: h.household_code,
              body: { client_id: newId("tr"), to: to.value } },
            (m) => { say(note, m); if (m.type === "ack") reloadHouseholds(); }) }, t("transfer")),
          note));
    }) : [el("li", { class: "muted" }, t("none"))]));
  }
  function staffCard(site) {
    const result = el("div", { class: "checkin-result", "aria-live": "polite" });
    const size = el("input", { type: "number", name: "size", min: "1", max: "50", value: "1", required: "" });
    const needs = HOUSEHOLD_NEEDS.map((n) => el("label", { class: "check" },
      el("input", { type: "checkbox", name: "need", value: n }), t("need_" + n)));
    const language = el("input", { type: "text", name: "language", placeholder: "en, vi, zh-Hant…", maxlength: "12" });
    const person = el("input", { type: "text", name: "name", maxlength: "100" });
    const contact = el("input", { type: "text", name: "contact", maxlength: "100" });
    const checkin = el("form", { class: "checkin", onsubmit: (event) => {
      event.preventDefault();
      const body = { client_id: newId("in"), size: Number(size.value),
        needs: [...checkin.querySelectorAll("input[name=need]:checked")].map((x) => x.value) };
      if (language.value.trim()) body.language = language.value.trim();
      if (person.value.trim()) body.name = person.value.trim();
      if (contact.value.trim()) body.contact = contact.value.trim();
      staffRequest("checkin", { shelter_id: site, body }, (m) => {
        if (m.type !== "ack") { say(result, m); return; }
        const code = m.result.household_code;
        result.dataset.outcome = "ack";
        result.replaceChildren(el("div", {}, t("household_code") + ": ", el("strong", { class: "code" }, code)),
          el("img", { class: "qr", src: "/qr/household/" + encodeURIComponent(code) + ".svg",
            alt: t("household_code") + " " + code, width: "160", height: "160" }),
          el("button", { type: "button", class: "print", onclick: () => window.print() }, t("print")));
        checkin.reset();
        loadHouseholds(site);
      });
    } },
      el("label", {}, t("size"), " ", size),
      el("fieldset", { class: "needs" }, el("legend", {}, t("needs")), ...needs),
      el("label", {}, t("language_spoken"), " ", language),
      el("label", {}, t("name_optional"), " ", person),
      el("label", {}, t("contact_optional"), " ", contact),
      el("button", { type: "submit" }, t("check_in")));
    const note = el("span", { class: "note", "aria-live": "polite" });
    const item = el("select", { name: "item", "aria-label": t("item") }, ...ITEMS.map((x) => el("option", { value: x }, t("item_" + x))));
    const quantity = el("input", { type: "number", name: "quantity", min: "1", value: "1", "aria-label": t("quantity") });
    const urgency = el("select", { name: "urgency", "aria-label": t("urgency") },
      ...URGENCIES.map((x) => el("option", { value: x }, t("urgency_" + x))));
    const lines = [];
    const chosen = el("ul", { class: "lines" });
    const supplies = el("form", { class: "supply-form", onsubmit: (event) => {
      event.preventDefault();
      const all = lines.length ? lines.slice() : [{ item: item.value, quantity: Number(quantity.value) }];
      staffRequest("supply_request", { body: { client_id: newId("sr"), requester_kind: "shelter",
        site_id: site, lines: all, urgency: urgency.value } }, (m) => {
        say(note, m);
        if (m.type === "ack") { lines.length = 0; chosen.replaceChildren(); }
      });
    } },
      el("h4", {}, t("request_supplies")),
      el("div", { class: "row" }, item, quantity,
        el("button", { type: "button", class: "add-line", onclick: () => {
          lines.push({ item: item.value, quantity: Number(quantity.value) });
          chosen.append(el("li", {}, t("item_" + item.value) + " × " + quantity.value));
        } }, t("add_item"))),
      chosen,
      el("label", {}, t("urgency"), " ", urgency),
      el("button", { type: "submit" }, t("send_request")), note);
    return el("li", { class: "staff-site", "data-site": site },
      el("h3", {}, siteName(site)),
      el("details", { open: "" }, el("summary", {}, t("check_in")), checkin, result),
      el("h4", {}, t("households_in")), el("ul", { class: "households" }),
      supplies);
  }
  function needList(needs) {
    return Object.entries(needs).filter(([, n]) => n > 0).map(([k, n]) => t("need_" + k) + " " + n).join("・");
  }
  function renderAtHome() {
    document.getElementById("athome-panel").hidden = !S.state.at_home;
    const rows = Object.values(S.state.at_home || {})
      .sort((a, b) => areaName(a.area_id).localeCompare(areaName(b.area_id)));
    fill("athome-areas", rows.map((a) => el("li", { "data-area": a.area_id },
      el("strong", {}, areaName(a.area_id)), " ",
      a.households + " " + t("households") + " · " + a.people + " " + t("people"),
      a.welfare_pending ? el("span", { class: "waiting" }, " · " + t("welfare_waiting") + " " + a.welfare_pending) : null,
      el("div", { class: "muted" }, needList(a.needs) || t("none")))));
  }
  function renderWelfare() {
    document.getElementById("welfare-panel").hidden = !S.state.welfare_check;
    const items = Object.values(S.state.welfare_check || {}).sort((a, b) =>
      String(a.reported_at).localeCompare(String(b.reported_at)));
    fill("welfare", items.map((w) => {
      const last = w.last_check;
      return el("li", { "data-household": w.household_id },
        el("strong", {}, areaName(w.area_id)), " · " + w.size + " " + t("people") + " ",
        el("span", { class: "status" }, t("welfare_" + w.status)),
        el("div", {}, w.needs.map((n) => t("need_" + n)).join("・")),
        w.address ? el("div", {}, t("address") + ": " + w.address) : null,
        w.contact ? el("div", {}, t("contact") + ": " + w.contact) : null,
        w.note ? el("div", { class: "note" }, w.note) : null,
        last ? el("div", { class: "muted" }, t("last_check") + ": " + t("welfare_" + last.outcome) +
          " · " + time(last.at) + (last.note ? " — " + last.note : "")) : null,
        el("div", { class: "muted" }, time(w.reported_at)));
    }));
  }
  function renderGenerators() {
    document.getElementById("generators-panel").hidden = !S.state.generator;
    const generators = Object.values(S.state.generator || {})
      .sort((a, b) => a.generator_id.localeCompare(b.generator_id));
    fill("generators", generators.map((g) => {
      const state = g.state || "unknown";
      return el("li", { "data-generator": g.generator_id, "data-state": state },
        el("span", { class: "gen-key gen-" + state }, "G"), " ",
        el("strong", {}, g.owner), " ", el("span", { class: "status" }, t("gen_" + state)),
        el("div", { class: "muted" }, areaName(g.area_id), g.site_id ? " · " + siteName(g.site_id) : "",
          " · " + t("fuel_" + g.fuel) + " · " + t("rated") + " " + g.rated_kva + " kVA",
          g.fuel_hours_left !== null && g.fuel_hours_left !== undefined
            ? " · " + t("fuel_left") + " " + g.fuel_hours_left + " h" : ""),
        g.note ? el("div", { class: "note" }, g.note) : null,
        g.reported_at ? el("div", { class: "muted" }, time(g.reported_at)) : null);
    }));
  }
  function renderReports() {
    const reports = Object.values(S.state.report || {});
    document.getElementById("reports-panel").hidden = !S.state.report;
    fill("reports", reports.sort(byTime("occurred_at")).slice(0, 50).map((r) => {
      const c = r.casualties || {};
      const hurt = (c.injured || 0) + (c.dead || 0) + (c.missing || 0) + (c.trapped || 0);
      return el("li", { "data-report": r.report_id },
        el("strong", {}, t(r.category)), " · ", t("severity"), " ", r.severity, " · ",
        areaName(r.area_id || "—"),
        el("div", { class: "muted" }, time(r.occurred_at), " · ", (r.reporter || {}).team || "",
          (r.reporter || {}).name ? " (" + r.reporter.name + ")" : ""),
        hurt ? el("div", {}, t("casualties") + ": " + JSON.stringify(c)) : null,
        r.description ? el("div", {}, r.description) : null);
    }));
  }
  function renderGauges() {
    const gauges = Object.values(S.state.gauge || {});
    document.getElementById("gauges-panel").hidden = !S.state.gauge;
    fill("gauges", gauges.map((g) => {
      const info = S.region.gauges.find((x) => x.id === g.gauge_id);
      const thresholds = info ? Object.entries(info.thresholds) : [];
      const top = thresholds.length ? thresholds[thresholds.length - 1][1] * 1.2 : g.level_m * 1.2;
      const bar = el("div", { class: "bar" + (g.stage === "flood_danger" ? " full" : g.stage ? " crowded" : "") },
        el("div", { style: "width:" + Math.round(Math.min(1, g.level_m / top) * 100) + "%" }));
      return el("li", { "data-gauge": g.gauge_id },
        el("strong", {}, info ? name(info.river_names) + "（" + name(info.station_names) + "）" : g.gauge_id),
        " " + g.level_m.toFixed(2) + " m ", el("span", {}, t(g.stage || "below")),
        g.stale ? el("span", { class: "stale" }, " " + t("stale")) : null,
        bar,
        el("div", { class: "muted" }, thresholds.map(([k, v]) => t(k) + " " + v + " m").join(" / ")),
        el("div", { class: "muted" }, time(g.observed_at)));
    }));
  }
  function renderWarnings() {
    const warnings = Object.values(S.state.warning || {}).filter((w) => w.in_force);
    document.getElementById("warnings-panel").hidden = !S.state.warning;
    fill("warnings", warnings.sort(byTime("issued_at")).map((w) => el("li", {},
      el("strong", {}, w.name), " · ", t("level") + " " + w.alert_level_equivalent,
      el("div", { class: "muted" }, w.area_ids.map(areaName).join("、"), " · ", time(w.issued_at)))));
  }
  function renderMessages() {
    const messages = Object.values(S.state.message || {}).sort(byTime("published_at"));
    fill("messages", messages.slice(0, 50).map((m) => {
      const text = (m.texts || {})[S.lang] || (m.texts || {}).ja;
      const deliveries = m.deliveries ? Object.entries(m.deliveries) : [];
      return el("li", { "data-message": m.message_id },
        el("strong", {}, text ? text.headline : t(m.kind)),
        text ? el("div", { class: "rationale" }, text.full) : null,
        el("div", { class: "muted" }, time(m.published_at || m.requested_at), " · v" + m.version,
          deliveries.length ? " · " + deliveries.map(([k, v]) => k + " " + v.status).join(", ") : ""));
    }));
  }

  // --- start -----------------------------------------------------------------------
  async function start() {
    readHash();
    S.lang = localStorage.getItem("sonae.lang") || "ja";
    const query = new URLSearchParams(location.search).get("lang");  // a notification's link
    if (query && ["ja", "en", "zh", "ko"].includes(query)) S.lang = query;
    const select = document.getElementById("lang");
    select.value = S.lang;
    select.addEventListener("change", () => {
      S.lang = select.value; localStorage.setItem("sonae.lang", S.lang); render();
      portal.relanguage();
    });
    document.getElementById("signin").addEventListener("click", () => {
      const value = window.prompt(t("token_prompt"));
      if (value) { sessionStorage.setItem("sonae.token", value.trim()); S.position = null; S.ws.close(); }
    });
    document.getElementById("signout").addEventListener("click", () => {
      sessionStorage.removeItem("sonae.token"); S.position = null; S.state = {}; S.ws.close();
    });
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => undefined);
    }
    [S.config, S.region, S.i18n] = await Promise.all([
      fetch("/config.json").then((r) => r.json()), fetch("/region.json").then((r) => r.json()),
      fetch("/static/i18n.json").then((r) => r.json())]);
    if (!localStorage.getItem("sonae.lang") && !query) {
      S.lang = S.region.default_language; select.value = S.lang;
    }
    document.getElementById("attribution").textContent = S.region.attribution.join(" / ");
    portal = window.SonaePortal({ S, t, el, name, time });
    await portal.start();
    render();
    if (isPublic()) refreshPublic();
    connect();
    setInterval(watchdog, 2000);
    setInterval(() => { if (S.source !== "live") refreshPublic(); }, POLL_MS);
    // The network is back: try the websocket now rather than at the end of the backoff.
    window.addEventListener("online", () => {
      if (!S.ws || S.ws.readyState !== WebSocket.OPEN) { S.backoff = 500; connect(); }
    });
  }
  start();
})();
