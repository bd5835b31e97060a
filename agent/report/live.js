/* Live mode (agent/station): the page follows its own server's /events stream. Each "map" event
   is a whole new payload, drawn by the same skysiftMap as a report; the devices panel shows
   each device's status (online or offline from its last will) and link states. The page's
   view is kept across updates once the user panned or zoomed. */
function skysiftLive(initial) {
  "use strict";
  const S = { devices: {}, updates: 0, connected: false, thumbs: 0 };
  window.skysiftStation = S;
  const token = new URLSearchParams(location.search).get("token");
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const view = { cx: 0, cy: 0, s: 1, user: false };
  let ctl = null;

  const aside = document.querySelector("aside");
  const box = document.createElement("div");
  box.innerHTML = '<h2>Devices</h2><p class="muted" id="st-link"></p>' +
    '<table id="devices"><thead><tr><th>device</th><th>state</th><th>links</th><th>frames</th><th>heard</th></tr></thead><tbody></tbody></table>';
  aside.insertBefore(box, aside.firstChild);

  function links(d) {
    const parts = Object.entries(d.links || {}).map(([k, v]) =>
      '<span class="' + (v.state === "ok" ? "" : "warn") + '" title="' + esc(v.error || "") + '">' + esc(k) + " " + esc(v.state || "?") + "</span>");
    return parts.join(", ") || '<span class="muted">–</span>';
  }
  function devices(st) {
    const tb = document.querySelector("#devices tbody"), rows = [];
    S.devices = {};
    for (const d of st.devices) {
      S.devices[d.device_id] = d.state;
      rows.push('<tr data-device="' + esc(d.device_id) + '" data-state="' + esc(d.state) + '"><td class="id">' + esc(d.device_id) +
        '</td><td class="' + (d.state === "online" ? "" : "warn") + '">' + (d.state === "online" ? "&#9679; " : "&#9675; ") + esc(d.state) +
        "</td><td>" + links(d) + "</td><td>" + d.frames + " (" + d.damaged + " dmg)</td><td>" + esc((d.heard_at || "").slice(11, 19)) + "</td></tr>");
    }
    tb.innerHTML = rows.join("") || '<tr><td colspan="5" class="muted">no device heard yet</td></tr>';
    const b = st.broker;
    document.getElementById("st-link").textContent = "broker " + b.address + ": " + (b.connected ? "connected" : "not connected" + (b.error ? " (" + b.error + ")" : "")) +
      " · page " + (S.connected ? "live" : "reconnecting");
  }
  function apply(D) {
    if (ctl) ctl.abort();
    ctl = new AbortController();
    skysiftMap(D, { signal: ctl.signal, view });
    S.thumbs = Object.keys(D.thumbs || {}).length;
    devices(D.station);
    S.updates++;
  }
  apply(initial);
  const es = new EventSource("events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  es.onopen = () => { S.connected = true; };
  es.onerror = () => { S.connected = false; };  /* EventSource reconnects by itself */
  es.addEventListener("map", (e) => { S.connected = true; apply(JSON.parse(e.data)); });
}
