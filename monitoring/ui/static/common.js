// Helpers shared by the pages. Data never becomes markup: every text from the server
// goes through textContent (el), and names handed to plotly through plotlyText.
"use strict";

window.ui = (function () {
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "href") node.setAttribute("href", safeHref(v));
      else node.setAttribute(k, String(v));
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function safeHref(v) {
    const s = String(v);
    return s.startsWith("/") && !s.startsWith("//") ? s : "#";
  }

  // plotly reads a few HTML-like tags in trace names and titles: show them as text.
  function plotlyText(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  async function api(path, options) {
    const resp = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const msg = body && body.error ? body.error : "HTTP " + resp.status;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  const SI = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  const BYTES = [[1 << 30, "GiB"], [1 << 20, "MiB"], [1 << 10, "KiB"]];

  function num(v, decimals) {
    if (decimals !== undefined && decimals !== null) return v.toFixed(decimals);
    const a = Math.abs(v);
    if (a !== 0 && (a < 0.01 || a >= 1e15)) return v.toExponential(2);
    return String(Math.round(v * 100) / 100);
  }

  function formatValue(v, unit, decimals) {
    if (v === null || v === undefined || Number.isNaN(v)) return "no value";
    switch (unit) {
      case "percent": return num(v, decimals) + "%";
      case "percentunit": return num(v * 100, decimals) + "%";
      case "seconds":
        if (Math.abs(v) < 1 && v !== 0) return num(v * 1000, decimals) + " ms";
        return num(v, decimals) + " s";
      case "ms": return num(v, decimals) + " ms";
      case "bytes":
        for (const [size, name] of BYTES) if (Math.abs(v) >= size) return num(v / size, decimals) + " " + name;
        return num(v, decimals) + " B";
      case "Bps":
        for (const [size, name] of BYTES) if (Math.abs(v) >= size) return num(v / size, decimals) + " " + name + "/s";
        return num(v, decimals) + " B/s";
      case "reqps": return short(v, decimals) + " req/s";
      case "ops": return short(v, decimals) + " ops/s";
      case "short": return short(v, decimals);
      default: return num(v, decimals);
    }
  }

  function short(v, decimals) {
    for (const [size, name] of SI) if (Math.abs(v) >= size) return num(v / size, decimals) + name;
    return num(v, decimals);
  }

  function axisFormat(unit) {
    switch (unit) {
      case "percent": return { ticksuffix: "%" };
      case "percentunit": return { tickformat: ".2~%" };
      case "seconds": return { ticksuffix: " s", tickformat: "~g" };
      case "ms": return { ticksuffix: " ms", tickformat: "~g" };
      case "bytes": return { tickformat: ".3~s", ticksuffix: "B" };
      case "Bps": return { tickformat: ".3~s", ticksuffix: "B/s" };
      case "reqps": return { tickformat: ",.3~r", ticksuffix: " req/s" };
      case "ops": return { tickformat: ",.3~r", ticksuffix: " ops/s" };
      case "short": return { tickformat: ",.3~r" };
      default: return { tickformat: "~g" };
    }
  }

  function formatTime(ms) {
    if (!ms) return "never";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function ago(ms, now) {
    if (!ms) return "never";
    const s = Math.max(0, Math.round(((now || Date.now()) - ms) / 1000));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function table(columns, rows, numeric) {
    const t = el("table");
    const head = el("tr");
    for (const c of columns) head.appendChild(el("th", {}, c));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    for (const r of rows) {
      const tr = el("tr");
      r.forEach((cell, i) => {
        const isNum = typeof cell === "number" || (numeric && numeric[i]);
        tr.appendChild(el("td", isNum ? { class: "num" } : {}, cell === null ? "" : cell));
      });
      body.appendChild(tr);
    }
    return t;
  }

  // A CSV cell. One that a spreadsheet would run as a formula (=, +, -, @, tab, CR or
  // LF first) gets a leading quote, unless it is a plain number: "-1+cmd|' /C calc'!A0"
  // starts with a minus and a digit and is still a formula.
  function csvCell(v) {
    let s = v === null || v === undefined ? "" : String(v);
    const number = /^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(s);
    if (/^[=+\-@\t\r\n]/.test(s) && !number) s = "'" + s;
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  return { el, api, plotlyText, formatValue, axisFormat, formatTime, ago, table, clear, csvCell };
})();
