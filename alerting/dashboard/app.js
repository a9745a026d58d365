/* Live ward dashboard: bed grid with sweeping ECG traces, heart rate, alarms (IEC 60601-1-8
   colours), acknowledgement, bed detail with the explainability view, and file upload.
   Bounded memory: fixed Float32Array rings per bed, capped lists, DOM nodes reused by key. */
"use strict";

const SWEEP_S = 5;          // seconds across a tile
const RING_S = 12;          // seconds kept per bed
const DELAY_S = 0.35;       // play-out delay that absorbs the server's 150 ms batches
const Y_MIN = -1.2, Y_MAX = 2.0;  // initial mV range of a tile trace (then auto-gain)
const GAIN_EVERY_S = 2;           // how often a bed's vertical range is re-fitted
const MAX_ALARMS_SHOWN = 100;
const PRIORITY_RANK = { high: 3, medium: 2, low: 1, technical: 0 };
// Fallback names; the server sends each alarm's own `label` (alerting.alarms.ALARM_LABELS).
const ALARM_LABELS = {
  asystole: "ASYSTOLE", vfib: "VFIB", vtach: "VTACH", extreme_tachy: "EXTREME TACHY",
  extreme_brady: "EXTREME BRADY", afib: "AFIB", svt: "SVT", tachy: "TACHY", brady: "BRADY",
  frequent_pvcs: "PVCs/min HIGH", pvc_run: "PVC run", pvc_couplet: "PVC couplet",
  pause: "PAUSE", unusual_beats: "Unusual beats", anomaly_trend: "Unusual beats rising",
  lead_off: "LEAD OFF", signal_lost: "SIGNAL LOST", device_offline: "DEVICE OFFLINE",
  noisy: "ARTIFACT: arrhythmia analysis suspended", clock_skew: "CLOCK SKEW",
};
// AAMI beat classes as the beat list names them (the server also sends `class_name`).
const CLASS_NAMES = { N: "normal", S: "PAC", V: "PVC", F: "fusion", Q: "unclassified" };
const className = (b) => (b.cls && CLASS_NAMES[b.cls]) || b.class_name || "";
// Rhythm labels by how urgent they are (the tile colours them like the alarm they go with).
const rhythmLevel = (r) => !r ? "" : /^(VF|VT|ASYS)/.test(r) ? "r-high"
  : /^(AFIB|SVT)/.test(r) ? "r-medium" : r === "ARTIFACT" ? "r-technical" : "r-normal";
const DEFAULT_WINDOW = { pre_s: 0.24, post_s: 0.40, fs: 100, n_points: 64 };

// Counters the browser tests read; they never grow beyond a few numbers.
const stats = { wsFrames: 0, framesDrawn: 0, samplesIn: 0, acks: 0, connected: false,
  live: false, heartbeats: 0 };
window.__ecg = stats;

// ---------------------------------------------------------------- token and API
const token = (() => {
  const params = new URLSearchParams(location.search);
  const t = params.get("token");
  if (t) {
    sessionStorage.setItem("ecg-token", t);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
    return t;
  }
  return sessionStorage.getItem("ecg-token") || "";
})();

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (!resp.ok) {
    const msg = body && body.error ? body.error : `HTTP ${resp.status}`;
    throw new Error(msg);
  }
  return body;
}

const $ = (id) => document.getElementById(id);
const alarmLabel = (a) => a.label || ALARM_LABELS[a.type]
  || String(a.type || "ALARM").toUpperCase().replace(/_/g, " ");
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleTimeString([], { hour12: false }) : "");
const isAcked = (a) => a.state === "acknowledged" || a.acknowledged_at != null;

// ---------------------------------------------------------------- beds
const beds = new Map();

class BedTile {
  constructor(name) {
    this.name = name;
    const node = $("tile-template").content.firstElementChild.cloneNode(true);
    node.dataset.bed = name;
    node.querySelector(".bed-name").textContent = name;
    this.el = node;
    this.canvas = node.querySelector("canvas.wave");
    this.ctx = this.canvas.getContext("2d");
    this.hrEl = node.querySelector(".hr");
    this.rhythmEl = node.querySelector(".rhythm");
    this.bannerEl = node.querySelector(".alarm-banner");
    this.leadEl = node.querySelector(".lead-state");
    this.fs = 0;
    this.ring = null;
    this.latest = -1;     // index one past the newest sample received
    this.play = -1;       // play-out cursor (float sample index)
    this.drawnTo = -1;    // last index drawn
    this.vitals = null;
    this.yMin = Y_MIN;
    this.yMax = Y_MAX;
    this.gainClock = 0;
    node.addEventListener("click", () => openDetail(name));
    new ResizeObserver(() => this.resize()).observe(this.canvas);
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (w !== this.canvas.width || h !== this.canvas.height) {
      this.canvas.width = w;
      this.canvas.height = h;
      this.redraw();
    }
  }

  reset(fs, i0) {
    this.fs = fs;
    this.ring = new Float32Array(Math.round(fs * RING_S)).fill(NaN);
    this.latest = i0;
    this.play = i0 - DELAY_S * fs;
    this.drawnTo = Math.floor(this.play);
    this.redraw();
  }

  ingest(w) {
    const n = w.y.length;
    if (!n) return;
    if (!this.ring || w.fs !== this.fs || w.i0 < this.latest - this.ring.length
        || w.i0 > this.latest + RING_S * w.fs || (w.i0 < this.latest - w.fs)) {
      this.reset(w.fs, w.i0);
    }
    const cap = this.ring.length;
    for (let i = this.latest; i < w.i0; i++) this.ring[((i % cap) + cap) % cap] = NaN;
    for (let k = 0; k < n; k++) {
      const v = w.y[k];
      this.ring[(((w.i0 + k) % cap) + cap) % cap] = v === null ? NaN : v;
    }
    this.latest = Math.max(this.latest, w.i0 + n);
    stats.samplesIn += n;
  }

  /** After a snapshot: start the sweep at the newest data with the whole history drawn. */
  prime() {
    this.play = this.latest - DELAY_S * this.fs;
    this.drawnTo = Math.floor(this.play);
    this.redraw();
  }

  sample(i) {
    if (i < this.latest - this.ring.length || i >= this.latest) return NaN;
    const cap = this.ring.length;
    return this.ring[((i % cap) + cap) % cap];
  }

  x(i) {
    const N = SWEEP_S * this.fs;
    return ((((i % N) + N) % N) / N) * this.canvas.width;
  }

  y(v) {
    const h = this.canvas.height;
    return h * 0.06 + (1 - (v - this.yMin) / (this.yMax - this.yMin)) * h * 0.88;
  }

  /** Fit the vertical range to the last sweep (2nd-98th percentile, at least 1.5 mV tall);
      redraw only when it changes noticeably, like a monitor's auto-size. */
  autoGain() {
    const N = SWEEP_S * this.fs, vals = [];
    for (let i = this.drawnTo - N + 1; i <= this.drawnTo; i += 2) {
      const v = this.sample(i);
      if (isFinite(v)) vals.push(v);
    }
    if (vals.length < 50) return;
    vals.sort((a, b) => a - b);
    let lo = vals[Math.floor(vals.length * 0.02)], hi = vals[Math.floor(vals.length * 0.98)];
    const pad = Math.max(0.15 * (hi - lo), (1.5 - (hi - lo)) / 2, 0.1);
    lo -= pad; hi += pad;
    const span = this.yMax - this.yMin;
    if (Math.abs(lo - this.yMin) > 0.15 * span || Math.abs(hi - this.yMax) > 0.15 * span) {
      this.yMin = lo; this.yMax = hi;
      this.redraw();
    }
  }

  advance(dt) {
    if (!this.ring) return false;
    const target = this.latest - DELAY_S * this.fs;
    this.play += dt * this.fs;
    if (this.play > target) this.play = target;                 // starved: wait for data
    if (this.play < target - 1.5 * this.fs) this.play = target;  // far behind: catch up
    const upto = Math.floor(this.play);
    this.gainClock += dt;
    if (this.gainClock >= GAIN_EVERY_S) { this.gainClock = 0; this.autoGain(); }
    if (upto <= this.drawnTo) return false;
    this.drawSpan(this.drawnTo, upto);
    this.drawnTo = upto;
    return true;
  }

  /** Draw samples (from, to], erasing a short gap ahead of the sweep like a bedside monitor. */
  drawSpan(from, to) {
    const ctx = this.ctx, W = this.canvas.width, H = this.canvas.height;
    const N = SWEEP_S * this.fs;
    if (to - from > N) from = to - N;
    const gap = Math.max(8, W * 0.025);
    const x0 = this.x(from + 1), x1 = this.x(to);
    ctx.fillStyle = "#020605";
    if (x1 >= x0) ctx.fillRect(x0 - 1, 0, x1 - x0 + gap + 1, H);
    else { ctx.fillRect(x0 - 1, 0, W - x0 + 1, H); ctx.fillRect(0, 0, x1 + gap, H); }
    if (x1 + gap > W) ctx.fillRect(0, 0, x1 + gap - W, H);
    ctx.strokeStyle = "#39ff6a";
    ctx.lineWidth = Math.max(1.5, (window.devicePixelRatio || 1) * 1.6);
    ctx.lineJoin = "round";
    ctx.beginPath();
    let pen = false;
    for (let i = from; i <= to; i++) {
      const v = this.sample(i);
      if (!isFinite(v) || (i % N + N) % N === 0) { pen = false; if (!isFinite(v)) continue; }
      const px = this.x(i), py = this.y(v);
      if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      pen = true;
    }
    ctx.stroke();
  }

  redraw() {
    const ctx = this.ctx;
    ctx.fillStyle = "#020605";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.ring && this.drawnTo > 0) this.drawSpan(this.drawnTo - SWEEP_S * this.fs + 1, this.drawnTo);
  }

  setVitals(v) {
    this.vitals = v;
    const st = v.status || {};
    const leadOff = v.lead_ok === false;
    const offline = st.state === "offline" || st.device_offline === true;
    const noSignal = st.signal_lost === true;
    const unusable = !feedLive || leadOff || offline || noSignal;
    const hr = v.hr_bpm;
    this.hrEl.textContent = unusable ? "---" : hr == null ? "--" : String(Math.round(hr));
    this.hrEl.classList.toggle("stale", unusable || hr == null);
    const rhythm = unusable ? "" : v.rhythm || "";
    this.rhythmEl.textContent = rhythm;
    this.rhythmEl.className = "rhythm " + rhythmLevel(rhythm);
    this.leadEl.textContent = !feedLive || offline ? "OFFLINE" : noSignal ? "NO SIGNAL"
      : leadOff ? "LEAD OFF"
      : st.noisy === true ? "NOISY" : "";
    this.leadEl.classList.toggle("bad", unusable || st.noisy === true);
    const a = v.alarm;
    this.el.classList.remove("alarm-high", "alarm-medium");
    this.bannerEl.className = "alarm-banner";
    if (a) {
      this.bannerEl.textContent = alarmLabel(a) + (isAcked(a) ? " (ACK)" : "");
      this.bannerEl.classList.add("bg-" + a.priority);
      if (!isAcked(a) && a.state === "active" && (a.priority === "high" || a.priority === "medium")) {
        this.bannerEl.classList.add("flash-" + a.priority);
      }
      if (a.priority === "high" || a.priority === "medium") this.el.classList.add("alarm-" + a.priority);
    } else {
      this.bannerEl.textContent = "";
    }
  }
}

function bedTile(name) {
  let t = beds.get(name);
  if (!t) {
    t = new BedTile(name);
    beds.set(name, t);
    const grid = $("grid");
    const after = [...grid.children].find((el) => el.dataset.bed.localeCompare(name, undefined, { numeric: true }) > 0);
    grid.insertBefore(t.el, after || null);
    t.resize();
  }
  return t;
}

// ---------------------------------------------------------------- alarms
const alarms = new Map();     // open alarms by id
const alarmNodes = new Map(); // li by id (reused)
let alarmHistory = null;           // list from the API when "history" is ticked

function upsertAlarm(a) {
  if (a.state === "ended") alarms.delete(a.id); else alarms.set(a.id, a);
}

/** Keep `list` showing one <li> per item, in the items' order: `nodes` maps each item's key
 *  (`keyOf`) to its <li>; a new one is set up by `make(li)`, every one by `update(li, item)`;
 *  those of items gone are removed. */
function syncList(list, nodes, items, keyOf, make, update) {
  const keep = new Set(items.map(keyOf));
  for (const [key, li] of nodes) if (!keep.has(key)) { li.remove(); nodes.delete(key); }
  items.forEach((item, idx) => {
    const key = keyOf(item);
    let li = nodes.get(key);
    if (!li) {
      li = document.createElement("li");
      make(li);
      nodes.set(key, li);
    }
    update(li, item);
    if (list.children[idx] !== li) list.insertBefore(li, list.children[idx] || null);
  });
}

function renderAlarms() {
  const list = $("alarm-list");
  let shown;
  if (alarmHistory) {
    shown = alarmHistory.slice(0, MAX_ALARMS_SHOWN);
  } else {
    shown = [...alarms.values()].sort((a, b) =>
      (isAcked(a) - isAcked(b)) || (PRIORITY_RANK[b.priority] - PRIORITY_RANK[a.priority])
      || (b.started_at - a.started_at)).slice(0, MAX_ALARMS_SHOWN);
  }
  syncList(list, alarmNodes, shown, (a) => a.id, (li) => {
    li.innerHTML = '<span class="bar"></span><span class="what"></span>'
      + '<button class="btn ack" type="button">ACK</button><span class="meta"></span>';
    li.querySelector(".ack").addEventListener("click", (ev) => { ev.stopPropagation(); acknowledge(li.dataset.id, li); });
    li.addEventListener("click", () => openDetail(li.dataset.bed));
  }, (li, a) => {
    li.dataset.id = a.id;
    li.dataset.bed = a.bed;
    li.className = `alarm p-${a.priority}` + (isAcked(a) ? " acked" : "") + (a.state === "ended" ? " ended" : "");
    li.querySelector(".what").textContent = `Bed ${a.bed} · ${alarmLabel(a)}`;
    li.querySelector(".meta").textContent = `${a.priority.toUpperCase()} · ${a.state}`
      + ` · ${fmtTime(a.started_at)}` + (a.acknowledged_by ? ` · ack ${a.acknowledged_by}` : "");
    li.querySelector(".ack").hidden = isAcked(a) || a.state === "ended";
  });
  $("alarm-empty").hidden = shown.length > 0;
  const counts = { high: 0, medium: 0, low: 0, technical: 0 };
  for (const a of alarms.values()) if (!isAcked(a)) counts[a.priority] = (counts[a.priority] || 0) + 1;
  const summary = $("alarm-summary");
  summary.replaceChildren(...Object.entries(counts).filter(([, n]) => n > 0).map(([p, n]) => {
    const s = document.createElement("span");
    s.className = `chip bg-${p}`;
    s.textContent = `${n} ${p.toUpperCase()}`;
    return s;
  }));
}

async function acknowledge(id, li) {
  const btn = li.querySelector(".ack");
  btn.disabled = true;
  try {
    const body = await api(`/api/alarms/${encodeURIComponent(id)}/ack`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ by: "dashboard" }),
    });
    stats.acks += 1;
    if (body && body.alarm) upsertAlarm(body.alarm);
    if (alarmHistory) await loadHistory();
    renderAlarms();
  } catch (err) {
    btn.title = err.message;
  } finally {
    btn.disabled = false;
  }
}

async function loadHistory() {
  const body = await api("/api/alarms?limit=100");
  alarmHistory = body.alarms;
}

$("show-ended").addEventListener("change", async (ev) => {
  if (ev.target.checked) await loadHistory(); else alarmHistory = null;
  renderAlarms();
});

// ---------------------------------------------------------------- websocket
let ws = null;
let backoff = 500;

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(token)}`);
  ws.onopen = () => { backoff = 500; setConn(true); };
  ws.onclose = () => {
    setConn(false);
    setTimeout(connect, backoff);
    backoff = Math.min(10000, backoff * 2);
  };
  ws.onmessage = (ev) => {
    stats.wsFrames += 1;
    handle(JSON.parse(ev.data));
  };
}

// The feed is LIVE only while the websocket is open, its heartbeats (1 s) keep coming and they
// say the alerting service has its message bus; otherwise OFFLINE, and no bed shows live values.
const HEARTBEAT_TIMEOUT_MS = 3000;
let wsUp = false;
let busUp = false;
let lastHeartbeat = 0;
let feedLive = false;

function setConn(up) {
  stats.connected = up;
  wsUp = up;
  if (!up) busUp = false;
  checkFeed();
}

function checkFeed() {
  const fresh = wsUp && Date.now() - lastHeartbeat < HEARTBEAT_TIMEOUT_MS;
  const live = fresh && busUp;
  const why = !wsUp ? "no connection to the alerting service"
    : !fresh ? "no heartbeat from the alerting service"
    : !busUp ? "the alerting service has lost the message bus" : "";
  stats.live = live;
  const el = $("conn");
  el.textContent = live ? "LIVE" : "OFFLINE";
  el.className = "conn " + (live ? "conn-up" : "conn-down");
  const banner = $("offline-banner");
  banner.hidden = live;
  banner.textContent = live ? "" : `OFFLINE: ${why}. Bed values are not live; check the patients.`;
  if (live !== feedLive) {
    feedLive = live;
    document.body.classList.toggle("feed-down", !live);
    for (const t of beds.values()) if (t.vitals) t.setVitals(t.vitals);
  }
}
setInterval(checkFeed, 500);

function handle(msg) {
  if (msg.type === "hello") {
    $("ward-name").textContent = msg.ward;
    document.title = `Ward ${msg.ward} · ECG monitor`;
    alarms.clear();
    for (const b of msg.beds) {
      const t = bedTile(b.bed);
      if (b.wave) { t.reset(b.wave.fs, b.wave.i0); t.ingest(b.wave); t.prime(); }
      t.setVitals(b);
    }
    for (const a of msg.alarms) upsertAlarm(a);
    renderAlarms();
  } else if (msg.type === "batch") {
    for (const [bed, w] of Object.entries(msg.wave)) bedTile(bed).ingest(w);
    for (const [bed, v] of Object.entries(msg.vitals)) bedTile(bed).setVitals(v);
    if (detailBed && msg.beats.some((b) => b.bed === detailBed)) detailDirty = true;
  } else if (msg.type === "heartbeat") {
    stats.heartbeats += 1;
    lastHeartbeat = Date.now();
    busUp = msg.bus_connected === true;
    checkFeed();
  } else if (msg.type === "alarm") {
    upsertAlarm(msg.alarm);
    if (msg.bed) bedTile(msg.bed.bed).setVitals(msg.bed);
    if (alarmHistory) loadHistory().then(renderAlarms); else renderAlarms();
  }
}

// ---------------------------------------------------------------- animation
let lastT = null;
function frame(t) {
  const dt = lastT === null ? 0 : Math.min(0.5, (t - lastT) / 1000);
  lastT = t;
  let drew = false;
  for (const tile of beds.values()) drew = tile.advance(dt) || drew;
  if (drew) stats.framesDrawn += 1;
  requestAnimationFrame(frame);
}

setInterval(() => {
  $("clock").textContent = new Date().toLocaleTimeString([], { hour12: false });
}, 500);

// ---------------------------------------------------------------- bed detail
let detailBed = null;
let detailDirty = false;
let selectedBeat = null;
const beatNodes = new Map();

function openDetail(bed) {
  detailBed = bed;
  selectedBeat = null;
  $("detail-bed").textContent = bed;
  $("detail-report").href = `/api/beds/${encodeURIComponent(bed)}/report.pdf?token=${encodeURIComponent(token)}`;
  $("detail").hidden = false;
  beatNodes.clear();
  $("beat-list").replaceChildren();
  refreshDetail();
}

async function refreshDetail() {
  if (!detailBed) return;
  detailDirty = false;
  const bed = detailBed;
  let info;
  try { info = await api(`/api/beds/${encodeURIComponent(bed)}`); } catch (err) {
    $("explain-info").textContent = err.message;
    return;
  }
  if (bed !== detailBed) return;
  $("detail-hr").textContent = info.hr_bpm == null ? "--" : Math.round(info.hr_bpm);
  $("detail-rhythm").textContent = info.rhythm || "";
  $("detail-rhythm").className = "rhythm-inline " + rhythmLevel(info.rhythm);
  const list = $("beat-list");
  const beats = info.beats.slice(-150).reverse();
  syncList(list, beatNodes, beats, (b) => b.beat_id, (li) => {
    li.addEventListener("click", () => selectBeat(bed, li.dataset.id));
  }, (li, b) => {
    li.dataset.id = b.beat_id;
    li.dataset.cls = b.cls || "";
    li.className = "beat-row" + (b.anomalous ? " anomalous" : "") + (b.cls ? ` cls-${b.cls}` : "")
      + (b.beat_id === selectedBeat ? " selected" : "");
    beatRow(li, fmtTime(b.t), b);
  });
  if (!selectedBeat && beats.length) {
    const pick = beats.find((b) => b.anomalous) || beats[0];
    selectBeat(bed, pick.beat_id);
  }
}

/** One beat row: time, heart rate, class and score (reuses the row's spans). */
function beatRow(li, when, b) {
  if (!li.firstChild || !li.querySelector(".b-cls")) {
    li.innerHTML = '<span class="b-t"></span><span class="b-hr"></span>'
      + '<span class="b-cls"></span><span class="b-score"></span>';
  }
  li.querySelector(".b-t").textContent = when;
  li.querySelector(".b-hr").textContent = `HR ${b.hr_bpm == null ? "--" : Math.round(b.hr_bpm)}`;
  li.querySelector(".b-cls").textContent = className(b);
  li.querySelector(".b-score").textContent = `score ${b.score.toFixed(2)}${b.anomalous ? " ANOM" : ""}`;
}

async function selectBeat(bed, beatId) {
  selectedBeat = beatId;
  for (const [id, li] of beatNodes) li.classList.toggle("selected", id === beatId);
  try {
    const d = await api(`/api/beds/${encodeURIComponent(bed)}/beats/${encodeURIComponent(beatId)}`);
    if (bed !== detailBed) return;
    ExplainView.draw($("explain-canvas"), d.signal, d.sample, d.errors, d.window || DEFAULT_WINDOW);
    $("explain-title").textContent = `Beat ${d.beat_id} · ${fmtTime(d.t)}`;
    const cls = className(d);
    $("explain-info").textContent = (cls ? `${cls.toUpperCase()} beat · ` : "")
      + `score ${d.score} (threshold ${d.threshold})`
      + (d.anomalous ? " · ANOMALOUS" : " · normal")
      + (d.errors.length ? "" : " · no per-timestep error was sent for this beat");
  } catch (err) {
    $("explain-info").textContent = err.message;
  }
}

setInterval(() => { if (detailBed && detailDirty) refreshDetail(); }, 2000);

for (const btn of document.querySelectorAll("[data-close]")) {
  btn.addEventListener("click", () => {
    $(btn.dataset.close).hidden = true;
    if (btn.dataset.close === "detail") detailBed = null;
  });
}
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") { $("detail").hidden = true; $("upload").hidden = true; detailBed = null; }
});

// ---------------------------------------------------------------- upload
let uploadResult = null;

$("upload-open").addEventListener("click", () => { $("upload").hidden = false; });

$("upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData();
  for (const f of $("upload-file").files) form.append("file", f, f.name);
  if ($("upload-fs").value) form.append("fs", $("upload-fs").value);
  if ($("upload-lead").value) form.append("lead", $("upload-lead").value);
  $("upload-error").hidden = true;
  $("upload-result").hidden = true;
  $("upload-summary").textContent = "Scoring...";
  try {
    uploadResult = await api("/api/score", { method: "POST", body: form });
  } catch (err) {
    $("upload-error").textContent = err.message;
    $("upload-error").hidden = false;
    return;
  }
  showUpload(uploadResult);
});

function showUpload(r) {
  const s = r.summary;
  $("upload-summary").textContent = `${r.name}: ${r.duration_s.toFixed(1)} s at ${r.fs} Hz, lead ${r.lead}`
    + ` · ${s.n_beats} beats, ${s.n_anomalous} anomalous`
    + (s.median_hr_bpm == null ? "" : ` · median HR ${s.median_hr_bpm} bpm`);
  $("upload-result").hidden = false;
  drawOverview($("upload-overview"), r);
  const list = $("upload-beats");
  const rows = r.beats.slice(0, 2000).map((b, i) => {
    const li = document.createElement("li");
    li.className = "beat-row" + (b.anomalous ? " anomalous" : "") + (b.cls ? ` cls-${b.cls}` : "");
    beatRow(li, `${b.t_s.toFixed(2)} s`, b);
    li.addEventListener("click", () => selectUploadBeat(i, li));
    return li;
  });
  list.replaceChildren(...rows);
  const first = r.beats.findIndex((b) => b.anomalous);
  if (rows.length) selectUploadBeat(first >= 0 ? first : 0, rows[first >= 0 ? first : 0]);
}

function drawOverview(canvas, r) {
  canvas.width = Math.max(300, canvas.clientWidth || 1200);
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, y = r.signal.y;
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, W, H);
  let lo = Infinity, hi = -Infinity;
  for (const v of y) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const Y = (v) => 6 + (1 - (v - lo) / (hi - lo || 1)) * (H - 12);
  ctx.strokeStyle = "#39ff6a"; ctx.lineWidth = 1; ctx.beginPath();
  const per = y.length / W;
  for (let px = 0; px < W; px++) {
    let a = Infinity, b = -Infinity;
    for (let i = Math.floor(px * per); i < Math.min(y.length, Math.floor((px + 1) * per) + 1); i++) {
      if (y[i] < a) a = y[i]; if (y[i] > b) b = y[i];
    }
    if (a === Infinity) continue;
    ctx.moveTo(px + 0.5, Y(a)); ctx.lineTo(px + 0.5, Y(b) + 0.5);
  }
  ctx.stroke();
  const n = y.length * r.signal.factor;
  for (const b of r.beats) if (b.anomalous) {
    ctx.fillStyle = "#dc143c";
    ctx.fillRect((b.sample / n) * W - 1, 0, 3, 6);
  }
}

$("upload-overview").addEventListener("click", (ev) => {
  if (!uploadResult || !uploadResult.beats.length) return;
  const c = ev.currentTarget, r = uploadResult;
  const sample = ((ev.offsetX / c.clientWidth) * r.signal.y.length) * r.signal.factor;
  let best = 0;
  r.beats.forEach((b, i) => {
    if (Math.abs(b.sample - sample) < Math.abs(r.beats[best].sample - sample)) best = i;
  });
  const li = $("upload-beats").children[best];
  if (li) { selectUploadBeat(best, li); li.scrollIntoView({ block: "nearest" }); }
});

function selectUploadBeat(i, li) {
  const r = uploadResult, b = r.beats[i];
  for (const el of $("upload-beats").children) el.classList.toggle("selected", el === li);
  const f = r.signal.factor, fs = r.signal.fs;
  const peak = b.sample / f;
  const lo = Math.max(0, Math.floor(peak - 0.55 * fs)), hi = Math.min(r.signal.y.length, Math.ceil(peak + 0.7 * fs));
  const win = r.window || DEFAULT_WINDOW;
  ExplainView.draw($("upload-explain"), { fs, start: lo, y: r.signal.y.slice(lo, hi) }, peak, b.errors, win);
  const cls = className(b);
  $("upload-explain-title").textContent = `Beat at ${b.t_s.toFixed(2)} s`
    + (cls ? ` · ${cls.toUpperCase()}` : "") + ` · score ${b.score.toFixed(3)}`
    + ` (threshold ${Number(b.threshold).toFixed(3)})` + (b.anomalous ? " · ANOMALOUS" : "");
}

// ---------------------------------------------------------------- start
connect();
requestAnimationFrame(frame);
