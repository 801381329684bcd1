"""``GET /status`` (an HTML page) and ``GET /status.json``: sync state at a glance.

No token is needed, so the page carries no record data: only states and
counts per org and mapping (rows pending / failed, dead letters, conflicts
today), lag, the API allowance, and an hour of lag and throughput history.
No record id, field value or error message is on it. Org names and their
counts are visible to anyone who reaches the API port -- the same numbers
``/metrics`` already serves without a token -- and never any org's data,
tokens or images, which stay behind the org's own bearer token (invariant
8). ``?org=NAME`` narrows both routes to one org.

The page is static HTML plus a few lines of JavaScript that fetch
``status.json`` every 10 s and draw the table and an SVG chart. The report
is cached for ``CACHE_SECONDS`` so a wall of open pages costs the database
one report per few seconds, not one per viewer.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from forcelink.config import Config
from forcelink.errors import ForcelinkError
from forcelink.lag import HISTORY
from forcelink.status import collect

CACHE_SECONDS = 5.0

router = APIRouter(include_in_schema=False)
_cache: dict[str | None, tuple[float, dict[str, Any]]] = {}
_lock = threading.Lock()


def _report(config: Config, org: str | None) -> dict[str, Any]:
    with _lock:
        cached = _cache.get(org)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        history = HISTORY if org is None else None
        report = collect(config, org=org, history=history).to_json()
        _cache[org] = (time.monotonic(), report)
        return report


@router.get("/status.json")
def status_json(
    request: Request, org: Annotated[str | None, Query(max_length=100)] = None
) -> JSONResponse:
    config: Config = request.app.state.api.config
    if org is not None and org not in {o.name for o in config.orgs}:
        return JSONResponse({"error": "no such org"}, status_code=404)
    try:
        report = _report(config, org)
    except ForcelinkError as error:
        body = {"error": f"status unavailable: {type(error).__name__}"}
        return JSONResponse(body, status_code=503)
    history = HISTORY.series()
    if org is not None:
        history = [_only(point, org) for point in history]
    return JSONResponse(
        {"report": report, "history": history},
        headers={"Cache-Control": "no-store"},
    )


def _only(point: dict[str, Any], org: str) -> dict[str, Any]:
    def keep(values: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in values.items() if k.split("/", 1)[0] == org}

    return {"at": point["at"], "lag": keep(point["lag"]), "rate": keep(point["rate"])}


@router.get("/status", response_class=HTMLResponse)
def status_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>forcelink status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { padding: .25em .7em; border-bottom: 1px solid #ddd; text-align: left; }
td.n { text-align: right; }
.ok { color: #1a7f37; } .errors, .lagging { color: #9a6700; }
.failing, .stopped, .down { color: #cf222e; } .running { color: #1a7f37; }
svg { border: 1px solid #ddd; background: #fafafa; }
.legend span { margin-right: 1em; }
</style>
</head>
<body>
<h1>forcelink</h1>
<p id="service">loading...</p>
<div id="orgs"></div>
<h2>Last hour</h2>
<p class="legend" id="legend"></p>
<svg id="lag-chart" width="720" height="200" viewBox="0 0 720 200"
     role="img" aria-label="lag (solid, seconds) and throughput (dashed, events/s)">
</svg>
<script>
"use strict";
const COLOURS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#57606a"];
const query = new URLSearchParams(location.search).get("org");
const source = "status.json" + (query ? "?org=" + encodeURIComponent(query) : "");

function el(tag, attrs, text) {
  const svg = ["svg", "polyline", "line", "text"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
                   : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== "") node.setAttribute(k, v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function table(org) {
  const t = el("table");
  const cols = ["mapping", "direction", "state", "lag (s)", "last sync",
                "pending", "failed", "dead letters", "conflicts today"];
  const head = el("tr");
  cols.forEach(c => head.appendChild(el("th", {}, c)));
  t.appendChild(head);
  for (const m of org.mappings) {
    const row = el("tr");
    const cells = [m.object, m.direction, m.state,
                   m.lag_seconds === null ? "-" : m.lag_seconds,
                   m.last_sync || "-", m.pending, m.failed,
                   m.dead_letters, m.conflicts_today];
    cells.forEach((c, i) => row.appendChild(el("td",
      {class: i === 2 ? c : (typeof c === "number" ? "n" : "")}, String(c))));
    t.appendChild(row);
  }
  return t;
}

function orgs(report) {
  const box = document.getElementById("orgs");
  box.replaceChildren();
  for (const org of report.orgs) {
    const h = el("h2", {}, "org " + org.name + ": ");
    h.appendChild(el("span", {class: org.state}, org.state));
    box.appendChild(h);
    const api = org.api_limit === null ? "API allowance not seen yet"
      : "API " + org.api_used + "/" + org.api_limit + " used";
    box.appendChild(el("p", {}, api + (org.reasons.length ? " - " +
      org.reasons.join("; ") : "")));
    box.appendChild(table(org));
  }
}

function chart(history) {
  const svg = document.getElementById("lag-chart");
  svg.replaceChildren();
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  if (!history.length) return;
  const keys = [...new Set(history.flatMap(p => Object.keys(p.lag)))].sort();
  const t0 = history[0].at, t1 = Math.max(history[history.length - 1].at, t0 + 1);
  const top = Math.max(1, ...history.flatMap(p =>
    [...Object.values(p.lag), ...Object.values(p.rate)]));
  const x = t => 10 + 700 * (t - t0) / (t1 - t0);
  const y = v => 190 - 170 * v / top;
  svg.appendChild(el("text", {x: 12, y: 14, "font-size": 11}, top.toFixed(1)));
  keys.forEach((key, i) => {
    const colour = COLOURS[i % COLOURS.length];
    for (const kind of ["lag", "rate"]) {
      const pts = history.filter(p => key in p[kind])
        .map(p => x(p.at).toFixed(1) + "," + y(p[kind][key]).toFixed(1));
      svg.appendChild(el("polyline", {points: pts.join(" "), fill: "none",
        stroke: colour, "stroke-dasharray": kind === "rate" ? "4 3" : "",
        class: "series " + kind, "data-series": key + " " + kind,
        "data-count": String(pts.length)}));
    }
    legend.appendChild(el("span", {style: "color:" + colour}, key));
  });
}

async function refresh() {
  try {
    const answer = await fetch(source, {cache: "no-store"});
    const body = await answer.json();
    if (!answer.ok) throw new Error(body.error || answer.status);
    const r = body.report;
    const p = document.getElementById("service");
    p.replaceChildren("service ", el("span", {class: r.service}, r.service),
      " - " + r.generated_at +
      (r.failing_checks.length ? " - failing: " + r.failing_checks.join(", ") : ""));
    orgs(r);
    chart(body.history);
  } catch (error) {
    document.getElementById("service").textContent = "status unavailable: " + error;
  }
}
refresh();
setInterval(refresh, 10000);
</script>
</body>
</html>
"""
