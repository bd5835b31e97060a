/* The damage map, drawn from one payload (agent/report/html.py build_payload). A live page
   (live.js) calls it again with each new payload: opts.signal then removes the previous call's
   listeners, and opts.view keeps the user's pan and zoom across calls. */
function skysiftMap(D, opts) {
  "use strict";
  const signal = opts.signal, on = { signal };
  const P = D.points, N = P.x.length, R = window.skysiftReport;
  R.located = N; R.unlocated = D.unlocated.length; R.frames = D.frames_total;
  R.footprints = D.footprints.length; R.top = D.top.length;
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmtP = (p) => (p == null ? "–" : p.toFixed(2));
  const fmtM = (m) => (m >= 1000 ? (m / 1000).toLocaleString(undefined, { maximumFractionDigits: 1 }) + " km" : Math.round(m) + " m");

  /* colours: p(damaged) 0 green, 0.5 yellow, 1 red; heat: transparent yellow to dark red */
  const lerp = (a, b, t) => a + (b - a) * t;
  function pColor(p) {
    const stops = [[26, 152, 80], [254, 224, 139], [215, 48, 39]];
    const t = Math.max(0, Math.min(1, p)) * 2, i = Math.min(1, Math.floor(t)), f = t - i;
    const c = stops[i].map((v, k) => Math.round(lerp(v, stops[i + 1][k], f)));
    return "rgb(" + c.join(",") + ")";
  }
  function heatRGBA(v) {
    const stops = [[255, 255, 178], [254, 178, 76], [240, 59, 32], [140, 0, 20]];
    const t = Math.max(0, Math.min(1, v)) * 3, i = Math.min(2, Math.floor(t)), f = t - i;
    const c = stops[i].map((x, k) => Math.round(lerp(x, stops[i + 1][k], f)));
    return [c[0], c[1], c[2], Math.round(255 * Math.min(0.8, 0.15 + v * 0.9))];
  }
  const BUCKETS = 10, bucketColor = [];
  for (let b = 0; b < BUCKETS; b++) bucketColor.push(pColor((b + 0.5) / BUCKETS));
  /* colour bucket per frame (-1: rejected, drawn as a grey ring) and the drawing order */
  const bucketOf = new Int8Array(P.x.length);
  for (let i = 0; i < P.x.length; i++) bucketOf[i] = P.s[i] === 2 ? -1 : Math.min(BUCKETS - 1, Math.floor((P.p[i] || 0) * BUCKETS));
  const order = Array.from(P.x.keys()).sort((a, b) => bucketOf[a] - bucketOf[b] || a - b);
  (function ramps() {
    const a = $("ramp-p").getContext("2d"), h = $("ramp-h").getContext("2d");
    for (let x = 0; x < 140; x++) {
      a.fillStyle = pColor(x / 139); a.fillRect(x, 0, 1, 10);
      const c = heatRGBA(x / 139); h.fillStyle = "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + (c[3] / 255) + ")"; h.fillRect(x, 0, 1, 10);
    }
  })();

  /* summary, flights, assumptions */
  const visible = D.flights.map(() => true);
  const dmg = P.s.reduce((a, s) => a + (s === 1), 0);
  $("summary").innerHTML = "<b>" + D.frames_total + "</b> frames in <b>" + D.flights.length + "</b> flight(s): <b>" + D.damaged_total +
    "</b> damaged, <b>" + N + "</b> on the map, <b" + (D.unlocated.length ? ' class="warn"' : "") + ">" + D.unlocated.length +
    "</b> without position &middot; generated " + esc(D.generated_at);
  const ftb = $("flights").querySelector("tbody");
  ftb.innerHTML = "";
  D.flights.forEach((f, i) => {
    const tr = document.createElement("tr");
    tr.innerHTML = '<td><label><input type="checkbox" checked data-f="' + i + '"> ' + esc(f.name) + "</label></td><td>" + f.frames +
      "</td><td>" + f.damaged + "</td><td>" + f.rejected + "</td><td" + (f.unlocated ? ' class="warn"' : "") + ">" + f.unlocated + "</td>";
    tr.title = f.flight_id + " · " + (f.started_at || "") + " – " + (f.ended_at || "open");
    ftb.appendChild(tr);
  });
  ftb.addEventListener("change", (e) => { const i = +e.target.dataset.f; visible[i] = e.target.checked; schedule(); }, on);
  const cam = D.camera;
  const nadir = D.footprints.filter((fp) => fp.src !== "pose").length, posed = D.footprints.length - nadir;
  $("assume").textContent = (posed ? posed + " footprints ray-cast by the agent from the camera pose onto the terrain. " : "") + (nadir
    ? nadir + " footprints assumed: nadir camera, flat ground, altitude = height above ground, north-up (heading unknown); field of view " +
      (cam.hfov_deg ? cam.hfov_deg + "° horizontal" : "horizontal from the image aspect") + ", " +
      (cam.vfov_deg ? cam.vfov_deg + "° vertical" : "vertical from the image aspect") + ". " + D.footprints.length + " of " + N + " frames on the map have one."
    : posed ? "" : "No footprints: they need the camera pose, or the frame altitude and camera.hfov_deg / camera.vfov_deg in the configuration.");
  /* why frames on the map are drawn at the drone's position instead of where they look */
  const why = {};
  for (let i = 0; i < N; i++) if (P.w[i]) why[P.w[i]] = (why[P.w[i]] || 0) + 1;
  const onGround = N - Object.values(why).reduce((a, b) => a + b, 0);
  R.onGround = onGround;
  $("placement").textContent = onGround + " of " + N + " frames on the map are placed on the ground from the camera pose" +
    (onGround < N ? "; the others at the drone's position: " + Object.entries(why).map(([k, v]) => v + " " + k).join(", ") : "") + ".";
  $("mosnote").textContent = D.mosaic.frames.length + " frame pictures on their footprints" +
    (D.mosaic.missing ? ", " + D.mosaic.missing + " images not on this device" : "") +
    (D.mosaic.over_budget ? ", " + D.mosaic.over_budget + " left out (page size budget)" : "") + ".";
  $("basenote").textContent = D.basemap.note + (D.basemap.attribution ? " · " + D.basemap.attribution : "");

  /* extent and view */
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (let i = 0; i < N; i++) { minX = Math.min(minX, P.x[i]); maxX = Math.max(maxX, P.x[i]); minY = Math.min(minY, P.y[i]); maxY = Math.max(maxY, P.y[i]); }
  for (const fp of D.footprints) for (let k = 0; k < 8; k += 2) { minX = Math.min(minX, fp.q[k]); maxX = Math.max(maxX, fp.q[k]); minY = Math.min(minY, fp.q[k + 1]); maxY = Math.max(maxY, fp.q[k + 1]); }
  if (!N) { minX = minY = -100; maxX = maxY = 100; }
  const extent = Math.max(maxX - minX, maxY - minY, 50);
  const fpByPoint = new Map(D.footprints.map((fp) => [fp.i, fp]));
  const fpSizes = D.footprints.map((fp) => Math.hypot(fp.q[2] - fp.q[0], fp.q[3] - fp.q[1])).sort((a, b) => a - b);
  const fpMedian = fpSizes.length ? fpSizes[fpSizes.length >> 1] : 0;

  const cv = $("map"), ctx = cv.getContext("2d");
  const IL = skysiftImageLayers(D, schedule);
  R.images = IL.total; R.mosaic = D.mosaic.frames.length; R.basemapTiles = D.basemap.tiles.length;
  let W = 0, H = 0, dpr = 1;
  /* centre in local metres, pixels per metre; user: panned or zoomed (a live update keeps it) */
  const view = opts.view || { cx: 0, cy: 0, s: 1, user: false };
  const sx = (x) => W / 2 + (x - view.cx) * view.s, sy = (y) => H / 2 - (y - view.cy) * view.s;
  const wx = (px) => view.cx + (px - W / 2) / view.s, wy = (py) => view.cy - (py - H / 2) / view.s;
  /* for tests and the console: screen position (CSS px in the canvas) of a latitude/longitude */
  R.project = (lat, lon) => [sx((lon - D.projection.lon0) * D.projection.kx), sy((lat - D.projection.lat0) * D.projection.ky)];
  function fit() {
    view.cx = (minX + maxX) / 2; view.cy = (minY + maxY) / 2;
    const w = Math.max(maxX - minX, 20), h = Math.max(maxY - minY, 20);
    view.s = Math.min((W - 60) / w, (H - 60) / h);
    if (!(view.s > 0)) view.s = 1;
  }
  function resize() {
    dpr = window.devicePixelRatio || 1;
    const r = cv.getBoundingClientRect(); W = Math.max(1, r.width); H = Math.max(1, r.height);
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
  }

  /* heat map: a kernel density of damage, computed for the current view on a screen-space grid
     (cells of 4 px or more): damage-weighted frames binned, then a separable Gaussian blur. Recomputed on
     every redraw so that it is sharp at every zoom, from a continent down to one street. */
  let heat = null, bwMul = +$("bw").value;
  const sigmaM = Math.max(fpMedian / 2, D.spacing_m || 0, 2);
  const heatCanvas = document.createElement("canvas");
  function buildHeat() {
    heat = null;
    const sigma = sigmaM * bwMul;
    $("bwm").textContent = "σ = " + fmtM(sigma);
    /* zoomed far out, the true radius is under a pixel: keep blobs visible (at least 5 px);
       zoomed in, coarser cells keep the kernel at most ~20 cells wide */
    const sigmaPx = Math.max(sigma * view.s, 5), cell = Math.max(4, Math.ceil(sigmaPx / 3));
    const gw = Math.ceil(W / cell), gh = Math.ceil(H / cell), sc = sigmaPx / cell;
    const rad = Math.ceil(3 * sc), pad = rad * cell;
    const g = new Float32Array(gw * gh);
    let any = false;
    const Q = D.heat;  /* damaged tiles where they lie, else damaged frames at their point */
    for (let i = 0; i < Q.x.length; i++) {
      if (!visible[Q.f[i]]) continue;
      const w = Q.w[i], x = sx(Q.x[i]), y = sy(Q.y[i]);
      if (!(w > 0) || !onScreen(x, y, pad)) continue;
      const c = Math.max(0, Math.min(gw - 1, Math.floor(x / cell))), r = Math.max(0, Math.min(gh - 1, Math.floor(y / cell)));
      g[r * gw + c] += w; any = true;
    }
    if (!any) return;
    const ker = new Float32Array(2 * rad + 1);
    for (let j = -rad; j <= rad; j++) ker[j + rad] = Math.exp(-0.5 * (j / sc) ** 2);
    const t = new Float32Array(gw * gh);
    for (let r = 0; r < gh; r++) for (let c = 0; c < gw; c++) {
      const v = g[r * gw + c]; if (!v) continue;
      const a = Math.max(-rad, -c), b = Math.min(rad, gw - 1 - c), o = r * gw + c;
      for (let j = a; j <= b; j++) t[o + j] += v * ker[j + rad];
    }
    g.fill(0);
    for (let c = 0; c < gw; c++) for (let r = 0; r < gh; r++) {
      const v = t[r * gw + c]; if (!v) continue;
      const a = Math.max(-rad, -r), b = Math.min(rad, gh - 1 - r);
      for (let j = a; j <= b; j++) g[(r + j) * gw + c] += v * ker[j + rad];
    }
    /* relative to the densest place in view, but never below one fully damaged frame: a lone
       false-positive tile stays faint instead of turning dark red */
    let mx = 1; for (let i = 0; i < g.length; i++) if (g[i] > mx) mx = g[i];
    heatCanvas.width = gw; heatCanvas.height = gh;
    const hctx = heatCanvas.getContext("2d"), img = hctx.createImageData(gw, gh);
    let cells = 0;
    for (let i = 0; i < g.length; i++) {
      const v = g[i] / mx; if (v < 0.03) continue;
      img.data.set(heatRGBA(v), i * 4); cells++;
    }
    hctx.putImageData(img, 0, 0);
    heat = { canvas: heatCanvas, cell }; R.heatCells = cells;
  }

  function niceStep(v) { const e = Math.pow(10, Math.floor(Math.log10(v))), m = v / e; return (m >= 5 ? 5 : m >= 2 ? 2 : 1) * e; }
  function drawGrid() {
    const pr = D.projection, lonA = pr.lon0 + wx(0) / pr.kx, lonB = pr.lon0 + wx(W) / pr.kx;
    const latA = pr.lat0 + wy(H) / pr.ky, latB = pr.lat0 + wy(0) / pr.ky;
    const step = niceStep(Math.max(lonB - lonA, latB - latA) / 5);
    const dec = Math.max(0, -Math.floor(Math.log10(step)));
    ctx.strokeStyle = "#e2e2dc"; ctx.lineWidth = 1; ctx.fillStyle = "#9a9a92"; ctx.font = "11px system-ui, sans-serif";
    ctx.beginPath();
    for (let lon = Math.ceil(lonA / step) * step; lon <= lonB; lon += step) { const x = sx((lon - pr.lon0) * pr.kx); ctx.moveTo(x, 0); ctx.lineTo(x, H); }
    for (let lat = Math.ceil(latA / step) * step; lat <= latB; lat += step) { const y = sy((lat - pr.lat0) * pr.ky); ctx.moveTo(0, y); ctx.lineTo(W, y); }
    ctx.stroke();
    for (let lon = Math.ceil(lonA / step) * step; lon <= lonB; lon += step) ctx.fillText(lon.toFixed(dec) + "°", sx((lon - pr.lon0) * pr.kx) + 3, H - 6);
    for (let lat = Math.ceil(latA / step) * step; lat <= latB; lat += step) {
      const y = sy((lat - pr.lat0) * pr.ky) - 3;
      if (y > 60) ctx.fillText(lat.toFixed(dec) + "°", W - 70, y);  /* not under the north arrow */
    }
  }
  function drawScale() {
    const m = niceStep(120 / view.s), px = m * view.s, x = 14, y = H - 26;
    ctx.fillStyle = "rgba(255,255,255,.85)"; ctx.fillRect(x - 6, y - 18, px + 12, 28);
    ctx.strokeStyle = "#222"; ctx.lineWidth = 2; ctx.beginPath();
    ctx.moveTo(x, y - 5); ctx.lineTo(x, y); ctx.lineTo(x + px, y); ctx.lineTo(x + px, y - 5); ctx.stroke();
    ctx.fillStyle = "#222"; ctx.font = "12px system-ui, sans-serif"; ctx.textAlign = "center";
    ctx.fillText(fmtM(m), x + px / 2, y - 6); ctx.textAlign = "left";
  }
  function drawNorth() {
    const x = W - 30, y = 22;
    ctx.fillStyle = "rgba(255,255,255,.85)"; ctx.beginPath(); ctx.arc(x, y + 14, 20, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#222"; ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x + 8, y + 24); ctx.lineTo(x, y + 18); ctx.lineTo(x - 8, y + 24); ctx.closePath(); ctx.fill();
    ctx.font = "bold 11px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.fillText("N", x, y - 2 + 0); ctx.textAlign = "left";
  }
  function quad(q) { ctx.moveTo(sx(q[0]), sy(q[1])); for (let k = 2; k < 8; k += 2) ctx.lineTo(sx(q[k]), sy(q[k + 1])); ctx.closePath(); }
  function onScreen(x, y, m) { return x > -m && x < W + m && y > -m && y < H + m; }

  let hover = -1, selected = -1, pending = false;
  function draw() {
    const t0 = performance.now();
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fbfbf8"; ctx.fillRect(0, 0, W, H);
    R.basemapDrawn = $("l-base").checked ? IL.drawBasemap(ctx, sx, sy, W, H) : 0;
    if ($("l-grid").checked) drawGrid();
    R.drawn = $("l-img").checked ? IL.drawMosaic(ctx, sx, sy, (i) => visible[P.f[i]], W, H) : 0;
    R.imagesLoaded = IL.loaded();
    if ($("l-heat").checked) {
      buildHeat();
      if (heat) { ctx.imageSmoothingEnabled = true; ctx.drawImage(heat.canvas, 0, 0, heat.canvas.width * heat.cell, heat.canvas.height * heat.cell); }
    }
    if ($("l-fp").checked && fpMedian * view.s > 6) {
      ctx.beginPath();
      for (const fp of D.footprints) if (visible[P.f[fp.i]] && onScreen(sx(P.x[fp.i]), sy(P.y[fp.i]), fpMedian * view.s)) quad(fp.q);
      ctx.strokeStyle = "rgba(60,60,60,.45)"; ctx.lineWidth = 1; ctx.stroke();
      ctx.beginPath();
      for (const fp of D.footprints) if (visible[P.f[fp.i]] && onScreen(sx(P.x[fp.i]), sy(P.y[fp.i]), fpMedian * view.s)) for (const t of fp.d) quad(t);
      ctx.fillStyle = "rgba(215,48,39,.25)"; ctx.fill();
      ctx.strokeStyle = "rgb(215,48,39)"; ctx.lineWidth = 2; ctx.stroke();
    }
    let drawn = 0;
    if ($("l-mark").checked) {
      const r = N > 20000 ? 2.5 : 3.5;
      /* one pass in draw order (rejected, then rising p(damaged), so damage is on top), one path
         per colour: tens of thousands of frames redraw within a frame while panning */
      let cur = -2;
      const flush = () => {
        if (cur === -1) { ctx.strokeStyle = "#777"; ctx.lineWidth = 1.5; ctx.stroke(); }
        else if (cur >= 0) {
          ctx.fillStyle = bucketColor[cur]; ctx.fill();
          ctx.strokeStyle = cur >= BUCKETS / 2 ? "rgba(80,0,0,.8)" : "rgba(0,0,0,.35)"; ctx.lineWidth = 0.8; ctx.stroke();
        }
      };
      for (let k = 0; k < N; k++) {
        const i = order[k];
        if (!visible[P.f[i]]) continue;
        const x = sx(P.x[i]), y = sy(P.y[i]); if (!onScreen(x, y, 5)) continue;
        if (bucketOf[i] !== cur) { flush(); cur = bucketOf[i]; ctx.beginPath(); }
        const rr = P.s[i] === 1 ? r + 1 : r;
        ctx.moveTo(x + rr, y); ctx.arc(x, y, rr, 0, 2 * Math.PI); drawn++;
      }
      flush();
    }
    for (const i of [hover, selected]) if (i >= 0) {
      ctx.beginPath(); ctx.arc(sx(P.x[i]), sy(P.y[i]), 8, 0, 2 * Math.PI); ctx.strokeStyle = "#0050c8"; ctx.lineWidth = 2; ctx.stroke();
    }
    drawScale(); drawNorth();
    R.markers = drawn; cv.dataset.markers = String(drawn);
    R.drawMs = performance.now() - t0;
    R.view = { cx: view.cx, cy: view.cy, metresPerPixel: 1 / view.s };
  }
  function schedule() { if (!pending && !(signal && signal.aborted)) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); } }

  function nearest(px, py) {
    const x = wx(px), y = wy(py), lim = 9 / view.s; let best = -1, bd = lim * lim;
    for (let i = 0; i < N; i++) {
      if (!visible[P.f[i]]) continue;
      const dx = P.x[i] - x, dy = P.y[i] - y, d = dx * dx + dy * dy;
      if (d <= bd) { bd = d; best = i; }
    }
    return best;
  }
  const topByPoint = new Map(D.top.filter((t) => t.i != null).map((t) => [t.i, t]));
  /* a report has thumbnails for its top frames; a live page for every frame sent with one */
  const thumbOf = (i) => { const t = topByPoint.get(i); return (t && t.thumb) || (D.thumbs && D.thumbs[i]) || null; };
  function label(i) { return P.s[i] === 2 ? "rejected" : P.s[i] === 1 ? "damaged" : "undamaged"; }
  function showInfo(i) {
    if (i < 0) { $("info").innerHTML = "Hover or click a frame."; return; }
    const fl = D.flights[P.f[i]];
    $("info").classList.remove("muted");
    $("info").innerHTML = '<div class="id"><b>' + esc(P.id[i]) + "</b></div>" +
      '<div><span class="k">flight</span> ' + esc(fl.name) + ' · <span class="k">label</span> ' + label(i) + ' · <span class="k">p</span> ' + fmtP(P.p[i]) + "</div>" +
      '<div><span class="k">damaged tiles</span> ' + (P.dt[i] == null ? "–" : P.dt[i]) + " / " + (P.n[i] == null ? "–" : P.n[i]) + "</div>" +
      '<div><span class="k">' + (P.w[i] ? "drone position" : "ground under the frame") + "</span> " + P.lat[i] + ", " + P.lon[i] +
        (P.alt[i] != null ? " · alt " + P.alt[i] + " m" : "") + " (" + esc(P.g[i]) + ")</div>" +
      (P.w[i] ? '<div class="warn">not placed on the ground: ' + esc(P.w[i]) + "</div>" : "") +
      '<div><span class="k">captured</span> ' + esc(P.t[i] || "unknown") + "</div>" +
      (fpByPoint.has(i) ? "" : '<div class="k">no footprint (altitude or field of view unknown)</div>') +
      (thumbOf(i) ? '<img alt="frame" src="' + thumbOf(i) + '">' : "");
  }
  function focus(i) {
    selected = i; showInfo(i);
    view.cx = P.x[i]; view.cy = P.y[i];
    const fp = fpByPoint.get(i);
    view.user = true;
    view.s = Math.max(view.s, fp ? Math.min(W, H) / (3 * Math.hypot(fp.q[2] - fp.q[0], fp.q[3] - fp.q[1]) + 1) : view.s * 2);
    schedule(); cv.scrollIntoView({ block: "nearest" });
  }

  /* pan and zoom: drag, wheel (around the cursor), buttons, keys */
  function zoomAt(f, px, py) {
    const x = wx(px), y = wy(py);
    view.user = true;
    view.s = Math.max(1e-5, Math.min(view.s * f, 200));
    view.cx = x - (px - W / 2) / view.s; view.cy = y + (py - H / 2) / view.s; schedule();
  }
  let drag = null;
  cv.addEventListener("pointerdown", (e) => { drag = { x: e.offsetX, y: e.offsetY, cx: view.cx, cy: view.cy, moved: false }; cv.setPointerCapture(e.pointerId); cv.classList.add("drag"); }, on);
  cv.addEventListener("pointermove", (e) => {
    if (drag) {
      const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      view.cx = drag.cx - dx / view.s; view.cy = drag.cy + dy / view.s; view.user = true; schedule(); return;
    }
    const i = nearest(e.offsetX, e.offsetY), tip = $("tip");
    if (i !== hover) { hover = i; schedule(); }
    if (i >= 0) {
      tip.style.display = "block"; tip.style.left = (e.offsetX + 12) + "px"; tip.style.top = (e.offsetY + 12) + "px";
      tip.textContent = P.id[i].slice(0, 12) + " · " + label(i) + " · p " + fmtP(P.p[i]) + (P.n[i] ? " · " + P.dt[i] + "/" + P.n[i] + " tiles" : "");
    } else tip.style.display = "none";
  }, on);
  cv.addEventListener("pointerup", (e) => {
    cv.classList.remove("drag");
    if (drag && !drag.moved) { const i = nearest(e.offsetX, e.offsetY); selected = i; showInfo(i); schedule(); }
    drag = null;
  }, on);
  cv.addEventListener("pointerleave", () => { $("tip").style.display = "none"; if (hover >= 0) { hover = -1; schedule(); } }, on);
  cv.addEventListener("wheel", (e) => { e.preventDefault(); zoomAt(Math.exp(-e.deltaY * 0.0015), e.offsetX, e.offsetY); }, { passive: false, signal });
  cv.addEventListener("dblclick", (e) => zoomAt(2, e.offsetX, e.offsetY), on);
  $("zin").onclick = () => zoomAt(1.6, W / 2, H / 2);
  $("zout").onclick = () => zoomAt(1 / 1.6, W / 2, H / 2);
  $("zfit").onclick = () => { fit(); view.user = false; schedule(); };
  window.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    if (e.key === "+" || e.key === "=") zoomAt(1.6, W / 2, H / 2);
    else if (e.key === "-") zoomAt(1 / 1.6, W / 2, H / 2);
    else if (e.key === "0") { fit(); view.user = false; schedule(); }
  }, on);
  for (const id of ["l-heat", "l-mark", "l-fp", "l-grid", "l-img", "l-base"]) $(id).addEventListener("change", schedule, on);
  $("bw").addEventListener("change", (e) => { bwMul = +e.target.value; schedule(); }, on);
  window.addEventListener("resize", () => { resize(); schedule(); }, on);

  /* gallery of the most damaged frames, and the frames without position */
  $("top-h").textContent = "Most damaged frames (" + D.top.length + " of " + D.damaged_total + " damaged)";
  const gal = $("gallery");
  gal.innerHTML = "";
  if (!D.top.length) gal.innerHTML = '<p class="muted">No damaged frame in these flights.</p>';
  for (const t of D.top) {
    const div = document.createElement("div"); div.className = "card";
    div.innerHTML = (t.thumb ? '<img alt="frame ' + esc(t.frame_id) + '" src="' + t.thumb + '">' : '<div class="noimg">image not on this device</div>') +
      '<div class="id">' + esc(t.frame_id.slice(0, 16)) + "</div><div><b>" + (t.dt == null ? "?" : t.dt) + "/" + (t.n == null ? "?" : t.n) +
      "</b> tiles damaged · p " + fmtP(t.p) + "</div><div class=\"muted\">" + esc(t.flight) + " · " + esc(t.t || "time unknown") + "</div>" +
      '<div class="muted">' + (t.lat != null ? t.lat.toFixed(5) + ", " + t.lon.toFixed(5) : '<span class="warn">no position</span>') + "</div>";
    div.title = t.image || "";
    if (t.i != null) div.addEventListener("click", () => focus(t.i));
    gal.appendChild(div);
  }
  $("unloc-h").textContent = "Frames without position (" + D.unlocated.length + ")";
  const ub = $("unloc").querySelector("tbody"), rows = [];
  for (const u of D.unlocated)
    rows.push('<tr><td class="id">' + esc(u.frame_id) + "</td><td>" + esc(u.flight) + "</td><td>" + esc(u.status) + "</td><td>" + esc(u.label || "–") +
      "</td><td>" + fmtP(u.p) + "</td><td>" + (u.dt == null ? "–" : u.dt) + "</td><td>" + esc(u.t || "–") + "</td><td>" + esc(u.problem) +
      "</td><td>" + esc(u.image || "") + "</td></tr>");
  ub.innerHTML = rows.join("") || '<tr><td colspan="9" class="muted">none: every frame has a position</td></tr>';

  $("nomap").style.display = N ? "none" : "block";
  if (!N) {
    $("nomap").textContent = D.frames_total
      ? "No frame can be placed on the map: none of the " + D.frames_total + " frames has a usable position or ground footprint. " +
        "Each one is listed below under “Frames without position”, with why."
      : "No frames in these flights.";
  }
  resize(); if (!view.user) fit(); draw();
  R.ready = true;
}

const skysiftPayload = JSON.parse(document.getElementById("report-data").textContent);
/* function declarations are hoisted across the one inline script: on a live page (live.js
   comes after this file) the live script takes over */
if (typeof skysiftLive === "function") skysiftLive(skysiftPayload); else skysiftMap(skysiftPayload, {});
