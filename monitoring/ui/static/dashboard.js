// One dashboard: rows of panels drawn with plotly.js, a time range, template
// variables, a refresh timer and live updates (server-sent events when a window
// closes). Each panel keeps data-state (loading, ok, empty, error) and data-traces
// for people and tests to read.
"use strict";

(function () {
  const { el, api, plotlyText, formatValue, axisFormat, table, clear, csvCell } = window.ui;
  const name = decodeURIComponent(location.pathname.split("/").pop());
  const params = new URLSearchParams(location.search);
  const state = {
    dashboard: null,
    last: params.get("last") || null, // a relative range ("1h"), or
    from: params.has("from") ? Number(params.get("from")) : null, // an absolute one (ms)
    to: params.has("to") ? Number(params.get("to")) : null,
    vars: {},
    panels: [], // {panel, node, body, note, seq}
    timer: null,
    annotations: [], // [{name, color, t, text}]
    bands: [], // alerts: [{state, alertname, labels, from, to, resolved, acked_ms, acked_by}]
  };
  const ALL = "$__all";
  // plotly.js is the page's longest script to run (4.8 MB, fetched from the page's head
  // by a preload): it runs once the dashboard's requests are out (loadPlotly), so the
  // store works while it runs, and a panel waits for it only to draw.
  let plotlyLoaded = null;
  const plotlyReady = new Promise((resolve, reject) => { plotlyLoaded = { resolve, reject }; });
  function loadPlotly() {
    if (window.Plotly) { plotlyLoaded.resolve(); return; }
    if (document.getElementById("plotly")) return;
    const tag = el("script", { src: "/static/plotly.min.js", id: "plotly" });
    tag.addEventListener("load", () => plotlyLoaded.resolve());
    tag.addEventListener("error", () => plotlyLoaded.reject(new Error("plotly.js did not load")));
    document.head.appendChild(tag);
  }
  plotlyReady.catch(() => {}); // each panel reports it
  const PLOTLY_CONFIG = { displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"] };

  function parseDuration(s) {
    const m = /^(\d+)(ms|s|m|h|d|w)$/.exec(s || "");
    if (!m) return 3600000;
    const unit = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000, w: 604800000 }[m[2]];
    return Number(m[1]) * unit;
  }

  function range() {
    if (state.from !== null && state.to !== null && state.to > state.from) {
      return { start: Math.floor(state.from), end: Math.floor(state.to), relative: false };
    }
    const end = Date.now();
    return { start: end - parseDuration(state.last), end, relative: true };
  }

  function syncUrl() {
    const q = new URLSearchParams();
    if (state.from !== null && state.to !== null) {
      q.set("from", String(Math.floor(state.from)));
      q.set("to", String(Math.floor(state.to)));
    } else {
      q.set("last", state.last);
    }
    for (const [k, v] of Object.entries(state.vars)) q.set("var-" + k, v);
    history.replaceState(null, "", location.pathname + "?" + q.toString());
  }

  function status(text) { document.getElementById("status").textContent = text || ""; }

  // A variable whose value is known (the URL's, its default, or All) does not hold up
  // the panels: its values are filled in while they load. Only one with neither waits.
  async function loadVariables() {
    const box = document.getElementById("variables");
    clear(box);
    const r = range();
    const waits = [];
    for (const v of state.dashboard.variables) {
      if (v.text) {
        const label = el("label", {}, v.name + " ");
        const input = el("input", { type: "search", "data-var": v.name, maxlength: "256",
          placeholder: "search" });
        input.value = params.get("var-" + v.name) || v.default || "";
        label.appendChild(input);
        box.appendChild(label);
        state.vars[v.name] = input.value;
        input.addEventListener("change", () => {
          state.vars[v.name] = input.value;
          syncUrl();
          refreshAll();
        });
        continue;
      }
      const label = el("label", {}, v.name + " ");
      const select = el("select", { "data-var": v.name });
      label.appendChild(select);
      box.appendChild(label);
      const wanted = params.get("var-" + v.name) || v.default || (v.include_all ? ALL : null);
      if (wanted !== null) {
        select.appendChild(el("option", { value: wanted }, wanted === ALL ? "All" : wanted));
        state.vars[v.name] = wanted;
      }
      const filled = fillVariable(v, select, wanted, r);
      if (wanted === null) waits.push(filled);
      select.addEventListener("change", () => {
        state.vars[v.name] = select.value;
        syncUrl();
        refreshAll();
      });
    }
    await Promise.all(waits);
  }

  async function fillVariable(v, select, wanted, r) {
    let values = [];
    try {
      const res = await api(`/api/ui/dashboards/${encodeURIComponent(name)}/variables/` +
        `${encodeURIComponent(v.name)}?start=${r.start}&end=${r.end}`);
      values = res.values;
    } catch (e) {
      status(`variable ${v.name}: ${e.message}`);
    }
    const current = select.value;
    clear(select);
    if (v.include_all) select.appendChild(el("option", { value: ALL }, "All"));
    for (const value of values) select.appendChild(el("option", { value }, value));
    const keep = current || wanted;
    if (keep && ![...select.options].some((o) => o.value === keep)) {
      select.appendChild(el("option", { value: keep }, keep)); // the URL's, not seen lately
    }
    select.value = keep || (values.length ? values[0] : "");
    state.vars[v.name] = select.value;
    select.setAttribute("data-loaded", "true");
  }

  function build() {
    const d = state.dashboard;
    document.getElementById("title").textContent = d.title;
    document.title = d.title + " - monitoring";
    const rows = document.getElementById("rows");
    clear(rows);
    state.panels = [];
    for (const row of d.rows) {
      if (row.title) rows.appendChild(el("h2", { class: "row-title" }, row.title));
      const grid = rows.appendChild(el("div", { class: "row" }));
      for (const p of row.panels) {
        const node = el("section", { class: "panel", "data-panel": p.id, "data-type": p.type,
          "data-state": "loading", "data-traces": "0" });
        node.style.gridColumn = `span ${p.width}`;
        node.style.height = `${p.height}px`;
        const head = node.appendChild(el("div", { class: "panel-head" }));
        const h = el("h3", {}, p.title);
        if (p.description) h.title = p.description;
        head.appendChild(h);
        const csv = head.appendChild(el("button", { type: "button", class: "csv",
          title: "download this panel's data as CSV" }, "CSV"));
        const exports = {};
        for (const [fmt, label, what] of [["svg", "SVG", "as SVG"], ["pdf", "PDF", "as PDF"],
          ["parquet", "Parquet", "'s data as Parquet"]]) {
          exports[fmt] = head.appendChild(el("button", { type: "button", class: "export",
            "data-export": fmt, title: `download this panel${what}` }, label));
        }
        const body = node.appendChild(el("div", { class: "body" }));
        const note = node.appendChild(el("div", { class: "note" }));
        grid.appendChild(node);
        const entry = { panel: p, node, body, note, seq: 0, res: null };
        csv.addEventListener("click", () => downloadCsv(entry));
        for (const [fmt, button] of Object.entries(exports)) {
          button.addEventListener("click", () => download(
            `/api/ui/dashboards/${encodeURIComponent(name)}/panels/` +
            `${encodeURIComponent(p.id)}/export?${exportQuery(fmt, entry.body.clientWidth)}`));
        }
        state.panels.push(entry);
      }
    }
  }

  async function refreshPanel(entry, extras) {
    const r = range();
    const seq = ++entry.seq;
    const width = Math.max(10, Math.min(4000, Math.round(entry.body.clientWidth || 600)));
    const q = new URLSearchParams({ start: r.start, end: r.end, width });
    for (const [k, v] of Object.entries(state.vars)) q.set("var-" + k, v);
    entry.node.setAttribute("data-state", "loading");
    let res;
    try {
      res = await api(`/api/ui/dashboards/${encodeURIComponent(name)}/panels/` +
        `${encodeURIComponent(entry.panel.id)}?${q}`);
    } catch (e) {
      if (seq !== entry.seq) return;
      entry.note.textContent = e.message;
      entry.node.setAttribute("data-state", "error");
      return;
    }
    await extras; // annotations and alert bands, asked for at the same time as the panels
    try {
      await plotlyReady;
    } catch (e) {
      if (seq !== entry.seq) return;
      entry.note.textContent = e.message;
      entry.node.setAttribute("data-state", "error");
      return;
    }
    if (seq !== entry.seq) return; // a newer request for this panel went out
    onGrid(res);
    entry.res = res;
    entry.note.textContent = (res.warnings || []).join("; ");
    const drawn = draw(entry, res, r);
    entry.node.setAttribute("data-traces", String(drawn));
    entry.node.setAttribute("data-step", String(res.step_s));
    entry.node.setAttribute("data-state", drawn > 0 ? "ok" : "empty");
    if (drawn === 0 && !entry.note.textContent) entry.note.textContent = "no data";
  }

  // A range query's series comes as its grid (start, step) and the store's value
  // strings, null where it had no point: times and numbers here ("NaN", "+Inf": gaps).
  function onGrid(res) {
    for (const f of res.frames || []) {
      if (f.kind !== "series" || f.t !== undefined || typeof f.step !== "number") continue;
      const n = f.v.length;
      const t = new Array(n);
      const v = new Array(n);
      for (let i = 0; i < n; i++) {
        t[i] = f.start + i * f.step;
        const x = f.v[i] === null ? NaN : Number(f.v[i]);
        v[i] = Number.isFinite(x) ? x : null;
      }
      f.raw = f.v; // null: no point (the CSV leaves the row out), "NaN": an empty value
      f.t = t;
      f.v = v;
    }
  }

  function lastValue(f) {
    if (f.kind === "value") return f.value;
    if (f.kind === "series") {
      for (let i = f.v.length - 1; i >= 0; i--) if (f.v[i] !== null) return f.v[i];
    }
    return null;
  }

  function layout(p, r, extra) {
    const base = {
      margin: { l: 60, r: 10, t: 6, b: 30 }, paper_bgcolor: "#181b1f",
      plot_bgcolor: "#181b1f", font: { color: "#d8d9da", size: 11 },
      showlegend: true, legend: { orientation: "h", y: -0.18, font: { size: 10 } },
      hovermode: "x unified",
      xaxis: { type: "date", range: [new Date(r.start), new Date(r.end)], gridcolor: "#2c3036" },
      yaxis: Object.assign({ gridcolor: "#2c3036", rangemode: "tozero", automargin: true },
        axisFormat(p.unit)),
    };
    if (p.min !== null && p.max !== null) base.yaxis.range = [p.min, p.max];
    return Object.assign(base, extra || {});
  }

  function plot(entry, traces, lay) {
    clear(entry.body);
    const div = entry.body.appendChild(el("div", { class: "plot" }));
    div.style.height = "100%";
    const config = Object.assign({}, PLOTLY_CONFIG, {
      toImageButtonOptions: { format: "png", filename: `${name}-${entry.panel.id}`, scale: 2 } });
    window.Plotly.newPlot(div, traces, lay, config);
    div.on("plotly_relayout", (ev) => zoomed(ev));
    entry.plot = div;
    if (lay.xaxis && lay.xaxis.type === "date") {
      div.on("plotly_hover", (ev) => crosshairFrom(entry, ev));
      div.on("plotly_unhover", () => crosshairFrom(entry, null));
    }
    return traces.length;
  }

  // Shared crosshair: hovering one time axis shows the same time on every other time
  // axis panel in view, by plotly's own hover called without a mouse event (so it
  // emits no hover event and nothing echoes back). At most one sync per frame.
  const crosshair = { source: null, x: null, frame: 0 };
  function crosshairFrom(entry, ev) {
    if (ev && (!ev.event || !ev.event.target)) return; // our own call, not the mouse
    const xa = ev && ev.xaxes && ev.xaxes[0];
    const x = xa && ev.xvals && ev.xvals.length ? xa.d2c(ev.xvals[0]) : null;
    crosshair.source = entry;
    crosshair.x = Number.isFinite(x) ? x : null;
    if (!crosshair.frame) crosshair.frame = requestAnimationFrame(crosshairSync);
  }

  function crosshairSync() {
    crosshair.frame = 0;
    const { source, x } = crosshair;
    const tall = window.innerHeight || document.documentElement.clientHeight;
    for (const e of state.panels) {
      const div = e.plot;
      if (e === source || !div || !div.isConnected || !div._fullLayout) continue;
      const xa = div._fullLayout.xaxis;
      if (!xa || xa.type !== "date") continue;
      const box = div.getBoundingClientRect();
      const [lo, hi] = xa.range.map((v) => xa.r2c(v));
      if (x === null || box.bottom < 0 || box.top > tall || x < lo || x > hi) {
        if (div._hoverdata) window.Plotly.Fx.unhover(div);
        continue;
      }
      window.Plotly.Fx.hover(div, { xval: x, xpx: xa.c2p(x) });
    }
  }

  function draw(entry, res, r) {
    const p = entry.panel;
    const frames = res.frames || [];
    const series = frames.filter((f) => f.kind === "series");
    const values = frames.filter((f) => f.kind === "value");
    const tables = frames.filter((f) => f.kind === "table");
    switch (p.type) {
      case "timeseries":
      case "scatter": {
        if (!series.length) return drawTable(entry, frames);
        const traces = series.map((f) => ({
          type: "scatter", mode: p.type === "scatter" ? "markers" : "lines",
          name: plotlyText(f.name), x: f.t, y: f.v, connectgaps: false,
          line: { width: 1.5 }, marker: { size: 4 },
          stackgroup: p.stack ? "one" : undefined,
        }));
        const lay = layout(p, r);
        const drawn = traces.length;
        if (p.type === "timeseries") {
          annotate(traces, lay);
          entry.node.setAttribute("data-bands", String(band(traces, lay, series)));
        }
        plot(entry, traces, lay);
        return drawn;
      }
      case "bar": {
        if (values.length) {
          const traces = [{ type: "bar", x: values.map((f) => plotlyText(f.name)),
            y: values.map((f) => f.value), marker: { color: "#5794f2" } }];
          return plot(entry, traces, layout(p, r, { xaxis: { type: "category", automargin: true },
            showlegend: false, hovermode: "closest" })) && values.length;
        }
        if (tables.length && tables[0].rows.length) {
          const t = tables[0];
          const traces = [{ type: "bar", x: t.rows.map((row) => plotlyText(row[0])),
            y: t.rows.map((row) => row[1]), marker: { color: "#5794f2" } }];
          return plot(entry, traces, layout(p, r, { xaxis: { type: "category", automargin: true },
            showlegend: false, hovermode: "closest" })) && t.rows.length;
        }
        if (!series.length) return 0;
        const traces = series.map((f) => ({ type: "bar", name: plotlyText(f.name), x: f.t, y: f.v }));
        return plot(entry, traces, layout(p, r, { barmode: p.stack ? "stack" : "group" }));
      }
      case "heatmap": {
        const h = frames.find((f) => f.kind === "heatmap");
        if (!h) return 0;
        const trace = { type: "heatmap", x: h.x, y: h.y.map(plotlyText), z: h.z,
          colorscale: "Viridis", showscale: false, hoverongaps: false };
        const lay = layout(p, r, { yaxis: { type: "category", title: { text: "le" },
          gridcolor: "#2c3036", automargin: true } });
        return plot(entry, [trace], lay);
      }
      case "stat": {
        const items = series.concat(values);
        if (!items.length) {
          const t = tables[0];
          if (!t || !t.rows.length) return 0;
          return drawStats(entry, t.columns.map((c, i) => [c, t.rows[0][i]]), p);
        }
        return drawStats(entry, items.map((f) => [f.name, lastValue(f)]), p);
      }
      case "gauge": {
        const items = series.concat(values).slice(0, 6);
        let pairs = items.map((f) => [f.name, lastValue(f)]);
        if (!pairs.length && tables.length && tables[0].rows.length) pairs = [[tables[0].columns[0], tables[0].rows[0][0]]];
        if (!pairs.length) return 0;
        const top = p.max !== null ? p.max : (p.unit === "percent" ? 100 : p.unit === "percentunit" ? 1 :
          Math.max(...pairs.map(([, v]) => Math.abs(v || 0))) * 1.5 || 1);
        const traces = pairs.map(([n, v], i) => ({
          type: "indicator", mode: "gauge+number", value: v === null ? undefined : v,
          title: { text: plotlyText(n), font: { size: 11 } },
          number: { valueformat: ".3~s", suffix: axisFormat(p.unit).ticksuffix || "" },
          gauge: { axis: { range: [p.min !== null ? p.min : 0, top] }, bar: { color: "#73bf69" } },
          domain: { row: 0, column: i },
        }));
        return plot(entry, traces, { margin: { l: 20, r: 20, t: 30, b: 10 },
          paper_bgcolor: "#181b1f", font: { color: "#d8d9da" },
          grid: { rows: 1, columns: traces.length, pattern: "independent" } });
      }
      case "logs":
        return drawLogs(entry, tables[0]);
      default:
        return drawTable(entry, frames);
    }
  }

  // A log list: one line per row, newest first; the columns named time/timestamp,
  // level, service and message are laid out, any other column follows as key=value.
  function drawLogs(entry, t) {
    clear(entry.body);
    if (!t || !t.rows.length) return 0;
    const col = (names) => t.columns.findIndex((c) => names.includes(c));
    const iTime = col(["timestamp", "time", "ts"]);
    const iLevel = col(["level"]);
    const iMsg = col(["message", "msg", "line"]);
    const list = entry.body.appendChild(el("div", { class: "logs" }));
    for (const row of t.rows) {
      const line = list.appendChild(el("div", { class: "log-line" }));
      if (iTime >= 0) line.appendChild(el("span", { class: "log-time" }, row[iTime]));
      if (iLevel >= 0) {
        const level = String(row[iLevel]);
        line.appendChild(el("span", { class: "log-level log-" + level.toLowerCase().replace(/[^a-z]/g, "") }, level));
      }
      row.forEach((cell, i) => {
        if (i === iTime || i === iLevel || i === iMsg) return;
        line.appendChild(el("span", { class: "log-field" }, t.columns[i] + "=" + cell));
      });
      if (iMsg >= 0) line.appendChild(el("span", { class: "log-msg" }, row[iMsg]));
    }
    return t.rows.length;
  }

  function drawStats(entry, pairs, p) {
    clear(entry.body);
    const box = entry.body.appendChild(el("div", { class: "stat-list" }));
    for (const [n, v] of pairs.slice(0, 12)) {
      const item = box.appendChild(el("div", { class: "stat-item" }));
      item.appendChild(el("div", { class: "v" }, formatValue(v, p.unit, p.decimals)));
      if (pairs.length > 1) item.appendChild(el("div", { class: "n" }, n));
    }
    return pairs.length;
  }

  function drawTable(entry, frames) {
    clear(entry.body);
    const p = entry.panel;
    const t = frames.find((f) => f.kind === "table");
    if (t) {
      if (!t.rows.length) return 0;
      const numeric = t.types.map((ty) => /^(Nullable\()?(U?Int|Float|Decimal)/.test(ty));
      entry.body.appendChild(table(t.columns, t.rows, numeric));
      return t.rows.length;
    }
    const items = frames.filter((f) => f.kind === "series" || f.kind === "value");
    if (!items.length) return 0;
    const labels = [...new Set(items.flatMap((f) => Object.keys(f.labels || {})))]
      .filter((k) => k !== "__name__").slice(0, 8);
    const rows = items.map((f) => labels.map((k) => (f.labels || {})[k] || "")
      .concat([formatValue(lastValue(f), p.unit, p.decimals)]));
    const columns = labels.length ? labels.concat(["value"]) : ["series", "value"];
    entry.body.appendChild(table(columns, labels.length ? rows : items.map((f) =>
      [f.name, formatValue(lastValue(f), p.unit, p.decimals)])));
    return items.length;
  }

  // A panel's data as CSV (long form: one value per line); cells by ui.csvCell.
  function csvLines(res) {
    const lines = [];
    const iso = (t) => new Date(t).toISOString();
    for (const f of res.frames || []) {
      if (f.kind === "series") {
        if (!lines.length) lines.push(["series", "time", "value"]);
        f.t.forEach((t, i) => {
          if (!f.raw || f.raw[i] !== null) lines.push([f.name, iso(t), f.v[i]]);
        });
      } else if (f.kind === "value") {
        if (!lines.length) lines.push(["series", "value"]);
        lines.push([f.name, f.value]);
      } else if (f.kind === "table") {
        lines.push(f.columns);
        for (const r of f.rows) lines.push(r);
      } else if (f.kind === "heatmap") {
        lines.push(["time", "le", "value"]);
        f.y.forEach((le, j) => f.x.forEach((t, i) => lines.push([iso(t), le, f.z[j][i]])));
      }
    }
    return lines.map((l) => l.map(csvCell).join(",")).join("\r\n") + "\r\n";
  }

  function downloadCsv(entry) {
    if (!entry.res) return;
    const blob = new Blob([csvLines(entry.res)], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${name}-${entry.panel.id}.csv`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  // Exports are drawn on the server (matplotlib) for the range and variables shown.
  function exportQuery(fmt, width) {
    const r = range();
    const w = Math.max(400, Math.min(4000, Math.round(width || 900)));
    const q = new URLSearchParams({ format: fmt, start: r.start, end: r.end, width: w });
    for (const [k, v] of Object.entries(state.vars)) q.set("var-" + k, v);
    return q.toString();
  }

  function download(href) {
    const a = document.createElement("a");
    a.href = href; // same-site path; the answer names the file (Content-Disposition)
    a.download = "";
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  let zoomGuard = false;
  function zoomed(ev) {
    if (zoomGuard || !ev) return;
    const a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
    if (a === undefined || b === undefined) return;
    const from = Date.parse(String(a).replace(" ", "T") + "Z");
    const to = Date.parse(String(b).replace(" ", "T") + "Z");
    if (!(to > from)) return;
    state.from = from; state.to = to;
    document.getElementById("range").value = "";
    syncUrl();
    refreshAll();
  }

  async function loadAnnotations() {
    if (!state.dashboard.annotations || !state.dashboard.annotations.length) return;
    const r = range();
    const q = new URLSearchParams({ start: r.start, end: r.end });
    for (const [k, v] of Object.entries(state.vars)) q.set("var-" + k, v);
    try {
      const res = await api(`/api/ui/dashboards/${encodeURIComponent(name)}/annotations?${q}`);
      state.annotations = res.annotations;
    } catch (e) {
      state.annotations = [];
      status("annotations: " + e.message);
    }
  }

  // Annotations on a time series: a dotted line per event and, on a hidden axis, a
  // marker at the top whose hover text is the event's text (escaped for plotly).
  function annotate(traces, lay) {
    const shapes = [];
    for (const a of state.annotations) {
      if (!a.t.length) continue;
      for (const t of a.t) {
        shapes.push({ type: "line", x0: t, x1: t, yref: "paper", y0: 0, y1: 1,
          line: { color: a.color, width: 1, dash: "dot" } });
      }
      traces.push({ type: "scatter", mode: "markers", name: plotlyText(a.name), x: a.t,
        y: a.t.map(() => 1), yaxis: "y2", hovertext: a.text.map(plotlyText),
        hoverinfo: "text+x", marker: { color: a.color, size: 7, symbol: "triangle-down" } });
    }
    if (shapes.length) {
      lay.shapes = shapes;
      lay.yaxis2 = { overlaying: "y", range: [0, 1.05], visible: false, fixedrange: true };
    }
  }

  async function loadBands() {
    if (!state.panels.some((e) => e.panel.type === "timeseries")) return;
    const r = range();
    try {
      const res = await api(`/api/ui/alert-bands?start=${r.start}&end=${r.end}`);
      state.bands = res.bands || [];
    } catch (e) {
      state.bands = []; // a store without the alert tables: no bands, the panels still draw
    }
  }

  // An alert matches a series when they share a label (other than alertname, severity
  // and __name__) and agree on every label they share: HighCPU{host="a"} is drawn on
  // the series of host "a" in a panel split by host, not on one split by service.
  const BAND_SKIP = new Set(["alertname", "severity", "__name__"]);
  function bandMatches(b, series) {
    return series.some((f) => {
      const labels = f.labels || {};
      let shared = 0;
      for (const [k, v] of Object.entries(b.labels || {})) {
        if (BAND_SKIP.has(k) || !Object.prototype.hasOwnProperty.call(labels, k)) continue;
        if (labels[k] !== v) return false;
        shared++;
      }
      return shared > 0;
    });
  }

  // Alerts as bands behind the lines (at most 100 a panel): firing red, pending (the
  // evaluator's ALERTS{alertstate="pending"}) a lighter amber; each with a marker at its
  // start whose hover says which alert, and for a firing one who acknowledged it.
  const BAND_STYLE = {
    firing: { fill: "rgba(242, 73, 92, 0.15)", marker: "#f2495c", name: "alerts" },
    pending: { fill: "rgba(255, 152, 48, 0.10)", marker: "#ff9830", name: "pending alerts" },
  };
  function bandText(b) {
    if (b.state === "pending") return `${b.alertname} pending` + (b.resolved ? "" : " (still pending)");
    return `${b.alertname} firing` + (b.resolved ? "" : " (not resolved)") +
      (b.acked_ms ? `, acknowledged by ${b.acked_by}` : ", not acknowledged");
  }
  function band(traces, lay, series) {
    const hits = state.bands.filter((b) => b.to > b.from && bandMatches(b, series)).slice(0, 100);
    if (!hits.length) return 0;
    const style = (b) => BAND_STYLE[b.state === "pending" ? "pending" : "firing"];
    lay.shapes = (lay.shapes || []).concat(hits.map((b) => ({
      type: "rect", xref: "x", yref: "paper", x0: b.from, x1: b.to, y0: 0, y1: 1,
      fillcolor: style(b).fill, line: { width: 0 }, layer: "below" })));
    for (const kind of ["firing", "pending"]) {
      const some = hits.filter((b) => style(b) === BAND_STYLE[kind]);
      if (!some.length) continue;
      traces.push({ type: "scatter", mode: "markers", name: BAND_STYLE[kind].name,
        x: some.map((b) => b.from), y: some.map(() => 1), yaxis: "y2",
        hovertext: some.map((b) => plotlyText(bandText(b))), hoverinfo: "text+x",
        showlegend: false, marker: { color: BAND_STYLE[kind].marker, size: 7, symbol: "triangle-right" } });
    }
    lay.yaxis2 = { overlaying: "y", range: [0, 1.05], visible: false, fixedrange: true };
    return hits.length;
  }

  async function refreshAll() {
    status("");
    zoomGuard = true;
    try {
      const extras = Promise.all([loadAnnotations(), loadBands()]);
      await Promise.all(state.panels.map((entry) => refreshPanel(entry, extras)));
    } finally {
      zoomGuard = false;
    }
  }

  function setTimer(seconds) {
    if (state.timer) clearInterval(state.timer);
    state.timer = seconds > 0 ? setInterval(() => { if (range().relative) refreshAll(); }, seconds * 1000) : null;
  }

  function live() {
    if (!window.EventSource) return;
    const source = new EventSource("/api/ui/events");
    let lastEnd = null;
    let pending = null;
    source.addEventListener("window", (ev) => {
      let end = null;
      try { end = JSON.parse(ev.data).end_ms; } catch (e) { return; }
      document.body.setAttribute("data-live-end", String(end));
      if (lastEnd === null) { lastEnd = end; return; } // the first event is the current state
      if (end === lastEnd || !document.getElementById("live").checked || !range().relative) return;
      lastEnd = end;
      if (pending) return;
      pending = setTimeout(() => { pending = null; refreshAll(); }, 250);
    });
  }

  async function main() {
    let res;
    try {
      res = await api(`/api/ui/dashboards/${encodeURIComponent(name)}`);
    } catch (e) {
      status("cannot load the dashboard: " + e.message);
      return;
    }
    state.dashboard = res.dashboard;
    if (!state.last) state.last = state.dashboard.time.last;
    const rangeSel = document.getElementById("range");
    if (state.from === null && ![...rangeSel.options].some((o) => o.value === state.last)) {
      rangeSel.appendChild(el("option", { value: state.last }, "last " + state.last));
    }
    rangeSel.value = state.from === null ? state.last : "";
    rangeSel.addEventListener("change", () => {
      if (!rangeSel.value) return;
      state.last = rangeSel.value; state.from = null; state.to = null;
      syncUrl();
      refreshAll();
    });
    const refreshSel = document.getElementById("refresh");
    const refreshS = String(state.dashboard.refresh ?
      Math.round(parseDuration(state.dashboard.refresh) / 1000) : Math.round(res.refresh_default));
    if (![...refreshSel.options].some((o) => o.value === refreshS)) {
      refreshSel.appendChild(el("option", { value: refreshS }, refreshS + "s"));
    }
    refreshSel.value = refreshS;
    refreshSel.addEventListener("change", () => setTimer(Number(refreshSel.value)));
    document.getElementById("reload").addEventListener("click", () => refreshAll());
    document.getElementById("grafana").setAttribute("href",
      `/api/ui/dashboards/${encodeURIComponent(name)}/grafana`);
    for (const fmt of ["pdf", "svg"]) {
      document.getElementById("export-" + fmt).addEventListener("click", () => download(
        `/api/ui/dashboards/${encodeURIComponent(name)}/export?` +
        exportQuery(fmt, document.getElementById("rows").clientWidth)));
    }
    build();
    await loadVariables();
    syncUrl();
    const first = refreshAll(); // its requests are out once it returns
    loadPlotly();
    await first;
    setTimer(Number(refreshSel.value));
    live();
  }

  main();
})();
