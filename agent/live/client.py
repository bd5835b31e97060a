"""The paho client of the MQTT live feed: identity, last will, credentials, TLS, reconnect backoff.

Nothing here connects: :func:`build_client` returns a configured client, and a bad setting
(unreadable password file, half a client certificate) is a :class:`ConfigError` before
anything starts. :func:`connect_error` names why a connection attempt failed (a TLS certificate
problem is not an unreachable broker), and :class:`PahoLogFilter` keeps paho's own logger
from repeating what the publisher's rate-limited link log already says.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.config import Config, MqttConfig, resolve_secret_path
from agent.core.errors import ConfigError
from agent.live.payloads import Topics, dumps, offline_status

log = logging.getLogger(__name__)

#: frame messages published but not yet acknowledged; beyond this the publisher waits for acks
#: (bounds paho's memory and what is re-sent after a reconnect)
MAX_INFLIGHT = 100
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
PASSWORD_ENV = "SKYSIFT_MQTT_PASSWORD"


def read_password(mc: MqttConfig) -> str | None:
    """The broker password: ``mqtt.password_file`` (also found by name in systemd's
    ``$CREDENTIALS_DIRECTORY``), else ``$SKYSIFT_MQTT_PASSWORD``, else none."""
    if mc.password_file is not None:
        path = resolve_secret_path(mc.password_file)
        assert path is not None
        try:
            # Files written with `echo` end in a newline that is not part of the password.
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"mqtt.password_file: cannot read {path}: {exc.strerror or exc}"
            ) from None
    return os.environ.get(PASSWORD_ENV) or None


class PahoLogFilter(logging.Filter):
    """Drops paho's "Client is not connected" error, which it logs on every reconnect attempt
    while the broker is away: the publisher's LinkLog already logs the loss, rate-limited
    reminders and the recovery."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_PAHO_FILTER = PahoLogFilter()


def connect_error(exc: BaseException | None) -> str:
    """Why a connection attempt failed, in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        # verify_message: "unable to get local issuer certificate" (unknown CA), "Hostname
        # mismatch, ...", "IP address mismatch, ...", "certificate has expired".
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker host: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        return f"cannot reach the broker: {exc.strerror or exc}"
    return "cannot reach the broker"


def build_client(cfg: Config, topics: Topics) -> mqtt.Client:
    """A configured but unconnected paho client: will, auth, TLS, backoff."""
    mc = cfg.mqtt
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=mc.client_id or f"skysift-{cfg.device_id}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    paho_log = logging.getLogger(f"{__name__}.paho")
    if _PAHO_FILTER not in paho_log.filters:
        paho_log.addFilter(_PAHO_FILTER)
    client.enable_logger(paho_log)
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    client.will_set(topics.status, dumps(offline_status(cfg.device_id)), qos=1, retain=True)
    apply_credentials(client, mc)
    return client


def apply_credentials(client: mqtt.Client, mc: MqttConfig) -> None:
    """The user, password and TLS of ``mqtt.*`` on a paho client (the agent's and the station's)."""
    password = read_password(mc)
    if mc.username:
        client.username_pw_set(mc.username, password)
    elif password:
        log.warning("an MQTT password is set but mqtt.username is not: connecting anonymously")
    if mc.tls.ca_file is not None:
        if (mc.tls.cert_file is None) != (mc.tls.key_file is None):
            raise ConfigError("mqtt.tls: set both cert_file and key_file, or neither")
        try:
            # Certificate and host name verification stay on: never tls_insecure_set(True).
            client.tls_set(
                ca_certs=str(mc.tls.ca_file),
                certfile=str(mc.tls.cert_file) if mc.tls.cert_file else None,
                keyfile=str(mc.tls.key_file) if mc.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"mqtt.tls: cannot load the certificates: {exc}") from None
    elif mc.tls.cert_file or mc.tls.key_file:
        raise ConfigError("mqtt.tls: cert_file/key_file need ca_file (TLS is on only with a CA)")
