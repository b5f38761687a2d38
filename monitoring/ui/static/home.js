// The home page: dashboards, firing alerts (the notifier's delivery log in the store)
// and the pipeline's health (the store's /healthz and how fresh its data is).
"use strict";

(function () {
  const { el, api, table, clear, ago, formatTime } = window.ui;

  async function load() {
    let home;
    try {
      home = await api("/api/ui/home");
    } catch (e) {
      const h = document.getElementById("health");
      clear(h);
      h.appendChild(el("p", { class: "bad" }, "cannot load: " + e.message));
      return;
    }
    const list = document.getElementById("dashboards");
    clear(list);
    for (const d of home.dashboards) {
      const li = el("li");
      li.appendChild(el("a", { href: "/d/" + encodeURIComponent(d.name) }, d.title));
      for (const t of d.tags || []) li.appendChild(el("span", { class: "tag" }, t));
      if (d.user) li.appendChild(el("span", { class: "tag" }, "saved"));
      if (d.error) li.appendChild(el("div", { class: "bad" }, d.error));
      list.appendChild(li);
    }

    const alerts = document.getElementById("alerts");
    clear(alerts);
    if (home.alerts.error) {
      alerts.appendChild(el("p", { class: "bad" }, home.alerts.error));
    } else if (!home.alerts.rows.length) {
      alerts.appendChild(el("p", { class: "ok" }, "nothing firing"));
    } else {
      const rows = home.alerts.rows.map((r) => [r[0], r[1], formatTime(r[2]), r[3]]);
      alerts.appendChild(table(["group", "receiver", "since", "alerts"], rows));
    }

    const health = document.getElementById("health");
    clear(health);
    const store = home.health.store || {};
    const f = home.health.freshness || {};
    const now = home.health.now_ms;
    const windowAge = f.last_window_ms ? now - f.last_window_ms : null;
    const rows = [
      ["store", store.status || "unknown"],
      ["newest closed window", f.last_window_ms ? ago(f.last_window_ms, now) : "none in 24 h"],
      ["newest sample", f.last_sample_ms ? ago(f.last_sample_ms, now) : "none in 24 h"],
      ["samples in the last 5 min", f.samples_5m === undefined ? "?" : f.samples_5m],
      ["series", f.series === undefined ? "?" : f.series],
    ];
    const t = table(["", ""], rows);
    const cls = store.status === "ok" && windowAge !== null && windowAge < 120000 ? "ok" : "warn";
    t.rows[1].cells[1].className = store.status === "ok" ? "ok" : "bad";
    t.rows[2].cells[1].className = cls;
    health.appendChild(t);
    if (home.health.error) health.appendChild(el("p", { class: "bad" }, home.health.error));
    document.getElementById("clock").textContent = "updated " + formatTime(now);
  }

  load();
  setInterval(load, 30000);
})();
