"""Damage on ATAK: CoT markers (:mod:`agent.live.cot`) sent with pytak, from the SQLite outbox.

- Fed like the MQTT frames feed (:mod:`agent.live.outbox`): a frame is pending for the ``tak``
  delivery target until its markers were sent, so after an outage, or a restart, sending goes
  on from the oldest frame not yet sent and nothing is lost. Every classified frame is marked
  (a frame without damage sends no event); order is commit order.
- "Sent" means the kernel took the bytes: for TCP and TLS the stream's write buffer is
  drained to the socket (``drain()`` with a write-buffer limit of 0), for UDP ``sendto``
  returned. CoT has no acknowledgement, so events in the kernel's buffer when a TCP link
  breaks can be lost without a sign; on UDP (multicast SA) nothing ever says whether anyone
  listened. Resending is harmless: uids are stable, so a marker received twice replaces itself.
- Threads: ``tak-sender`` runs an asyncio loop (pytak is asyncio) and owns its Store; the
  ingest thread only wakes it. A TAK server that is away is retried with the shared backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
import warnings
from configparser import ConfigParser, SectionProxy
from typing import Any

with warnings.catch_warnings():
    # pytak warns at import that aiohttp is missing: only its Marti HTTP API needs it, unused here.
    warnings.filterwarnings("ignore", message=".*aiohttp.*", category=UserWarning)
    import pytak

from agent.core.backoff import Backoff
from agent.core.config import Config
from agent.core.config_tak import TakConfig, is_multicast
from agent.core.errors import ConfigError
from agent.core.runtime import AgentContext
from agent.live.cot import event_xml, markers
from agent.store.db import Store
from models.card import load_card
from sync.pending import TAK

log = logging.getLogger(__name__)

#: frames read from the outbox per pass
BATCH_ROWS = 200
#: a TAK server that takes longer to accept a connection counts as down
CONNECT_TIMEOUT_S = 10.0
#: at stop, seconds to go on sending what is still owed (what is left stays for the next run)
DRAIN_S = 5.0


class LinkLost(ConnectionError):
    """The TAK server closed the connection."""


def pytak_config(tak: TakConfig) -> SectionProxy:
    """The pytak settings (``COT_URL``, ``PYTAK_TLS_*``) of the ``tak:`` section."""
    url = tak.url
    if url.startswith("udp://"):
        # Write-only: otherwise pytak also binds a reader on the group's port, which we never read.
        url = "udp+wo://" + url.removeprefix("udp://")
    values = {"COT_URL": url, "TAK_PROTO": "0", "PYTAK_MULTICAST_TTL": str(tak.multicast_ttl)}
    if url.startswith("tls://"):
        values.update({
            "PYTAK_TLS_CLIENT_CERT": str(tak.tls.cert_file),
            "PYTAK_TLS_CLIENT_KEY": str(tak.tls.key_file),
            "PYTAK_TLS_CLIENT_CAFILE": str(tak.tls.ca_file),
        })
    parser = ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # pytak's keys are upper case
    parser["skysift"] = values
    return parser["skysift"]


class Link:
    """One open connection to the TAK server (or the UDP socket), written through pytak."""

    def __init__(self, reader: Any, writer: Any, config: SectionProxy):
        self.writer = writer
        self.tx = pytak.TXWorker(asyncio.Queue(), config, writer)
        self._reader_task: asyncio.Task | None = None
        transport = getattr(writer, "transport", None)
        if transport is not None:
            # drain() then waits until every byte went to the kernel: what "sent" means here.
            transport.set_write_buffer_limits(high=0)
        if isinstance(reader, asyncio.StreamReader):
            self._reader_task = asyncio.create_task(self._discard(reader))

    @classmethod
    async def open(cls, config: SectionProxy) -> Link:
        reader, writer = await asyncio.wait_for(pytak.protocol_factory(config), CONNECT_TIMEOUT_S)
        return cls(reader, writer, config)

    @staticmethod
    async def _discard(reader: asyncio.StreamReader) -> None:
        # A TAK server forwards other clients' events to us: read them so its buffers never
        # fill, and so that its closing the connection is noticed (a write alone may not fail).
        while await reader.read(65536):
            pass

    @property
    def lost(self) -> bool:
        return self._reader_task is not None and self._reader_task.done()

    async def send(self, data: bytes) -> None:
        if self.lost:
            raise LinkLost("the TAK server closed the connection")
        await self.tx.send_data(data)

    def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self.writer.close()


class TakSender:
    """The TAK component: see the module docstring. Built only when ``tak.enabled``."""

    name = "tak"

    def __init__(self, cfg: Config):
        if not cfg.tak.enabled:
            raise ConfigError("tak.enabled is false: TAK is off")
        self.cfg = cfg
        self.config = pytak_config(cfg.tak)
        # The model card's threshold, never a constant: a retrained model may move it.
        self.threshold = load_card(cfg.model.path).p_damaged_threshold
        self.callsign = cfg.tak.callsign or f"skysift-{cfg.device_id}"
        self.connected = threading.Event()
        #: CoT events written since start
        self.events_sent = 0
        self.ctx: AgentContext | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._backoff = Backoff(f"TAK server {cfg.tak.url}", cap_s=60.0, remind_every_s=60.0)
        self._thread: threading.Thread | None = None

    def start(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        ctx.bus.subscribe("frames_committed", self._on_frames_committed)
        self._thread = threading.Thread(target=self._run, name="tak-sender", daemon=True)
        self._thread.start()
        kind = "multicast group" if is_multicast(self.cfg.tak.url) else "server"
        log.info("TAK: sending damaged %s to the %s %s", self.cfg.tak.what, kind, self.cfg.tak.url)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=DRAIN_S + CONNECT_TIMEOUT_S + 5)

    def _on_frames_committed(self, **_: Any) -> None:
        self._wake.set()

    def _link_state(self, state: str, error: str | None = None) -> None:
        if self.ctx is not None:
            self.ctx.bus.publish("sync_state", target=TAK, state=state, error=error)

    # --- the tak-sender thread -----------------------------------------------------------------
    def _run(self) -> None:
        store = Store(self.cfg.db_path)
        try:
            asyncio.run(self._main(store))
        except Exception:
            log.exception("TAK sender stopped")
        finally:
            store.close()

    async def _main(self, store: Store) -> None:
        while not self._stop.is_set():
            try:
                link = await Link.open(self.config)
            except (OSError, asyncio.TimeoutError, SyntaxError, ValueError) as exc:
                # SyntaxError/ValueError: how pytak reports an unusable URL or certificate.
                if self._backoff.failure(f"cannot connect: {exc}"):
                    self._link_state("down", str(exc))
                await asyncio.to_thread(self._stop.wait, self._backoff.wait_s())
                continue
            self._backoff.success()
            self.connected.set()
            self._link_state("ok")
            try:
                await self._serve(store, link)
            except (OSError, LinkLost) as exc:
                if self._backoff.failure(f"link lost: {exc}"):
                    self._link_state("down", str(exc))
            finally:
                self.connected.clear()
                link.close()
        owed = store.count_pending(TAK)
        if owed:
            log.warning("TAK: %d frames not sent: they stay in the outbox for the next run", owed)

    async def _serve(self, store: Store, link: Link) -> None:
        """Send while connected; at stop, go on for up to :data:`DRAIN_S`, then return."""
        deadline: float | None = None
        while True:
            if self._stop.is_set() and deadline is None:
                deadline = time.monotonic() + DRAIN_S
            rows = await self._send_batch(store, link)
            if deadline is not None and (rows < BATCH_ROWS or time.monotonic() > deadline):
                return
            if rows < BATCH_ROWS:
                await asyncio.to_thread(self._wake.wait, 0.5)
                self._wake.clear()
                if link.lost:
                    raise LinkLost("the TAK server closed the connection")

    async def _send_batch(self, store: Store, link: Link) -> int:
        """Send the markers of the oldest pending frames; return how many frames were read."""
        rows = store.pending(TAK, limit=BATCH_ROWS)
        done: list[str] = []
        tak = self.cfg.tak
        try:
            for row in rows:
                now = dt.datetime.now(dt.timezone.utc)
                for marker in markers(row, self.cfg.device_id, tak.what, self.threshold):
                    await link.send(event_xml(marker, self.callsign, tak.stale_s, now))
                    self.events_sent += 1
                done.append(row["frame_id"])
        finally:
            # What was written before a failure is sent: a resend would be harmless, but the
            # marks keep the next pass from repeating a whole batch after every short outage.
            if done:
                store.mark_delivered(TAK, done)
        return len(rows)
