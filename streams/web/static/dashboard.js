// kes dashboard: polls /lag and draws one card per consumer group. No libraries, no CDN.
"use strict";

const POLL_MS = 2000;
const HISTORY_SECONDS = 300;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function num(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US");
}

function rate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(1);
}

function eta(seconds, lag) {
  if (lag === 0) return "caught up";
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.ceil(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function shortWorker(owner) {
  if (!owner) return "unassigned";
  if (owner.worker) return owner.worker.replace(/^https?:\/\//, "");
  return owner.client_id ? `${owner.client_id} ${owner.host}` : owner.consumer_id;
}

function figure(cls, label, value) {
  return el("div", { class: `figure ${cls}` },
    el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

function chart(history) {
  const width = 600, height = 180, pad = { l: 46, r: 46, t: 10, b: 22 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
    role: "img", "aria-label": "lag and throughput over the last minutes" });
  const now = history.length ? history[history.length - 1].at : Date.now() / 1000;
  const x0 = now - HISTORY_SECONDS;
  const maxLag = Math.max(1, ...history.map((p) => p.lag || 0));
  const maxRate = Math.max(1, ...history.map((p) => Math.max(p.consume_rate || 0, p.produce_rate || 0)));
  const X = (t) => pad.l + ((t - x0) / HISTORY_SECONDS) * (width - pad.l - pad.r);
  const Y = (v, max) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (i / 4) * (height - pad.t - pad.b);
    root.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y, stroke: "#eceff3" }));
  }
  const label = (x, y, text, anchor, color) => {
    const t = svg("text", { x, y, "text-anchor": anchor, "font-size": 11, fill: color });
    t.textContent = text;
    root.append(t);
  };
  label(pad.l - 6, pad.t + 9, num(maxLag), "end", "#d9622b");
  label(pad.l - 6, height - pad.b, "0", "end", "#6b7385");
  label(width - pad.r + 6, pad.t + 9, `${rate(maxRate)}/s`, "start", "#2b7bd9");
  label(pad.l, height - 6, "−5 min", "start", "#6b7385");
  label(width - pad.r, height - 6, "now", "end", "#6b7385");
  const line = (points, color, dash, fill) => {
    if (points.length === 0) return;
    const d = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
    if (fill) {
      const base = height - pad.b;
      const area = `${d}L${points[points.length - 1][0].toFixed(1)},${base}L${points[0][0].toFixed(1)},${base}Z`;
      root.append(svg("path", { d: area, fill, stroke: "none" }));
    }
    const path = svg("path", { d, fill: "none", stroke: color, "stroke-width": 2 });
    if (dash) path.setAttribute("stroke-dasharray", dash);
    root.append(path);
  };
  const shown = history.filter((p) => p.at >= x0);
  line(shown.filter((p) => p.lag !== null).map((p) => [X(p.at), Y(p.lag, maxLag)]), "#d9622b", null, "rgba(217,98,43,0.10)");
  line(shown.filter((p) => p.consume_rate !== null).map((p) => [X(p.at), Y(p.consume_rate, maxRate)]), "#2b7bd9");
  line(shown.filter((p) => p.produce_rate !== null).map((p) => [X(p.at), Y(p.produce_rate, maxRate)]), "#8fb7e8", "4 3");
  return el("div", { class: "chart" }, root,
    el("div", { class: "legend" },
      el("span", {}, el("i", { style: "background:#d9622b" }), "lag (left axis)"),
      el("span", {}, el("i", { style: "background:#2b7bd9" }), "consumed/s"),
      el("span", {}, el("i", { style: "background:#8fb7e8" }), "produced/s (right axis)")));
}

function table(group) {
  const maxLag = Math.max(1, ...group.partitions.map((p) => p.lag || 0));
  const head = el("tr", {}, ...["partition", "committed", "log end", "lag", "consumed/s"]
    .map((h) => el("th", {}, h)), el("th", { class: "owner" }, "owner"));
  const rows = group.partitions.map((p) => {
    const width = p.lag ? Math.max(2, (p.lag / maxLag) * 100) : 0;
    return el("tr", { "data-partition": p.partition, "data-lag": p.lag === null ? "" : p.lag,
      "data-committed": p.committed === null ? "" : p.committed, "data-log-end": p.log_end },
      el("td", {}, p.partition),
      el("td", { class: p.committed === null ? "none" : "" }, num(p.committed)),
      el("td", {}, num(p.log_end)),
      el("td", { class: p.lag === null ? "lag none" : "lag" },
        el("div", { class: "bar", style: `width:${width}%` }), el("span", {}, num(p.lag))),
      el("td", {}, rate(p.consume_rate)),
      el("td", { class: "owner" }, shortWorker(p.owner)));
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

function card(group) {
  const dlq = group.dead_letters;
  return el("section", { class: "group", "data-group": group.group, "data-topic": group.topic,
      "data-lag": group.lag },
    el("div", { class: "group-head" },
      el("h2", {}, group.group),
      el("span", { class: `badge ${group.kind}` }, group.kind),
      el("span", { class: "topic" }, group.topic),
      group.state ? el("span", { class: "badge" }, group.state.toLowerCase()) : null),
    el("div", { class: "figures" },
      figure(group.lag === 0 ? "lag zero" : "lag", "lag (offsets)", num(group.lag)),
      figure("rate", "consumed / s", rate(group.consume_rate)),
      figure("rate", "produced / s", rate(group.produce_rate)),
      figure("eta", "time to catch up", eta(group.eta_seconds, group.lag)),
      group.dead_letter_topic ? figure(dlq ? "dlq some" : "dlq", "dead letters", num(dlq)) : null),
    group.error ? el("div", { class: "group-error" }, group.error) : null,
    el("div", { class: "body" }, chart(group.history || []), table(group)));
}

function render(body) {
  document.getElementById("app").textContent = body.app_id;
  document.getElementById("worker").textContent = body.worker.replace(/^https?:\/\//, "");
  document.getElementById("updated").textContent = new Date(body.at * 1000).toLocaleTimeString();
  const error = document.getElementById("error");
  error.hidden = !body.error;
  error.textContent = body.error || "";
  document.getElementById("groups").replaceChildren(...body.groups.map(card));
  const status = document.getElementById("status");
  status.className = "status live";
  status.textContent = "live";
}

async function poll() {
  try {
    const response = await fetch(`/lag?history=${HISTORY_SECONDS}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    document.body.dataset.loaded = "true";
  } catch (err) {
    const status = document.getElementById("status");
    status.className = "status down";
    status.textContent = `no answer (${err.message})`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
