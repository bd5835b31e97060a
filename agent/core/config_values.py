"""Checks of single configuration values whose syntax pydantic's types cannot express.

Each function returns the (normalised) value or raises ``ValueError`` with the problem; the
config models call them from validators, so the error carries the dotted key path.
"""

from __future__ import annotations

import ipaddress
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

#: the upper bound of a duration in seconds: a value past it is a typo, and some would crash at
#: run time (a wait of .inf seconds raises OverflowError deep inside a thread)
DAY_S = 86_400.0


class Section(BaseModel):
    """The base of every configuration section (agent.core.config and its section modules)."""

    # extra="forbid": a typo such as `modle:` or `tile_size:` must fail loudly, not be ignored.
    # allow_inf_nan=False: `.inf` and `.nan` are valid YAML floats but never a valid setting.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

# OpenVINO has no API that lists every device name it accepts (``available_devices`` lists only
# the hardware present here), so the documented names are kept here. A real device that is absent
# from this host passes this check and is skipped at run time; a typo such as `GPUU` does not.
HARDWARE_DEVICES = ("CPU", "GPU", "NPU")
#: removed from OpenVINO 2023.0 (MYRIAD, HDDL) and 2024.0 (GNA): accepted, skipped at run time
LEGACY_DEVICES = ("MYRIAD", "HDDL", "GNA")
#: dispatch to a list of other devices; AUTO alone picks one itself
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")

# GPU.1; MYRIAD.1.2-MA2480 (a legacy stick named by its USB port)
_HARDWARE = re.compile(rf"(?:{'|'.join(HARDWARE_DEVICES + LEGACY_DEVICES)})(?:\.[0-9A-Z_.-]+)?")
_DEVICE_FORMS = (
    "CPU, GPU[.n], NPU, AUTO[:devices], HETERO:devices, MULTI:devices, BATCH:device[(n)], "
    "or the legacy MYRIAD, HDDL, GNA"
)
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_device(name: str) -> str:
    """One entry of ``model.devices``, upper-cased: ``GPU.1``, ``AUTO:-CPU``, ``BATCH:GPU(4)``."""
    device = name.strip().upper()
    kind, sep, targets = device.partition(":")
    if not sep and (device == "AUTO" or _HARDWARE.fullmatch(device)):
        return device
    if sep and kind in VIRTUAL_DEVICES and targets:
        items = targets.split(",")
        for item in items:
            if kind == "AUTO":
                item = item.removeprefix("-")  # AUTO:-CPU: any device but the CPU
            elif kind == "BATCH":
                item = re.sub(r"\(\d+\)$", "", item)  # BATCH:GPU(4): batches of 4
            if not _HARDWARE.fullmatch(item):
                raise ValueError(f"{kind}: lists unknown device {item!r}; expected {_DEVICE_FORMS}")
        if kind == "BATCH" and len(items) != 1:
            raise ValueError("BATCH: takes one device, e.g. BATCH:GPU(4)")
        return device
    raise ValueError(f"unknown OpenVINO device {name!r}; expected {_DEVICE_FORMS}")


def check_topic_prefix(prefix: str) -> str:
    """A topic prefix to publish under: levels of text, no wildcards; a trailing '/' is dropped."""
    # A trailing '/' is harmless (topics are joined with exactly one) and older configs have it.
    value = prefix.rstrip("/")
    if not value:
        raise ValueError("must not be empty")
    if value.startswith("/"):
        raise ValueError("must not start with '/' (that is an empty first topic level)")
    if "//" in value:
        raise ValueError("has an empty topic level ('//')")
    if "+" in value or "#" in value:
        raise ValueError("must not contain the MQTT wildcards '+' or '#' (a broker refuses them)")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if value.startswith("$"):
        raise ValueError("must not start with '$' (reserved for broker topics such as $SYS)")
    return value


def check_host(host: str) -> str:
    """An IPv4 or IPv6 address or a DNS host name (RFC 1123); ``999.1.1.1`` is neither."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from None
        return host
    name = host.removesuffix(".")
    labels = name.split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv4 address") from None
        return host
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{host!r} is not a valid host name or IP address")
    if labels[-1].isdigit():
        raise ValueError(f"{host!r} is not a valid host name (its last label is all digits)")
    return host


def check_listen(listen: str) -> str:
    """``host:port``, ``[ipv6]:port`` or ``:port`` (127.0.0.1), with a port from 1 to 65535."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError("expected host:port with a port from 1 to 65535, e.g. 127.0.0.1:9108")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host[1:-1]!r} in brackets is not a valid IPv6 address") from None
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets, e.g. [::1]:9108")
    elif host:
        check_host(host)
    return listen


def check_extension(ext: str) -> str:
    """A file extension, normalised to lower case with its dot (``SRT`` -> ``.srt``)."""
    e = "." + ext.strip().lower().lstrip(".")
    if not re.fullmatch(r"\.[a-z0-9_-]{1,15}", e):
        raise ValueError(f"{ext!r} is not a file extension such as .srt")
    return e


def check_timezone(name: str) -> str:
    """An IANA time zone name that this host's time zone database knows."""
    if name == "UTC":
        return name  # always valid, even on a host without a time zone database
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Rome"
        ) from None
    return name
