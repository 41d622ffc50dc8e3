// The heat-map page: country outlines (Natural Earth via world-atlas,
// decoded with topojson-client) on an equirectangular canvas as wide as the
// window, a density layer of /api/heatmap's cells, one marker layer per
// residency decision (served, redirected, denied), a legend, the sortable
// country table and the counters, refreshed every few seconds. No request
// leaves the server that serves the page.
//
// The state a person picks (table sort, transport) lives in the URL
// fragment (#sort=count&dir=desc&transport=udp), so that a view can be
// linked and the browser test can open one.
//
// The canvas exposes what it drew as data attributes: data-cells (cells in
// the snapshot), data-heat (cells in the density layer), data-markers-serve
// / -redirect / -deny (markers drawn per decision), data-width and
// data-height (CSS pixels), data-proj ("k,x0,y0": x = x0 + lon*k,
// y = y0 - lat*k) and data-radius (the largest marker radius).
"use strict";
(function () {
  const REFRESH_MS = 3000;
  // Latitudes shown: Antarctica is left out, the Arctic above Greenland too.
  const LAT_N = 84, LAT_S = -60;
  const COLORS = { serve: "#1a9641", redirect: "#e66101", deny: "#d7191c" };
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  const status = document.getElementById("status");
  let features = null; // country outlines, unprojected
  let land = null; // Path2D of every country, projected for the current view
  let view = null; // {w, h, k, x0, y0, r, dpr}
  let last = null; // the last snapshot, redrawn on resize and toggles
  const layers = { heat: true, serve: true, redirect: true, deny: true };

  const x = (lon) => view.x0 + lon * view.k;
  const y = (lat) => view.y0 - Math.max(LAT_S, Math.min(LAT_N, lat)) * view.k;

  // layout sizes the canvas to its container's width: the whole world
  // (longitudes -180..180) fits with a margin as wide as the largest
  // marker, so that nothing at the edges (New Zealand, Alaska) is cut.
  function layout() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(320, Math.floor(canvas.parentElement.clientWidth));
    const r = Math.max(10, Math.round(w / 50));
    const pad = r + 2;
    const k = (w - 2 * pad) / 360;
    const h = Math.round((LAT_N - LAT_S) * k + 2 * pad);
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    view = { w, h, k, x0: pad + 180 * k, y0: pad + LAT_N * k, r, dpr };
    const d = canvas.dataset;
    d.width = String(w); d.height = String(h); d.radius = String(r);
    d.proj = [k, view.x0, view.y0].map((v) => v.toFixed(4)).join(",");
    land = features ? project(features) : null;
  }

  function project(fs) {
    const p = new Path2D();
    // A ring that crosses the antimeridian (Russia, Fiji) jumps from +180
    // to -180: start a new subpath there instead of a line across the map,
    // after rotating the ring to begin at a jump so that each subpath is
    // one side's whole piece.
    const jump = (a, b) => Math.abs(a[0] - b[0]) > 180;
    const ring = (coords) => {
      let pts = coords.slice(0, -1); // GeoJSON rings repeat the first point
      const k = pts.findIndex((pt, i) => i > 0 && jump(pt, pts[i - 1]));
      if (k > 0) pts = pts.slice(k).concat(pts.slice(0, k));
      let prev = null;
      for (const [lon, lat] of pts) {
        if (prev === null || Math.abs(lon - prev) > 180) p.moveTo(x(lon), y(lat));
        else p.lineTo(x(lon), y(lat));
        prev = lon;
      }
    };
    for (const f of fs) {
      const g = f.geometry;
      if (!g) continue;
      if (g.type === "Polygon") g.coordinates.forEach(ring);
      if (g.type === "MultiPolygon") g.coordinates.forEach((poly) => poly.forEach(ring));
    }
    return p;
  }

  // Palette of the density layer, light to dark purple (the decision
  // markers use green, orange and red): index 0..255 -> rgb.
  const STOPS = [[0, "rgba(158,188,218,0)"], [0.2, "rgb(158,188,218)"], [0.45, "rgb(140,107,177)"], [0.7, "rgb(136,65,157)"], [1, "rgb(77,0,75)"]];
  function gradient(g, w) {
    const grad = g.createLinearGradient(0, 0, w, 0);
    for (const [at, c] of STOPS) grad.addColorStop(at, c);
    return grad;
  }
  const palette = (() => {
    const c = document.createElement("canvas");
    c.width = 256; c.height = 1;
    const g = c.getContext("2d");
    g.fillStyle = gradient(g, 256);
    g.fillRect(0, 0, 256, 1);
    return g.getImageData(0, 0, 256, 1).data;
  })();

  // heat draws the cells as radial gradients accumulated in an offscreen
  // alpha layer, then colours that layer through the palette.
  function heat(cells, max) {
    const off = document.createElement("canvas");
    off.width = canvas.width; off.height = canvas.height;
    const g = off.getContext("2d");
    g.setTransform(view.dpr, 0, 0, view.dpr, 0, 0);
    const r = view.r;
    for (const c of cells) {
      const cx = x(c.lon), cy = y(c.lat);
      const a = 0.3 + 0.7 * Math.log1p(c.count) / Math.log1p(max);
      const grad = g.createRadialGradient(cx, cy, 0, cx, cy, r);
      grad.addColorStop(0, "rgba(0,0,0," + a + ")");
      grad.addColorStop(1, "rgba(0,0,0,0)");
      g.fillStyle = grad;
      g.fillRect(cx - r, cy - r, 2 * r, 2 * r);
    }
    const img = g.getImageData(0, 0, off.width, off.height);
    const d = img.data;
    for (let i = 0; i < d.length; i += 4) {
      const al = d[i + 3];
      if (!al) continue;
      d[i] = palette[al * 4]; d[i + 1] = palette[al * 4 + 1]; d[i + 2] = palette[al * 4 + 2];
      d[i + 3] = Math.min(235, 90 + al);
    }
    g.putImageData(img, 0, 0);
    return off;
  }

  // symbol draws one decision's marker: served a circle, redirected a
  // diamond, denied a square with a cross; shapes differ as well as
  // colours.
  function symbol(g, kind, cx, cy, s) {
    g.beginPath();
    if (kind === "serve") {
      g.arc(cx, cy, s, 0, 2 * Math.PI);
    } else if (kind === "redirect") {
      const d = s * 1.3;
      g.moveTo(cx, cy - d); g.lineTo(cx + d, cy); g.lineTo(cx, cy + d); g.lineTo(cx - d, cy); g.closePath();
    } else {
      g.rect(cx - s, cy - s, 2 * s, 2 * s);
    }
    g.fillStyle = COLORS[kind];
    g.strokeStyle = "#fff";
    g.lineWidth = 1.5;
    g.fill();
    g.stroke();
    if (kind === "deny") {
      const e = s * 0.6;
      g.beginPath();
      g.moveTo(cx - e, cy - e); g.lineTo(cx + e, cy + e); g.moveTo(cx + e, cy - e); g.lineTo(cx - e, cy + e);
      g.stroke();
    }
  }

  // markers draws one layer per decision; a cell with several decisions
  // gets each marker, side by side. It returns the markers drawn per
  // decision.
  function markers(cells) {
    const drawn = { serve: 0, redirect: 0, deny: 0 };
    // One size scale for every layer: a marker's area grows with its
    // connections, whatever the decision.
    let most = 1;
    for (const c of cells) for (const k in drawn) most = Math.max(most, c.decisions[k] || 0);
    const smin = Math.max(3.5, view.r * 0.2), smax = view.r * 0.45;
    const offset = { serve: [0, 0], redirect: [0.35, -0.35], deny: [-0.35, 0.35] };
    for (const k of ["serve", "redirect", "deny"]) {
      if (!layers[k]) continue;
      for (const c of cells) {
        const n = c.decisions[k] || 0;
        if (n <= 0) continue;
        const mixed = (c.decisions.serve > 0) + (c.decisions.redirect > 0) + (c.decisions.deny > 0) > 1;
        const s = smin + (smax - smin) * Math.sqrt(n / most);
        const [ox, oy] = mixed ? offset[k] : [0, 0];
        symbol(ctx, k, x(c.lon) + ox * view.r, y(c.lat) + oy * view.r, s);
        drawn[k]++;
      }
    }
    return drawn;
  }

  function draw() {
    if (!view) return;
    const cells = last ? last.cells : [];
    ctx.setTransform(view.dpr, 0, 0, view.dpr, 0, 0);
    ctx.clearRect(0, 0, view.w, view.h);
    if (land) {
      ctx.fillStyle = "#f4f1ea";
      ctx.strokeStyle = "#9a9a9a";
      ctx.lineWidth = 0.6;
      ctx.fill(land);
      ctx.stroke(land);
    }
    const max = cells.reduce((m, c) => Math.max(m, c.count), 1);
    if (layers.heat && cells.length) {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(heat(cells, max), 0, 0);
      ctx.setTransform(view.dpr, 0, 0, view.dpr, 0, 0);
    }
    const drawn = markers(cells);
    const d = canvas.dataset;
    d.cells = String(cells.length);
    d.heat = String(layers.heat ? cells.length : 0);
    for (const k in drawn) d["markers" + k[0].toUpperCase() + k.slice(1)] = String(drawn[k]);
    d.draws = String(Number(d.draws) + 1);
    const lg = document.getElementById("legend");
    lg.dataset.max = String(cells.length ? max : 0);
    text("legend-max", cells.length ? max : "–"); // no data yet: no scale
  }

  function legend() {
    const sc = document.getElementById("legend-scale");
    const g = sc.getContext("2d");
    g.fillStyle = gradient(g, sc.width);
    g.fillRect(0, 0, sc.width, sc.height);
    for (const c of document.querySelectorAll("#legend canvas.sym")) {
      symbol(c.getContext("2d"), c.dataset.sym, c.width / 2, c.height / 2, 5);
    }
    for (const box of document.querySelectorAll("#legend input[data-layer]")) {
      box.addEventListener("change", () => { layers[box.dataset.layer] = box.checked; draw(); });
    }
  }

  function text(id, v) { document.getElementById(id).textContent = String(v); }

  // ---- URL fragment state: sort and transport ----

  const KEYS = ["name", "iso", "count", "serve", "redirect", "deny"];
  function state() {
    const p = new URLSearchParams(location.hash.slice(1));
    const sort = KEYS.includes(p.get("sort")) ? p.get("sort") : "count";
    const dir = p.get("dir") === "asc" || p.get("dir") === "desc" ? p.get("dir") : (sort === "name" || sort === "iso" ? "asc" : "desc");
    const transport = ["tcp", "udp"].includes(p.get("transport")) ? p.get("transport") : "";
    return { sort, dir, transport };
  }
  function setState(change) {
    const s = Object.assign(state(), change);
    const p = new URLSearchParams();
    p.set("sort", s.sort); p.set("dir", s.dir);
    if (s.transport) p.set("transport", s.transport);
    location.hash = p.toString();
  }

  function sortKey(c, key) {
    switch (key) {
      case "name": return c.name || c.iso;
      case "iso": return c.iso;
      case "count": return c.count;
      default: return c.decisions[key] || 0;
    }
  }

  function table(countries) {
    const { sort, dir } = state();
    for (const th of document.querySelectorAll("#countries th")) {
      if (th.dataset.key === sort) th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    const sign = dir === "asc" ? 1 : -1;
    const sorted = countries.slice().sort((a, b) => {
      const va = sortKey(a, sort), vb = sortKey(b, sort);
      const c = typeof va === "string" ? va.localeCompare(vb) : va - vb;
      return sign * c || a.iso.localeCompare(b.iso);
    });
    const body = document.querySelector("#countries tbody");
    const rows = sorted.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.iso = c.iso;
      const cell = (v, cls) => {
        const td = document.createElement("td");
        td.textContent = String(v);
        if (cls && v) td.className = cls;
        tr.appendChild(td);
      };
      cell(c.name || c.iso); cell(c.iso); cell(c.count);
      cell(c.decisions.serve); cell(c.decisions.redirect, "redirect"); cell(c.decisions.deny, "deny");
      return tr;
    });
    body.replaceChildren(...rows);
    document.getElementById("countries").dataset.sort = sort + "," + dir;
  }

  function headers() {
    for (const th of document.querySelectorAll("#countries th")) {
      th.querySelector("button").addEventListener("click", () => {
        const s = state();
        const key = th.dataset.key;
        const text = th.dataset.type === "text";
        const dir = s.sort === key ? (s.dir === "asc" ? "desc" : "asc") : (text ? "asc" : "desc");
        setState({ sort: key, dir });
      });
    }
    for (const r of document.querySelectorAll("#transport input")) {
      r.addEventListener("change", () => { if (r.checked) setState({ transport: r.value }); });
    }
  }

  // ---- data ----

  let seq = 0;
  async function refresh() {
    const { transport } = state();
    const mine = ++seq;
    try {
      const res = await fetch("api/heatmap" + (transport ? "?transport=" + transport : ""), { cache: "no-store" });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const s = await res.json();
      if (mine !== seq) return; // a newer request (another transport) is under way
      last = s;
      canvas.dataset.transport = s.transport || "";
      draw();
      table(s.countries);
      for (const k of ["events", "served", "redirected", "denied", "refused", "unplaced"]) text("c-" + k, s.totals[k]);
      text("l-unplaced", s.totals.unplaced);
      text("l-refused", s.totals.refused);
      const sum = { serve: 0, redirect: 0, deny: 0 };
      for (const c of s.cells) for (const k in sum) sum[k] += c.decisions[k] || 0;
      for (const k in sum) text("l-" + k, sum[k]);
      status.className = "";
      status.textContent = "source: " + s.source + (s.note ? " (" + s.note + ")" : "") + (s.transport ? ", " + s.transport.toUpperCase() + " only" : "") +
        ", updated " + new Date(s.generated_at).toLocaleTimeString() + ", " + s.cells.length + " cells, refreshing every " + REFRESH_MS / 1000 + " s";
    } catch (e) {
      status.className = "error";
      status.textContent = "data unavailable (" + e.message + "), retrying";
    }
  }

  function applyState() {
    const { transport } = state();
    for (const r of document.querySelectorAll("#transport input")) r.checked = r.value === transport;
    document.getElementById("transport").dataset.value = transport;
    if (last) table(last.countries);
  }

  let pending = false;
  function onResize() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; layout(); draw(); });
  }

  async function start() {
    layout();
    legend();
    headers();
    applyState();
    window.addEventListener("resize", onResize);
    window.addEventListener("hashchange", () => {
      const before = last && (last.transport || "");
      applyState();
      if (before !== state().transport) refresh();
    });
    try {
      const res = await fetch("assets/countries-110m.json");
      const world = await res.json();
      features = topojson.feature(world, world.objects.countries).features
        .filter((f) => !(f.properties && f.properties.name === "Antarctica"));
      layout();
    } catch (e) {
      status.textContent = "country outlines unavailable: " + e.message;
    }
    await refresh();
    setInterval(refresh, REFRESH_MS);
  }
  start();
})();
