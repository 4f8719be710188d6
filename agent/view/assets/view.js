// The agent's local page: fetches /view/api/<section>?range=<r> and draws tables and uPlot charts.
"use strict";
(function () {
  const ranges = ["15m", "1h", "6h", "24h", "7d"];
  let range = (location.hash.match(/range=(\w+)/) || [])[1];
  if (!ranges.includes(range)) range = "1h";
  const charts = {};

  const $ = (sel, root) => (root || document).querySelector(sel);
  const int = (n) => Math.round(n).toLocaleString("en-US");
  const ms = (n) => (n || 0).toFixed(n >= 100 ? 0 : 2);
  const human = (b) => {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : b) + " " + u[i];
  };
  const when = (sec) => new Date(sec * 1000).toLocaleString();
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) e.append(k);
    return e;
  }
  function td(text, cls, title) {
    const a = {};
    if (cls) a.class = cls;
    if (title) a.title = title;
    return el("td", a, text == null ? "" : String(text));
  }
  function fill(table, rows, cols, empty) {
    const tb = $("tbody", table);
    tb.replaceChildren();
    if (!rows || rows.length === 0) {
      tb.append(el("tr", { class: "empty" }, el("td", { colspan: String(cols) }, empty || "nothing in this range")));
    }
    for (const r of rows || []) tb.append(r);
  }
  function meta(sec, a) {
    $(".meta", sec).textContent = `${a.scanned.toLocaleString("en-US")} points read in ${a.elapsed_ms} ms`;
    $(".note", sec).textContent = a.truncated
      ? `The range holds more than ${a.max_scan.toLocaleString("en-US")} points, the most one answer reads: shown from about ${when(a.covered_since)} on.`
      : "";
  }
  function chart(sec, c, stepSeconds, yfmt, coveredSince) {
    const box = $(".chart", sec);
    // Buckets before what a cut answer covers are unknown, not zero.
    const data = [c.t, ...c.series.map((s) => s.values.map((v, i) => (coveredSince && c.t[i] + stepSeconds <= coveredSince ? null : v)))];
    const colors = ["#3b82f6", "#f59e0b", "#ef4444", "#b91c1c", "#6b7280"];
    const width = Math.max(300, box.clientWidth || 800);
    if (charts[sec.id]) charts[sec.id].destroy();
    charts[sec.id] = new uPlot({
      width, height: 170,
      scales: { x: { time: true } },
      axes: [{}, { values: (u, vals) => vals.map(yfmt), size: 70 }],
      series: [{}, ...c.series.map((s, i) => ({
        label: s.name + " / " + stepSeconds + " s", stroke: colors[i % colors.length],
        fill: colors[i % colors.length] + "22", width: 1.5, value: (u, v) => (v == null ? "" : yfmt(v)),
      }))],
    }, data, box);
  }
  async function get(name) {
    const r = await fetch(`api/${name}?range=${range}`, { credentials: "same-origin" });
    if (!r.ok) throw new Error(`${name}: ${r.status} ${await r.text()}`);
    return r.json();
  }
  function flowRows(rows) {
    return (rows || []).map((r) => el("tr", { "data-key": r.key },
      td(r.key, "k"), td(int(r.bytes), "n bytes", human(r.bytes)),
      td(int(r.bytes_read), "n", human(r.bytes_read)), td(int(r.bytes_written), "n", human(r.bytes_written))));
  }

  const sections = {
    async netflow(sec) {
      const a = await get("netflow");
      meta(sec, a);
      $(".meta", sec).textContent += ` · ${int(a.total_bytes)} bytes (${human(a.total_bytes)})`;
      chart(sec, a.chart, a.step_seconds, human, a.truncated && a.covered_since);
      fill($("#netflow-process"), flowRows(a.by_process), 4);
      fill($("#netflow-remote"), flowRows(a.by_remote), 4);
      fill($("#netflow-domain"), flowRows(a.by_domain), 4, "no flow has a dst_domain tag in this range");
    },
    async httpflow(sec) {
      const a = await get("httpflow");
      meta(sec, a);
      $(".meta", sec).textContent += ` · ${int(a.requests)} requests`;
      chart(sec, a.chart, a.step_seconds, int, a.truncated && a.covered_since);
      fill($("#http-endpoints"), (a.endpoints || []).map((r) => el("tr", { "data-key": `${r.direction} ${r.host}${r.path}` },
        td(r.direction), td(r.host, "k"), td(r.path, "k"), td(int(r.count), "n count"),
        ...r.status.map((n, i) => td(int(n), "n s" + ["2xx", "3xx", "4xx", "5xx", "other"][i] + (i >= 2 && n > 0 ? " bad" : ""))),
        td(ms(r.latency_mean_ms), "n"), td(ms(r.latency_max_ms), "n"))), 11);
    },
    async apis(sec) {
      const a = await get("apis");
      meta(sec, a);
      $(".meta", sec).textContent += ` · ${int(a.calls)} calls`;
      chart(sec, a.chart, a.step_seconds, int, a.truncated && a.covered_since);
      fill($("#api-endpoints"), (a.endpoints || []).map((r) => el("tr", { "data-key": `${r.method} ${r.host}${r.route}` },
        td(r.host, "k"), td(r.service), td(r.method), td(r.route, "k"), td(int(r.count), "n count"),
        ...r.status.map((n, i) => td(int(n), "n s" + ["2xx", "3xx", "4xx", "5xx", "other"][i] + (i >= 2 && n > 0 ? " bad" : ""))),
        td((100 * r.error_rate).toFixed(1) + " %", "n"), td(ms(r.latency_mean_ms), "n"), td(ms(r.latency_p99_max_ms), "n"),
        td(when(r.first_seen)), td(when(r.last_seen)))), 15, "no API call in this range (api_endpoint: httpflow's outgoing exchanges)");
    },
    async dnsflow(sec) {
      const a = await get("dnsflow");
      meta(sec, a);
      $(".meta", sec).textContent += ` · ${int(a.lookups)} lookups`;
      chart(sec, a.chart, a.step_seconds, int, a.truncated && a.covered_since);
      fill($("#dns-names"), (a.names || []).map((r) => el("tr", { "data-key": r.name },
        td(r.name, "k"), td(int(r.count), "n count"), td(int(r.timeouts), "n timeouts" + (r.timeouts > 0 ? " bad" : "")),
        td(ms(r.latency_mean_ms), "n"), td(ms(r.latency_max_ms), "n"),
        td(Object.entries(r.rcodes).sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ${int(v)}`).join(" · "), "rcodes"))), 6);
    },
    async bash(sec) {
      const a = await get("bash");
      meta(sec, a);
      const box = $("#bash-users");
      box.replaceChildren();
      if (!a.users || a.users.length === 0) box.append(el("p", { class: "muted" }, "no bash command in this range (enabled_plugins += \"ebpf-bash\")"));
      for (const u of a.users || []) {
        const t = el("table", { class: "bash", "data-user": u.user }, el("thead", {}, el("tr", {},
          el("th", {}, "time"), el("th", {}, "pid"), el("th", {}, "command"))), el("tbody"));
        fill(t, u.last.map((l) => el("tr", {}, td(new Date(l.time).toLocaleString()), td(l.pid), el("td", { class: "k" }, el("code", {}, l.cmd)))), 3);
        box.append(el("div", { class: "user" }, el("h3", {}, `${u.user} — ${u.commands} commands in range, last ${u.last.length}`), t));
      }
    },
    async health(sec) {
      const a = await get("health");
      meta(sec, a);
      const s = $("#health-summary");
      const seen = a.collector_seen ? (Date.now() - a.collector_seen) / 1000 : null;
      const flag = (n, label) => el("span", { class: n > 0 ? "bad" : "ok" }, `${label}: ${n}`);
      s.replaceChildren(
        el("span", { class: seen == null || seen > 300 ? "bad" : "ok" },
          seen == null ? "no datakit_ebpf point in this range" : `collector last reported ${Math.round(seen)} s ago (up ${int(a.uptime_seconds)} s)`),
        flag(a.hooks_refused, "hooks refused"), flag(a.parts_fallback, "parts on fallback"), flag(a.parts_off, "parts off"),
        flag(a.store_evicted_points, "store evicted points"), flag(a.store_damaged_points, "store damaged points"));
      chart(sec, a.chart, a.step_seconds, int, a.truncated && a.covered_since);
      fill($("#health-counters"), (a.counters || []).map((c) => el("tr", { "data-key": c.field },
        td(c.field), td(int(c.latest), "n" + (c.latest > 0 ? " bad" : "")), td(int(c.increase), "n" + (c.increase > 0 ? " bad" : "")))), 3);
      fill($("#health-sinks"), (a.sinks || []).map((k) => el("tr", { "data-key": k.sink },
        td(k.sink), td(k.target), td(int(k.fields.sink_points_sent || 0), "n"),
        td(int(k.fields.sink_points_dropped || 0), "n" + (k.fields.sink_points_dropped > 0 ? " bad" : "")),
        td(int(k.fields.sink_points_lost || 0), "n" + (k.fields.sink_points_lost > 0 ? " bad" : "")),
        td(int(k.fields.sink_backlog_points || 0), "n"), td(int(k.fields.sink_backlog_age_seconds || 0), "n"))), 7, "no sink configured");
    },
  };

  async function load() {
    document.querySelectorAll("#ranges button").forEach((b) => b.classList.toggle("on", b.dataset.range === range));
    $("#status").textContent = "loading…";
    document.body.dataset.loaded = "";
    const errs = [];
    // One at a time: the agent answers two page queries at once, and the store is the agent's first job.
    for (const [name, fn] of Object.entries(sections)) {
      try { await fn(document.getElementById(name)); } catch (e) { errs.push(e.message); }
    }
    $("#status").textContent = errs.length ? "errors: " + errs.join("; ") : `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = errs.length ? "error" : "ok";
  }
  document.querySelectorAll("#ranges button").forEach((b) => b.addEventListener("click", () => {
    range = b.dataset.range;
    history.replaceState(null, "", "#range=" + range);
    load();
  }));
  load();
})();
