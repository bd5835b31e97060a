"""The ground station (``skysift station``): a small web service on a laptop that listens to
every device on the broker, keeps what it hears in its own station.db (:mod:`agent.station
.store`), and serves the damage map of ``skysift report`` live (:mod:`agent.station.feed`,
:mod:`agent.station.server`), fed by the broker (:mod:`agent.station.subscriber`)."""

from agent.station.app import Station
from agent.station.feed import MapFeed
from agent.station.server import StationError, StationServer
from agent.station.store import StationStore, StationStoreError
from agent.station.subscriber import StationSubscriber, parse_topic, topic_filters

__all__ = [
    "MapFeed",
    "Station",
    "StationError",
    "StationServer",
    "StationStore",
    "StationStoreError",
    "StationSubscriber",
    "parse_topic",
    "topic_filters",
]
