"""The ``tak:`` section: damage markers sent to ATAK as Cursor on Target (agent.live.tak).

Kept beside :mod:`agent.core.config` (which embeds it) so that module stays one sitting long.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from agent.core.config_values import check_host

#: a marker staler than a month is a typo (ATAK drops stale markers from the map)
STALE_MAX_S = 30 * 86_400.0
#: what ``tak.url`` may start with: a TAK server's streaming input, or plain UDP (the SA
#: multicast group 239.2.3.1:6969 that ATAK devices on one network listen to)
TAK_SCHEMES = ("tcp", "tls", "udp")


class _TakSection(BaseModel):
    # The same rules as every other section (agent.core.config._Section): typos fail loudly.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class TakTlsConfig(_TakSection):
    # A TAK server's TLS input asks for a client certificate (pytak always sends one), and the
    # server's certificate is verified against ca_file: the three are needed for tls://.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def check_tak_url(url: str) -> str:
    """``tcp://host:port``, ``tls://host:port`` or ``udp://host:port`` with a port from 1 to
    65535 and nothing after it; ``udp://`` may name a multicast group."""
    parts = urlsplit(url)
    if parts.scheme not in TAK_SCHEMES:
        raise ValueError(f"{url!r}: the scheme must be one of {', '.join(s + '://' for s in TAK_SCHEMES)}")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r}: only scheme://host:port is allowed")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number from 1 to 65535") from None
    if port is None or not 1 <= port <= 65535 or not parts.hostname:
        raise ValueError(f"{url!r}: a host and a port from 1 to 65535 are needed")
    check_host(parts.hostname)
    return url


def is_multicast(url: str) -> bool:
    """Whether ``url`` (already checked) names an IP multicast group."""
    try:
        return ipaddress.ip_address(urlsplit(url).hostname or "").is_multicast
    except ValueError:
        return False


class TakConfig(_TakSection):
    enabled: bool = False
    url: Annotated[str, AfterValidator(check_tak_url)] = Field(
        default="tcp://127.0.0.1:8087",
        description="tcp://host:port, tls://host:port or udp://239.2.3.1:6969 (SA multicast).",
    )
    what: Literal["tiles", "frames"] = Field(
        default="tiles", description="One marker per damaged tile, or one per damaged frame."
    )
    stale_s: float = Field(default=3600.0, ge=10, le=STALE_MAX_S)
    callsign: str | None = Field(
        default=None, min_length=1, max_length=64, description="null: skysift-<device_id>."
    )
    multicast_ttl: int = Field(default=1, ge=1, le=255)
    tls: TakTlsConfig = Field(default_factory=TakTlsConfig)

    @model_validator(mode="after")
    def _check(self) -> TakConfig:
        files = {k: getattr(self.tls, k) for k in ("ca_file", "cert_file", "key_file")}
        if self.url.startswith("tls://"):
            missing = [k for k, v in files.items() if v is None]
            if missing:
                raise ValueError(f"tls:// needs tak.tls.{', tak.tls.'.join(missing)}")
        elif any(v is not None for v in files.values()):
            raise ValueError("tak.tls.* is used only with a tls:// url")
        return self
