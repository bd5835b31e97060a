/* Picture layers (agent/report/layers.py): the MBTiles basemap, and each frame's own picture
   warped onto its ground footprint. Every data: URI is decoded once into an Image; a redraw only
   sets transforms, so panning stays smooth with hundreds of pictures. */
function skysiftImageLayers(D, redraw) {
  "use strict";
  let loaded = 0;
  const load = (src) => {
    const im = new Image();
    im.onload = () => { loaded++; redraw(); };
    im.src = src;
    return im;
  };
  const base = (D.basemap.tiles || []).map((t) => ({ b: t.b, im: load(t.img) }));
  const mosaic = (D.mosaic.frames || []).map((m) => ({ i: m.i, q: m.q, im: load(m.img) }));
  const ready = (im) => im.complete && im.naturalWidth > 0;

  /* Draw the image triangle s (u, v pixel corners) onto the screen triangle d: one affine map,
     x = a u + c v + e, y = b u + d v + f, solved from the three corner pairs. */
  function triangle(ctx, im, s, d) {
    const du1 = s[2] - s[0], dv1 = s[3] - s[1], du2 = s[4] - s[0], dv2 = s[5] - s[1];
    const det = du1 * dv2 - du2 * dv1;
    if (!det) return;
    const dx1 = d[2] - d[0], dy1 = d[3] - d[1], dx2 = d[4] - d[0], dy2 = d[5] - d[1];
    const a = (dx1 * dv2 - dx2 * dv1) / det, c = (du1 * dx2 - du2 * dx1) / det;
    const b = (dy1 * dv2 - dy2 * dv1) / det, dd = (du1 * dy2 - du2 * dy1) / det;
    const e = d[0] - a * s[0] - c * s[1], f = d[1] - b * s[0] - dd * s[1];
    /* the clip grows by a pixel around the centroid: the two triangles of a frame overlap
       instead of leaving an anti-aliased hairline along the diagonal */
    const gx = (d[0] + d[2] + d[4]) / 3, gy = (d[1] + d[3] + d[5]) / 3;
    ctx.save();
    ctx.beginPath();
    for (let k = 0; k < 6; k += 2) {
      const vx = d[k] - gx, vy = d[k + 1] - gy, l = Math.hypot(vx, vy) || 1;
      ctx[k ? "lineTo" : "moveTo"](d[k] + vx / l, d[k + 1] + vy / l);
    }
    ctx.closePath(); ctx.clip();
    ctx.transform(a, b, c, dd, e, f);
    ctx.drawImage(im, 0, 0);
    ctx.restore();
  }

  /* the frames' pictures: the payload lists the damaged ones first, and they are drawn in
     reverse so that where pictures overlap a damaged one ends on top */
  function drawMosaic(ctx, sx, sy, show, W, H) {
    let drawn = 0;
    for (let k = mosaic.length - 1; k >= 0; k--) {
      const m = mosaic[k];
      if (!show(m.i) || !ready(m.im)) continue;
      const q = [];
      for (let j = 0; j < 8; j += 2) q.push(sx(m.q[j]), sy(m.q[j + 1]));
      const xs = [q[0], q[2], q[4], q[6]], ys = [q[1], q[3], q[5], q[7]];
      if (Math.max(...xs) < 0 || Math.min(...xs) > W || Math.max(...ys) < 0 || Math.min(...ys) > H) continue;
      const w = m.im.naturalWidth, h = m.im.naturalHeight;
      /* image corners TL, TR, BR, BL onto the ground corners in the same order */
      triangle(ctx, m.im, [0, 0, w, 0, w, h], [q[0], q[1], q[2], q[3], q[4], q[5]]);
      triangle(ctx, m.im, [0, 0, w, h, 0, h], [q[0], q[1], q[4], q[5], q[6], q[7]]);
      drawn++;
    }
    return drawn;
  }

  /* basemap tiles: boxes [west, south, east, north] in local metres, edges rounded outward so
     neighbouring tiles meet without a gap */
  function drawBasemap(ctx, sx, sy, W, H) {
    let drawn = 0;
    for (const t of base) {
      if (!ready(t.im)) continue;
      const x0 = Math.floor(sx(t.b[0])), x1 = Math.ceil(sx(t.b[2])), y0 = Math.floor(sy(t.b[3])), y1 = Math.ceil(sy(t.b[1]));
      if (x1 < 0 || x0 > W || y1 < 0 || y0 > H) continue;
      ctx.drawImage(t.im, x0, y0, x1 - x0, y1 - y0);
      drawn++;
    }
    return drawn;
  }

  return {
    drawMosaic, drawBasemap,
    total: base.length + mosaic.length,
    loaded: () => loaded,
  };
}
