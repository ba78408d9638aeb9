// liuhen fleet monitor: plain JS, no build step. Data: /api/*, live updates: /api/events (SSE).
"use strict";
const $ = (sel) => document.querySelector(sel);
const units = new Map();
let selected = null;
let detailTimer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v; else if (k.startsWith("on")) node[k] = v; else node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}
const gb = (n) => (typeof n === "number" ? (n / 1e9).toFixed(1) + " GB" : "?");
const secs = (us) => (typeof us === "number" ? (us / 1e6).toFixed(1) + " s" : "?");
const ago = (s) => (s === null || s === undefined ? "never" : s < 90 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago");
async function getJSON(url) { const r = await fetch(url, { cache: "no-store" }); if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); }

function unitRow(u) {
  const link = u.online === true ? el("span", { class: "pill online" }, "online")
    : u.online === false ? el("span", { class: "pill offline" }, "offline (" + (u.death_reason || "?") + ")") : el("span", { class: "pill" }, "unknown");
  const faults = (u.faults || []).map((f) => el("div", { class: "warning fault", "data-fault": f }, f.replaceAll("_", " ")));
  const state = el("span", { class: "pill " + (u.recording ? "recording" : "") }, u.state || "?");
  const up = u.uploads || {};
  const alerts = (u.alerts || []).map((a) => el("div", { class: a.severity, title: a.message }, a.title));
  const officer = u.officer ? (u.officer.name ? u.officer.name + " (" + u.officer.id + ")" : u.officer.id) : "—";
  const backlog = u.backlog ? u.backlog.entries + " entries" : "?";
  const storage = u.storage_free_bytes === null || u.storage_free_bytes === undefined ? "?" : gb(u.storage_free_bytes) + " free";
  const clock = u.clock_synced === true ? el("span", { class: "ok" }, "synced") : u.clock_synced === false ? el("span", { class: "warning" }, "NOT synced") : "?";
  const chain = el("span", { class: u.missing ? "bad" : u.key_trusted ? "ok" : "warning" },
    (u.last_seq ?? "—") + (u.missing ? ", " + u.missing + " missing" : "") + (u.key_trusted ? "" : " (untrusted key)"));
  return el("tr", { "data-device": u.device, class: u.device === selected ? "selected" : "", onclick: () => select(u.device) },
    el("td", {}, el("b", {}, u.device)), el("td", { class: "link" }, link), el("td", { class: "state" }, state, ...faults),
    el("td", {}, officer), el("td", { class: "case" }, u.case || "—"), el("td", { title: u.last_seen || "" }, ago(u.last_seen_age_s)),
    el("td", {}, backlog), el("td", { class: "uploads" }, `${up.stored || 0} / ${(up.awaiting || 0) + (up.partial || 0)} / `,
      el("span", { class: up.quarantined ? "bad" : "" }, String(up.quarantined || 0))),
    el("td", {}, storage), el("td", {}, u.battery ? u.battery.percent + "%" : "—"), el("td", {}, clock), el("td", {}, chain),
    el("td", { class: "alerts" }, alerts.length ? alerts : "—"));
}

function renderUnits() {
  const body = $("#units tbody");
  const rows = [...units.values()].sort((a, b) => a.device.localeCompare(b.device)).map(unitRow);
  body.replaceChildren(...(rows.length ? rows : [el("tr", { class: "none" }, el("td", { colspan: 13 }, "no unit has reported yet"))]));
  $("#unit-count").textContent = units.size;
}

function renderAlerts(list) {
  $("#alert-count").textContent = list.length;
  $("#alerts").replaceChildren(...(list.length ? list.map((a) => el("li", { class: a.severity, "data-code": a.code, "data-device": a.device },
    el("b", {}, a.device + " — " + a.title), (a.count > 1 ? " ×" + a.count : "") + ": " + a.message))
    : [el("li", { class: "none" }, "no open alerts")]));
}

async function refreshAll() {
  const data = await getJSON("/api/units");
  units.clear();
  for (const u of data.units) units.set(u.device, u);
  renderUnits();
  renderAlerts(data.alerts);
  if (selected) scheduleDetail(0);
}

function select(device) {
  selected = device;
  location.hash = "unit=" + encodeURIComponent(device);
  renderUnits();
  scheduleDetail(0);
}

function scheduleDetail(delay) {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(() => loadDetail().catch((e) => console.error(e)), delay);
}

const EVENT_TEXT = {
  mark: (d) => "MARK" + (d.text ? ": " + d.text : ""),
  credential_shown: (d) => "credential shown" + (d.credential ? " (" + d.credential + ")" : "") + (d.error ? " — " + d.error : ""),
  note: (d) => "note: " + d.text,
  officer_login: (d) => "officer logged in: " + (d.officer ? d.officer.id : "?"),
  officer_logout: () => "officer logged out",
  recording_started: (d) => "recording " + d.recording_id + " started (" + d.trigger + ")",
  recording_stopped: (d) => "recording " + d.recording_id + " stopped (" + d.reason + ")",
  case_set: (d) => "case set: " + (d.case || "none"),
  interrupted: (d) => "INTERRUPTED (power cut?) in " + d.segment,
};

function timelineItem(item) {
  const d = item.detail || {};
  let text;
  if (item.type === "segment") text = "segment sealed: " + item.segment;
  else if (EVENT_TEXT[item.type]) text = EVENT_TEXT[item.type](d);
  else text = item.type;
  const where = d.position ? " @ " + secs(d.position.media_us) + " of recording " + d.position.recording_id : "";
  return el("li", { class: item.type, "data-type": item.type, "data-seq": item.seq },
    el("span", { class: "t" }, "#" + item.seq + " " + (item.at || item.wall || "")), text + where,
    item.trusted ? "" : el("span", { class: "warning" }, " (untrusted key)"));
}

function segmentRow(s) {
  const cls = s.upload === "stored" ? "ok" : s.upload === "quarantined" ? "bad" : "warning";
  const button = s.media ? el("button", { onclick: () => play(s) }, "play")
    : s.encrypted && s.upload === "stored" ? el("span", { title: "liuhen central decrypt FILE OUT --key AGENCY.key.pem" }, "encrypted") : "";
  return el("tr", { "data-segment": s.name, "data-upload": s.upload },
    el("td", {}, "r" + s.recording + " / s" + s.seq, el("br"), el("code", { title: s.sha256 }, s.name)),
    el("td", {}, secs(s.media_start_us) + " – " + secs(s.media_end_us)),
    el("td", {}, (s.wall_start || "").replace("T", " ")),
    el("td", { class: "verification " + cls }, s.verification), el("td", {}, button));
}

async function loadDetail() {
  if (!selected) return;
  const data = await getJSON("/api/units/" + encodeURIComponent(selected));
  const u = data.unit;
  units.set(u.device, u);
  renderUnits();
  $("#unit").hidden = false;
  $("#unit-name").textContent = u.device;
  $("#unit-summary").replaceChildren(
    el("span", { class: "pill " + (u.recording ? "recording" : "") }, u.state || "?"), " ",
    "firmware " + (u.firmware || "?") + "; " + u.entries + " entries verified on arrival; last seen " + ago(u.last_seen_age_s));
  keyed($("#segments tbody"), data.segments, (s) => s.name, segmentRow);
  keyed($("#timeline"), data.timeline, (t) => String(t.seq), timelineItem);
}

// Re-render only what changed: a row being clicked must not be swapped under the pointer.
const rendered = new WeakMap();
function keyed(parent, items, key, render) {
  const before = rendered.get(parent) || new Map();
  const after = new Map();
  const nodes = items.map((item) => {
    const k = key(item), text = JSON.stringify(item), old = before.get(k);
    const node = old && old.text === text ? old.node : render(item);
    after.set(k, { text, node });
    return node;
  });
  rendered.set(parent, after);
  if (nodes.length !== parent.children.length || nodes.some((n, i) => parent.children[i] !== n)) parent.replaceChildren(...nodes);
}

function play(s) {
  const video = $("#player");
  $("#player-box").hidden = false;
  $("#player-name").textContent = s.name;
  video.dataset.ready = "";
  video.dataset.segment = s.name;
  const status = $("#player-status");
  status.textContent = s.verification;
  status.className = s.upload === "stored" ? "ok" : "bad";
  // Segments continue the recording's timeline (a segment may start at 60 s): start
  // where the media is, not at 0.
  const toStart = () => {
    if (!video.buffered.length) return;
    const first = video.buffered.start(0);
    if (video.currentTime < first) video.currentTime = first;
    video.dataset.ready = "1";
    status.textContent = s.verification + " — plays from " + video.currentTime.toFixed(1) + " s of recording " + s.recording;
  };
  video.onloadedmetadata = toStart;
  video.oncanplay = toStart;
  video.src = s.media;
  video.load();
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("hello", () => { $("#live").className = "live"; $("#live").textContent = "live"; refreshAll().catch(console.error); });
  source.addEventListener("units", (e) => {
    for (const u of JSON.parse(e.data)) {
      const old = units.get(u.device);
      units.set(u.device, u);
      // New entries or upload progress change the unit's segments and timeline.
      if (u.device === selected && (!old || old.last_seq !== u.last_seq || JSON.stringify(old.uploads) !== JSON.stringify(u.uploads))) scheduleDetail(200);
    }
    renderUnits();
  });
  source.addEventListener("alert", () => {
    getJSON("/api/alerts").then((d) => renderAlerts(d.alerts)).catch(console.error);
  });
  source.onerror = () => { $("#live").className = "live off"; $("#live").textContent = "reconnecting…"; };
}

$("#unit-close").onclick = (e) => { e.preventDefault(); selected = null; location.hash = ""; $("#unit").hidden = true; renderUnits(); };
const fromHash = new URLSearchParams(location.hash.slice(1)).get("unit");
if (fromHash) selected = fromHash;
connect();
