// tether dashboard. No framework: one state object from /ui/api/state,
// rendered into the page; server-sent events say when to fetch it again.
// Every string from the server goes in with textContent, never as HTML.
"use strict";

let state = null;
let auditTimer = null;
let auditSeq = 0; // the newest audit request: an older answer that arrives after it is dropped
let events = null;
let leaving = false; // signing out: a 401 now is expected
let lockdownPending = false; // the lockdown switch's change is being confirmed or sent
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

// api calls the dashboard API. Changes carry the session's CSRF token;
// background refreshes say so, so that they do not keep a session alive.
async function api(method, path, body, background) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = state ? state.csrf : "";
  }
  if (background) headers["X-Tether-Background"] = "1";
  const resp = await fetch(path, { method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401) {
    if (!leaving) location.href = "/ui/login?e=expired";
    throw new Error("session expired");
  }
  let data = {};
  try { data = await resp.json(); } catch (_) { /* empty */ }
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

// cell is a table cell whose content is one block, so that on a phone
// (where rows become cards) the label and the content sit side by side.
function cell(attrs, ...kids) {
  return el("td", attrs, el("div", {}, ...kids));
}

function toast(msg, bad) {
  const t = $("toast");
  t.textContent = msg;
  t.className = "toast" + (bad ? " bad" : "");
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 3500);
}

function ago(iso) {
  if (!iso || iso.startsWith("0001")) return "never";
  const t = new Date(iso), now = state ? new Date(state.now).getTime() + (Date.now() - state.fetched) : Date.now();
  let s = Math.round((now - t.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return t.toLocaleDateString() + " " + t.toLocaleTimeString();
}

function stamp(iso) {
  if (!iso || iso.startsWith("0001")) return "";
  return new Date(iso).toLocaleString();
}

// The device list's filters and page: the server filters and pages, since
// a fleet may have 100,000 devices.
const devQuery = { q: "", state: "", offset: 0, limit: 100 };

let refreshSeq = 0;

async function refresh(background) {
  const seq = ++refreshSeq;
  const p = new URLSearchParams({ offset: devQuery.offset, limit: devQuery.limit });
  if (devQuery.q) p.set("q", devQuery.q);
  if (devQuery.state) p.set("state", devQuery.state);
  const s = await api("GET", "/ui/api/state?" + p, undefined, background);
  if (seq !== refreshSeq) return; // a newer refresh (another filter or page) is on its way
  // Devices left the filter (or were revoked away): go to the last page.
  if (s.devices.length === 0 && s.device_matched > 0 && devQuery.offset > 0) {
    devQuery.offset = Math.floor((s.device_matched - 1) / devQuery.limit) * devQuery.limit;
    return refresh(background);
  }
  s.fetched = Date.now();
  state = s;
  render();
}

function render() {
  const s = state;
  $("who").textContent = s.user;
  $("lockbanner").hidden = !s.lockdown;
  document.body.classList.toggle("locked", s.lockdown);
  // A live refresh must not flip the switch back while its confirmation
  // is open or its request in flight.
  if (!lockdownPending) $("lockdown").checked = s.lockdown;
  $("lock-label").textContent = s.lockdown ? "Lockdown is ON" : "Lockdown is off";
  $("pin").textContent = s.pin;
  renderApprovals(s);
  renderDevices(s);
  renderKeys(s);
  // The audit filter offers the devices on the current page (search to
  // find others), and keeps its current choice.
  const fd = $("f-device"), cur = fd.value;
  const opts = s.devices.map((d) => el("option", { value: d.id }, (d.name || d.id)));
  if (cur && !s.devices.some((d) => d.id === cur)) opts.unshift(el("option", { value: cur }, fd.selectedOptions[0]?.textContent || cur));
  fd.replaceChildren(el("option", { value: "" }, "all"), ...opts);
  fd.value = cur;
}

function renderApprovals(s) {
  $("approvals-box").hidden = s.approvals.length === 0;
  const c = $("apr-count"), waiting = s.approvals.length + s.pcr_pending.length;
  c.hidden = waiting === 0;
  c.textContent = waiting;
  $("pcr-box").hidden = s.pcr_pending.length === 0;
  $("pcr-pending").replaceChildren(...s.pcr_pending.map((p) => el("li", { class: "card approval pcr", dataset: { device: p.device, policy: p.policy } },
    el("div", { class: "grow" },
      el("strong", {}, p.name || p.device), ` booted with new ${p.bank} PCR ${p.pcr_ids} values`,
      el("div", { class: "muted" }, "policy ", p.policy.slice(0, 16), " · reported ", ago(p.created)),
      el("div", { class: "muted mono" }, p.values)),
    el("div", { class: "btns" },
      el("button", { class: "primary", onclick: () => pcrOp(p, "approve") }, "Approve"),
      el("button", { class: "danger", onclick: () => pcrOp(p, "deny") }, "Deny")))));
  $("approvals").replaceChildren(...s.approvals.map((a) => el("li", { class: "card approval", dataset: { approval: a.ID, device: a.Device } },
    el("div", { class: "grow" },
      el("strong", {}, a.name || a.Device), " wants to unlock",
      el("div", { class: "muted" }, "from ", a.Source, " · asked ", ago(a.Created), " · expires ", new Date(a.Deadline).toLocaleTimeString())),
    el("div", { class: "btns" },
      el("button", { class: "primary", onclick: () => approvalOp(a, "approve") }, "Approve"),
      el("button", { class: "danger", onclick: () => approvalOp(a, "deny") }, "Deny")))));
}

function renderDevices(s) {
  const tb = $("devices").tBodies[0];
  const total = s.device_total;
  $("no-devices").hidden = total > 0;
  $("dev-filters").hidden = total === 0;
  $("no-match").hidden = total === 0 || s.device_matched > 0;
  $("devices").hidden = s.devices.length === 0;
  const n = (st) => s.device_counts[st] || 0;
  $("dev-summary").textContent = total ? `${n("enabled")} enabled · ${n("pending")} pending · ${n("disabled")} disabled · ${n("revoked")} revoked` : "";
  $("dev-pager").hidden = s.device_matched <= s.limit && s.offset === 0;
  $("dev-range").textContent = s.devices.length ? `${s.offset + 1}–${s.offset + s.devices.length} of ${s.device_matched}` : "";
  $("dev-prev").disabled = s.offset === 0;
  $("dev-next").disabled = s.offset + s.devices.length >= s.device_matched;
  tb.replaceChildren(...s.devices.map((d) => {
    const btns = [];
    if (d.state === "pending") btns.push(el("button", { class: "primary small", onclick: () => deviceOp(d, "approve") }, "Approve"));
    if (d.state === "disabled") btns.push(el("button", { class: "small", onclick: () => deviceOp(d, "enable") }, "Enable"));
    if (d.state === "enabled") btns.push(el("button", { class: "small", onclick: () => deviceOp(d, "disable") }, "Disable"));
    if (d.state !== "revoked") btns.push(el("button", { class: "danger small", onclick: () => deviceOp(d, "revoke") }, "Revoke"));
    const last = d.last_decision && d.last_decision !== "allow"
      ? el("div", { class: "muted small-text" }, "last attempt ", ago(d.last_attempt), ": ", d.last_decision, d.last_reason ? " (" + d.last_reason + ")" : "") : null;
    return el("tr", { id: "dev-" + d.id, class: "state-" + d.state, dataset: { state: d.state, name: d.name } },
      cell({ "data-label": "Device" }, el("strong", {}, d.name || "(no name)"),
        el("div", { class: "muted mono" }, d.id, d.group ? " · " + d.group : ""),
        d.policy && d.policy.approval ? el("div", { class: "tag" }, "approval required") : null),
      cell({ "data-label": "State" }, el("span", { class: "badge " + d.state }, d.state),
        d.reason ? el("div", { class: "muted small-text" }, d.reason) : null),
      cell({ "data-label": "Last heard", title: stamp(d.last_seen) }, ago(d.last_seen)),
      cell({ "data-label": "Last unlock", class: "last-unlock", title: stamp(d.last_unlock) }, ago(d.last_unlock), last),
      cell({ "data-label": "Source", class: "mono" }, d.last_source || "—"),
      el("td", { class: "btns" }, btns));
  }));
}

function renderKeys(s) {
  $("keys").tBodies[0].replaceChildren(...s.keys.map((k) => el("tr", { class: k.advertised ? "" : "muted" },
    cell({ "data-label": "State" }, k.advertised ? "advertised" : "retired"),
    cell({ "data-label": "Use" }, k.use), cell({ "data-label": "Curve" }, k.curve),
    cell({ "data-label": "Thumbprint", class: "mono" }, k.thumbprint))));
}

function confirmDialog(title, text, okLabel, danger, withReason) {
  return new Promise((resolve) => {
    const d = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    $("confirm-ok").className = danger ? "danger" : "primary";
    $("confirm-reason").value = "";
    $("confirm-reason-label").hidden = !withReason;
    d.returnValue = "";
    d.onclose = () => resolve(d.returnValue === "ok" ? { reason: $("confirm-reason").value } : null);
    d.showModal();
  });
}

const opText = {
  approve: ["Approve enrolment", "The device becomes enabled and may unlock, subject to its policy."],
  enable: ["Enable device", "The device may unlock again; its keep-alive clock restarts."],
  disable: ["Disable device", "Every unlock of this device is refused until you enable it again. Reversible."],
  revoke: ["Revoke device — forever", "Revocation is forever: the server destroys this device's key. No disk bound to it can ever be unlocked again, by anyone, even with the device itself. Use Disable for a reversible stop."],
};

async function deviceOp(d, op) {
  const [title, text] = opText[op];
  const ok = await confirmDialog(title + ": " + (d.name || d.id), text, op === "revoke" ? "Revoke forever" : title.split(" ")[0], op === "revoke" || op === "disable", true);
  if (!ok) return;
  try {
    await api("POST", `/ui/api/devices/${encodeURIComponent(d.id)}/${op}`, { reason: ok.reason });
    toast(`${d.name || d.id}: ${op} done`);
    await refresh();
  } catch (e) { toast(e.message, true); }
}

async function approvalOp(a, op) {
  try {
    await api("POST", `/ui/api/approvals/${encodeURIComponent(a.ID)}/${op}`, {});
    toast(op === "approve" ? `Unlock of ${a.name} approved` : `Unlock of ${a.name} denied`);
    await refresh();
  } catch (e) { toast(e.message, true); }
}

async function pcrOp(p, op) {
  try {
    await api("POST", `/ui/api/devices/${encodeURIComponent(p.device)}/pcr-states/${encodeURIComponent(p.policy)}/${op}`, {});
    toast(op === "approve" ? `New PCR values of ${p.name || p.device} approved: the server signs them` : `New PCR values of ${p.name || p.device} denied`);
    await refresh();
  } catch (e) { toast(e.message, true); }
}

async function setLockdown(on) {
  lockdownPending = true;
  try {
    if (on) {
      const ok = await confirmDialog("Turn lockdown on", "Every managed unlock on every replica is refused until you turn it off.", "Lock down", true, false);
      if (!ok) { $("lockdown").checked = false; return; }
    }
    try {
      await api("POST", "/ui/api/lockdown", { on });
      toast(on ? "Lockdown on" : "Lockdown off");
    } catch (e) { toast(e.message, true); $("lockdown").checked = !on; }
  } finally {
    lockdownPending = false;
  }
  await refresh();
}

async function loadAudit(background) {
  const q = new URLSearchParams({ device: $("f-device").value, action: $("f-action").value, decision: $("f-decision").value, limit: "200" });
  const seq = ++auditSeq;
  const a = await api("GET", "/ui/api/audit?" + q, undefined, background);
  if (seq !== auditSeq) return; // the filters changed while this one was on its way
  const ch = $("chain");
  ch.className = "chain " + (a.verified ? "ok" : "bad");
  ch.textContent = a.verified ? `✔ chain verified: ${a.total} records` : "✘ chain broken: " + a.error;
  ch.title = a.head ? "head " + a.head : "";
  $("audit-count").textContent = `${a.matched} matching records` + (a.matched > a.records.length ? `, newest ${a.records.length} shown` : "");
  $("audit").tBodies[0].replaceChildren(...a.records.map((r) => el("tr", { class: "dec-" + r.decision },
    cell({ "data-label": "#", class: "mono" }, r.seq),
    cell({ "data-label": "Time", title: r.time, class: "time" }, stamp(r.time)),
    cell({ "data-label": "Action" }, r.action),
    cell({ "data-label": "Decision" }, el("span", { class: "badge d-" + r.decision }, r.decision)),
    cell({ "data-label": "Device" }, r.device ? (a.names[r.device] || r.device) : ""),
    cell({ "data-label": "By / from" }, [r.actor, r.source].filter(Boolean).join(" · ")),
    cell({ "data-label": "Reason", class: "reason" }, r.reason || ""))));
  $("audit").dataset.query = q.toString(); // what the rows show (the end-to-end test waits for it)
}

function showView() {
  const v = (location.hash || "#devices").slice(1);
  for (const sec of document.querySelectorAll(".view")) sec.hidden = sec.id !== "view-" + v;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === v);
  if (v === "audit") loadAudit().catch((e) => toast(e.message, true));
}

function connectEvents() {
  const es = new EventSource("/ui/api/events");
  events = es;
  const live = $("live");
  es.addEventListener("hello", () => { live.className = "live on"; });
  es.addEventListener("change", () => {
    refresh(true).catch(() => {});
    if (location.hash === "#audit") {
      clearTimeout(auditTimer);
      auditTimer = setTimeout(() => loadAudit(true).catch(() => {}), 200);
    }
  });
  es.addEventListener("expired", () => { es.close(); if (!leaving) location.href = "/ui/login?e=expired"; });
  es.onerror = () => {
    live.className = "live off";
    // A refused reconnect (session gone) closes the stream for good:
    // check the session, which sends us to sign-in if it ended.
    if (es.readyState === EventSource.CLOSED && !leaving) {
      refresh(true).then(() => setTimeout(connectEvents, 2000)).catch(() => {});
    }
  };
}

document.addEventListener("DOMContentLoaded", async () => {
  $("logout").addEventListener("click", async () => {
    leaving = true;
    if (events) events.close();
    try { await api("POST", "/ui/logout", {}); } catch (_) { /* gone anyway */ }
    location.href = "/ui/login?e=out";
  });
  $("lockdown").addEventListener("change", (e) => setLockdown(e.target.checked));
  $("lock-off-banner").addEventListener("click", () => setLockdown(false));
  $("rotate").addEventListener("click", async () => {
    const ok = await confirmDialog("Rotate Tang keys", "A new key pair is made and advertised; the current keys are retired but keep answering existing bindings.", "Rotate", false, false);
    if (!ok) return;
    try { const r = await api("POST", "/ui/api/keys/rotate", {}); toast(`New keys ${r.new.join(", ").slice(0, 24)}…; ${r.retired} retired`); await refresh(); }
    catch (e) { toast(e.message, true); }
  });
  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const t = await api("POST", "/ui/api/tokens", { group: $("token-group").value.trim(), ttl: $("token-ttl").value, note: $("token-note").value });
      $("token-qr").src = t.qr;
      $("token-cmd").textContent = t.command;
      $("token-cmd").dataset.token = t.token;
      $("token-exp").textContent = "expires " + new Date(t.expires).toLocaleString();
      $("token-out").hidden = false;
    } catch (err) { toast(err.message, true); }
  });
  $("token-copy").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("token-cmd").textContent); toast("Copied"); }
    catch (_) { toast("Select the command and copy it", true); }
  });
  $("audit-filter").addEventListener("change", () => loadAudit().catch((e) => toast(e.message, true)));
  const devFilter = () => {
    devQuery.q = $("dev-search").value.trim();
    devQuery.state = $("dev-state").value;
    devQuery.offset = 0;
    refresh().catch((e) => toast(e.message, true));
  };
  let searchTimer;
  $("dev-search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(devFilter, 250); });
  $("dev-state").addEventListener("change", devFilter);
  $("dev-filters").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(searchTimer); devFilter(); });
  const page = (dir) => { devQuery.offset = Math.max(0, devQuery.offset + dir * devQuery.limit); refresh().catch((e) => toast(e.message, true)); };
  $("dev-prev").addEventListener("click", () => page(-1));
  $("dev-next").addEventListener("click", () => page(1));
  window.addEventListener("hashchange", showView);
  try { await refresh(); } catch (e) { toast(e.message, true); return; }
  showView();
  connectEvents();
  setInterval(() => { if (state) { renderDevices(state); renderApprovals(state); } }, 10000);
});
