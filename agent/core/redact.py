"""Secrets out of URLs before they are logged or stored.

A camera URL such as ``rtsp://admin:s3cret@10.0.0.2/stream1`` carries its password. The agent
opens the stream with the full URL, but everything it logs, stores (``frames.source``,
``flights.source``) or publishes from there on (MQTT, BigQuery) uses :func:`redact_url`.

The user name is kept (``rtsp://admin:***@10.0.0.2/stream1``): it says which account the
camera was opened with, which is what an operator needs to debug a login, and it is not the
secret. User info without a password (``https://TOKEN@host``) is usually a token, so it is
replaced as a whole (``https://***@host``). Query parameters that name a secret
(``?user=admin&pwd=...``, as some IP cameras take them) keep their name and lose their value.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://authority: the authority ends at the first "/", "?" or "#" (RFC 3986), which is
# also where OpenCV's FFmpeg backend stops looking for the user info.
_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#\s]+)")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:password|passwd|pwd|pass|secret|token|api_?key|key|auth)=)[^&;#\s]*",
    re.IGNORECASE,
)


def _mask_userinfo(match: re.Match[str]) -> str:
    authority = match["authority"]
    if "@" not in authority:
        return match[0]
    # rpartition: a password with a raw "@" in it ends at the last one, as in the URL parsers.
    userinfo, _, host = authority.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    masked = f"{user}:{MASK}" if colon else MASK
    return f"{match['scheme']}{masked}@{host}"


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (see the module doc).

    Works on any string (a bare URL, a log message quoting one); text without a URL is
    returned unchanged.
    """
    if "://" not in text:
        return text
    return _SECRET_PARAM.sub(rf"\g<name>{MASK}", _AUTHORITY.sub(_mask_userinfo, text))
