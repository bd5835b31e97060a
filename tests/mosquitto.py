"""A real Mosquitto broker for tests: own process, own config file, free loopback port.

Never the system service: each broker is started here with a generated config (Mosquitto 2
listens on nothing without an explicit ``listener``) and stopped by its pid. The TLS variant
makes a throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate
with the ``cryptography`` package, and a password file with ``mosquitto_passwd``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from util import free_port, stop_pid, wait_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
USER = "skysift"
PASSWORD = "s3cret-test-pw"


@dataclass
class Broker:
    port: int
    workdir: Path
    conf: Path
    proc: subprocess.Popen | None = None
    tls: TlsFiles | None = None
    password_file: Path | None = None
    host: str = "127.0.0.1"

    def start(self) -> Broker:
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - kept open by the child
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        try:
            wait_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log()}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None

    def log(self) -> str:
        p = self.workdir / "mosquitto.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the broker uses: verification must fail with it


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(subject_cn: str, key, issuer_cert, issuer_key, *, ca: bool, sans=None, client=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def make_tls_files(d: Path, server_names: list[str] | None = None) -> TlsFiles:
    """A test CA, a server certificate for 127.0.0.1 and localhost (or for ``server_names``:
    DNS names, to test a host name mismatch), a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    d.mkdir(parents=True, exist_ok=True)

    def pem(cert, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = _key()
    ca = _cert("skysift test CA", ca_key, None, None, ca=True)
    srv_key = _key()
    sans = [x509.DNSName(n) for n in server_names] if server_names else [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    srv = _cert(sans[0].value if server_names else "127.0.0.1", srv_key, ca, ca_key, ca=False, sans=sans)
    cli_key = _key()
    cli = _cert("skysift-agent", cli_key, ca, ca_key, ca=False, client=True)
    other_key = _key()
    other = _cert("some other CA", other_key, None, None, ca=True)
    files = TlsFiles(
        ca=pem(ca, d / "ca.crt"),
        server_cert=pem(srv, d / "server.crt"),
        server_key=d / "server.key",
        client_cert=pem(cli, d / "client.crt"),
        client_key=d / "client.key",
        other_ca=pem(other, d / "other-ca.crt"),
    )
    _write_key(srv_key, files.server_key)
    _write_key(cli_key, files.client_key)
    return files


def make_password_file(path: Path, user: str = USER, password: str = PASSWORD,
                       more: dict[str, str] | None = None) -> Path:
    """A Mosquitto password file for ``user`` and the (user, password) pairs in ``more``."""
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True,
                   capture_output=True)
    for name, pw in (more or {}).items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), name, pw], check=True, capture_output=True)
    path.chmod(0o600)
    return path


def _run_as_lines() -> list[str]:
    # Started as root, Mosquitto drops to the "mosquitto" user, which cannot read files in a
    # root-only pytest temp dir: stay the user we are (tests only).
    return ["user root"] if os.geteuid() == 0 else []


def make_broker(
    workdir: Path, *, tls: bool = False, require_certificate: bool = False, port: int | None = None,
    server_names: list[str] | None = None, password_file: Path | None = None,
    acl_file: Path | None = None,
) -> Broker:
    """Write a config for a broker on a free loopback port (not started yet). With ``tls``:
    test CA (a server certificate for ``server_names`` if given), password file, and optionally
    client certificates required (``require_certificate``). Without: anonymous, unless a
    ``password_file`` is given; ``acl_file`` applies in both cases."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    lines = [
        f"listener {port} 127.0.0.1",
        "persistence false",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        *_run_as_lines(),
    ]
    broker = Broker(port=port, workdir=workdir, conf=workdir / "mosquitto.conf")
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    if tls:
        broker.tls = make_tls_files(workdir / "tls", server_names)
        broker.password_file = make_password_file(workdir / "passwd")
        lines += [
            f"cafile {broker.tls.ca}",
            f"certfile {broker.tls.server_cert}",
            f"keyfile {broker.tls.server_key}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if require_certificate else 'false'}",
            "allow_anonymous false",
            f"password_file {broker.password_file}",
        ]
    elif password_file is not None:
        broker.password_file = password_file
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines.append("allow_anonymous true")
    broker.conf.write_text("\n".join(lines) + "\n")
    return broker


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A plain broker (anonymous, no TLS) on a free loopback port."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = make_broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_tls(tmp_path: Path):
    """A TLS broker (test CA) with a password file: user ``USER``, password ``PASSWORD``."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = make_broker(tmp_path / "broker-tls", tls=True).start()
    yield broker
    broker.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self):
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """A real paho subscriber that records every message, for assertions."""

    broker: Broker
    topics: list[str]
    messages: list[Received] = field(default_factory=list)
    client: mqtt.Client | None = None
    #: (user, password) for a broker with a password file and no TLS
    auth: tuple[str, str] | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _subscribed: threading.Event = field(default_factory=threading.Event)

    def start(self, **tls_kwargs) -> Subscriber:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{free_port()}")
        if tls_kwargs:
            c.tls_set(**tls_kwargs)
            c.username_pw_set(USER, PASSWORD)
        elif self.auth is not None:
            c.username_pw_set(*self.auth)

        def on_connect(client, userdata, flags, rc, props):
            client.subscribe([(t, 1) for t in self.topics])

        def on_subscribe(client, userdata, mid, rcs, props):
            self._subscribed.set()

        def on_message(client, userdata, msg):
            with self._cond:
                self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
                self._cond.notify_all()

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect(self.broker.host, self.broker.port)
        c.loop_start()
        self.client = c
        assert self._subscribed.wait(10), "test subscriber did not subscribe"
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate, timeout: float = 20.0):
        """Wait until ``predicate(messages)`` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(list(self.messages))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; got {[(m.topic, m.payload[:200]) for m in self.messages]}")
                self._cond.wait(min(left, 0.2))

    def publish(self, topic: str, payload: bytes | str | dict, qos: int = 1) -> None:
        assert self.client is not None
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)
