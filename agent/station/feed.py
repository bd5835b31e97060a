"""The live map's payload: station.db drawn by the same code as ``skysift report``.

Frame messages carry the columns a report draws from (agent.live.payloads.FRAME_KEYS), so a
message is a report row: :func:`agent.report.data.locate` places it and
:func:`agent.report.build_payload` makes the payload, to which the station adds its devices and
the thumbnails' URLs. Flights are keyed ``<device>/<flight_id>``: two drones may name a flight
alike. The payload is built once per change (:meth:`MapFeed.changed`), not once per viewer.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

from agent.report import ReportData, build_payload
from agent.report.data import locate
from agent.report.geo import LocalProjection
from agent.station.store import StationStore
from agent.store.db import utcnow

NO_FLIGHT = "(no flight)"
#: a device's link states worth a column: the broker and the sync targets (its status "sync")
LINK_KEYS = ("mqtt", "gcs", "bigquery")


def _flight_key(device_id: str, flight_id: str | None) -> str:
    return f"{device_id}/{flight_id or NO_FLIGHT}"


def _flights(store: StationStore, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The flights heard, plus one for any flight a frame names before its summary arrived."""
    out: dict[str, dict[str, Any]] = {}
    for fl in store.flights():
        key = _flight_key(fl["device_id"], fl["flight_id"])
        out[key] = {"flight_id": key, "name": f"{fl['device_id']} · {fl.get('name') or fl['flight_id']}",
                    "started_at": fl.get("started_at"), "ended_at": fl.get("ended_at")}
    for f in frames:
        key = f["flight_id"]
        if key not in out:
            out[key] = {"flight_id": key, "name": key.replace("/", " · ", 1), "started_at": None, "ended_at": None}
    return list(out.values())


def _device(d: dict[str, Any]) -> dict[str, Any]:
    status = d["status"]
    links = {k: v for k, v in (status.get("sync") or {}).items() if isinstance(v, dict)}
    return {
        "device_id": d["device_id"],
        "state": d["state"],
        "links": {k: links[k] for k in sorted(links, key=lambda k: (k not in LINK_KEYS, k))},
        "current_flight": status.get("current_flight"),
        "paused": status.get("paused"),
        "engine": status.get("engine"),
        "frames": d["frames"],
        "damaged": d["damaged"],
        "heard_at": d["heard_at"],
    }


class MapFeed:
    """The current payload and a change counter the event stream waits on."""

    def __init__(self, store: StationStore, threshold: float, broker: Any, token: str | None):
        self.store = store
        self.threshold = threshold
        self.broker = broker  # .address, .connected (Event), .last_error: the subscriber
        self.token = token
        self.version = 0
        self._cond = threading.Condition()
        self._built: tuple[int, dict[str, Any]] | None = None
        self._build_lock = threading.Lock()
        # fixed once frames are placed: a projection that moved with each frame would move the
        # page's view (kept in local metres) under the user
        self._projection: LocalProjection | None = None

    def changed(self) -> None:
        """Something new was stored (any thread)."""
        with self._cond:
            self.version += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the version passes ``seen`` or ``timeout``; return the version."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen, timeout)
            return self.version

    def payload(self) -> tuple[int, dict[str, Any]]:
        """(version, payload) of the current state, built at most once per version."""
        with self._build_lock:
            version = self.version
            if self._built is None or self._built[0] != version:
                self._built = (version, self._build())
            return self._built

    def _thumb_url(self, device_id: str, frame_id: str) -> str:
        # Relative to the page; the token travels along (an <img> cannot send a header).
        url = f"thumb/{quote(device_id, safe='')}/{quote(frame_id, safe='')}"
        return url + (f"?token={quote(self.token, safe='')}" if self.token else "")

    def _build(self) -> dict[str, Any]:
        rows = self.store.frames()
        for r in rows:
            r["flight_id"] = _flight_key(r["device_id"], r.get("flight_id"))
        frames, proj = locate(rows, self.threshold, projection=self._projection)
        if self._projection is None and any(f.located for f in frames):
            self._projection = proj
        data = ReportData(_flights(self.store, rows), frames, proj, None, None, self.threshold)
        payload = build_payload(data, None, top=24)
        located = data.located
        payload["thumbs"] = {
            i: self._thumb_url(f.row["device_id"], f.row["frame_id"])
            for i, f in enumerate(located) if f.row.get("has_thumbnail")
        }
        with_thumb = {(f.row["device_id"], f.row["frame_id"]) for f in data.frames if f.row.get("has_thumbnail")}
        for t in payload["top"]:
            device = t["flight"].split("/", 1)[0]  # a topic level: a device id has no "/"
            if (device, t["frame_id"]) in with_thumb:
                t["thumb"] = self._thumb_url(device, t["frame_id"])
        payload["station"] = {
            "broker": {"address": self.broker.address, "connected": self.broker.connected.is_set(),
                       "error": self.broker.last_error},
            "devices": [_device(d) for d in self.store.devices()],
            "built_at": utcnow(),
        }
        return payload

