"""``skysift station``'s parts put together: station.db, the broker subscriber, the web server.

They start in dependency order (the database, the map feed, the server, then the broker, so
that the first messages already have a page to reach) and stop in reverse.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.core.config import Config
from agent.station.feed import MapFeed
from agent.station.server import StationServer, parse_listen, read_token
from agent.station.store import StationStore
from agent.station.subscriber import StationSubscriber

log = logging.getLogger(__name__)


class Station:
    """The running station. Everything that can be wrong (the address, the token, the broker
    settings, the database) is an error from the constructor, before anything starts."""

    def __init__(self, cfg: Config, db_path: Path, listen: str, token_file: Path | None, *,
                 threshold: float, title: str = "Ground station: live damage map"):
        host, port = parse_listen(listen)
        token = read_token(token_file, host)
        self.store = StationStore(db_path)
        try:
            self.feed = MapFeed(self.store, threshold, None, token)
            self.subscriber = StationSubscriber(cfg.mqtt, self.store, self.feed.changed)
            self.feed.broker = self.subscriber
            self.server = StationServer((host, port), self.feed, token, title)
        except BaseException:
            self.store.close()
            raise

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.serve()
        self.subscriber.start()
        log.info("station: the live map is at %s (broker %s, prefix %s/, database %s)",
                 self.url, self.subscriber.address, self.subscriber.prefix, self.store.path)

    def stop(self) -> None:
        self.subscriber.stop()
        self.server.stop()
        self.store.close()
