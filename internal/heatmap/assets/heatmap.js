// The heat-map page: country outlines (Natural Earth via world-atlas,
// decoded with topojson-client) on an equirectangular canvas, a heat layer
// of /api/heatmap's cells, the country table and the counters, refreshed
// every few seconds. No request leaves the server that serves the page.
"use strict";
(function () {
  const REFRESH_MS = 3000;
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const status = document.getElementById("status");
  let land = null; // Path2D of every country, projected once

  const x = (lon) => (lon + 180) / 360 * W;
  const y = (lat) => (90 - lat) / 180 * H;

  function project(features) {
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
    for (const f of features) {
      const g = f.geometry;
      if (!g) continue;
      if (g.type === "Polygon") g.coordinates.forEach(ring);
      if (g.type === "MultiPolygon") g.coordinates.forEach((poly) => poly.forEach(ring));
    }
    return p;
  }

  // Palette for the heat layer: alpha 0..255 -> colour, transparent to red.
  const palette = (() => {
    const c = document.createElement("canvas");
    c.width = 256; c.height = 1;
    const g = c.getContext("2d");
    const grad = g.createLinearGradient(0, 0, 256, 0);
    grad.addColorStop(0.0, "rgba(0,0,255,0)");
    grad.addColorStop(0.25, "rgb(0,160,255)");
    grad.addColorStop(0.5, "rgb(0,220,0)");
    grad.addColorStop(0.75, "rgb(255,220,0)");
    grad.addColorStop(1.0, "rgb(230,0,0)");
    g.fillStyle = grad;
    g.fillRect(0, 0, 256, 1);
    return g.getImageData(0, 0, 256, 1).data;
  })();

  // heat draws the cells as radial gradients accumulated in an offscreen
  // alpha layer, then colours that layer through the palette.
  function heat(cells) {
    const off = document.createElement("canvas");
    off.width = W; off.height = H;
    const g = off.getContext("2d");
    const max = cells.reduce((m, c) => Math.max(m, c.count), 1);
    const r = Math.max(8, W / 60);
    for (const c of cells) {
      const cx = x(c.lon), cy = y(c.lat);
      const a = 0.25 + 0.75 * Math.log1p(c.count) / Math.log1p(max);
      const grad = g.createRadialGradient(cx, cy, 0, cx, cy, r);
      grad.addColorStop(0, "rgba(0,0,0," + a + ")");
      grad.addColorStop(1, "rgba(0,0,0,0)");
      g.fillStyle = grad;
      g.fillRect(cx - r, cy - r, 2 * r, 2 * r);
    }
    const img = g.getImageData(0, 0, W, H);
    const d = img.data;
    for (let i = 0; i < d.length; i += 4) {
      const al = d[i + 3];
      if (!al) continue;
      d[i] = palette[al * 4]; d[i + 1] = palette[al * 4 + 1]; d[i + 2] = palette[al * 4 + 2];
      d[i + 3] = Math.min(255, 60 + al);
    }
    g.putImageData(img, 0, 0);
    return off;
  }

  function draw(cells) {
    ctx.clearRect(0, 0, W, H);
    if (land) {
      ctx.fillStyle = "#f4f1ea";
      ctx.strokeStyle = "#9a9a9a";
      ctx.lineWidth = 0.6;
      ctx.fill(land);
      ctx.stroke(land);
    }
    ctx.drawImage(heat(cells), 0, 0);
    canvas.dataset.cells = String(cells.length);
    canvas.dataset.draws = String(Number(canvas.dataset.draws) + 1);
  }

  function text(id, v) { document.getElementById(id).textContent = String(v); }

  function table(countries) {
    const body = document.querySelector("#countries tbody");
    const rows = countries.map((c) => {
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
  }

  async function refresh() {
    try {
      const transport = document.getElementById("transport").value; // "", tcp or udp
      const res = await fetch("api/heatmap" + (transport ? "?transport=" + transport : ""), { cache: "no-store" });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const s = await res.json();
      draw(s.cells);
      table(s.countries);
      for (const k of ["events", "served", "redirected", "denied", "refused", "unplaced", "tcp", "udp"]) text("c-" + k, s.totals[k]);
      status.className = "";
      status.textContent = "source: " + s.source + (s.note ? " (" + s.note + ")" : "") + ", updated " + new Date(s.generated_at).toLocaleTimeString() +
        ", " + s.cells.length + " cells, refreshing every " + REFRESH_MS / 1000 + " s";
    } catch (e) {
      status.className = "error";
      status.textContent = "data unavailable (" + e.message + "), retrying";
    }
  }

  async function start() {
    try {
      const res = await fetch("assets/countries-110m.json");
      const world = await res.json();
      land = project(topojson.feature(world, world.objects.countries).features);
    } catch (e) {
      status.textContent = "country outlines unavailable: " + e.message;
    }
    document.getElementById("transport").addEventListener("change", refresh);
    await refresh();
    setInterval(refresh, REFRESH_MS);
  }
  start();
})();
