"""Google Cloud clients from the sync config: credentials file, ADC, or an emulator endpoint.

Credentials never come from the YAML itself: ``sync.credentials_file`` names a service-account
JSON file (found in systemd's ``$CREDENTIALS_DIRECTORY`` too); without it, application-default
credentials. With an ``endpoint`` (an emulator) the clients are anonymous.
"""

from __future__ import annotations

from typing import Any

from agent.core.config import Config, resolve_secret_path
from sync.base import SyncError, SyncSetupError, TargetUnavailable


def _credentials(cfg: Config, endpoint: str | None) -> tuple[Any, str | None]:
    """Return (credentials, project from the key file) for the google clients."""
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials(), None
    path = resolve_secret_path(cfg.sync.credentials_file)
    if path is None:
        return None, None  # the client libraries find ADC themselves
    if not path.exists():
        raise SyncSetupError(f"sync.credentials_file {path} does not exist")
    from google.oauth2 import service_account

    creds = service_account.Credentials.from_service_account_file(
        str(path), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    return creds, creds.project_id


def storage_client(cfg: Config) -> Any:
    from google.cloud import storage

    endpoint = cfg.sync.gcs.endpoint
    creds, project = _credentials(cfg, endpoint)
    options = {"api_endpoint": endpoint} if endpoint else None
    return storage.Client(
        project=project or cfg.sync.bigquery.project or ("skysift" if endpoint else None),
        credentials=creds,
        client_options=options,
    )


def bigquery_client(cfg: Config) -> Any:
    from google.cloud import bigquery

    endpoint = cfg.sync.bigquery.endpoint
    creds, _ = _credentials(cfg, endpoint)
    options = {"api_endpoint": endpoint} if endpoint else None
    return bigquery.Client(
        project=cfg.sync.bigquery.project,
        credentials=creds,
        client_options=options,
        location=cfg.sync.bigquery.location,
    )


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying as an outage (network, 5xx, 429, 408, a 403 for quota) vs.
    programming errors and setup problems."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as aexc

    from sync.quota import reason_of

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if reason_of(exc) is not None:
        # 403 quotaExceeded / rateLimitExceeded: a spent quota, not missing credentials
        return True
    if isinstance(exc, aexc.TransportError):
        return True
    if isinstance(exc, gexc.GoogleAPICallError):
        code = getattr(exc, "code", None) or 0
        return code in (408, 429) or code >= 500
    return isinstance(exc, gexc.RetryError)


def wrap_error(exc: Exception, what: str) -> SyncError:
    """A Google client error as the sync error the loop acts on: transient (retry with backoff),
    setup (missing table or credentials: say what to do), or plain. One rule for the REST
    clients and the gRPC Write API: gRPC's PermissionDenied and Unauthenticated are subclasses of
    Forbidden and Unauthorized in google.api_core."""
    from google.api_core import exceptions as gexc

    if is_transient(exc):
        return TargetUnavailable(f"{what}: {exc}")
    if isinstance(exc, (gexc.NotFound, gexc.Forbidden, gexc.Unauthorized)):
        return SyncSetupError(f"{what}: {exc} (run `skysift sync init`, check the credentials)")
    return SyncError(f"{what}: {exc}")
