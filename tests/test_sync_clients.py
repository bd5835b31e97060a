"""Credentials for the cloud clients: a service-account file (also via systemd's
$CREDENTIALS_DIRECTORY), application-default credentials, or anonymous for an emulator."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.core.config import parse_config
from sync.base import SyncSetupError
from sync.clients import _credentials, bigquery_client, storage_client


def _service_account(path, project="proj-from-key"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "k1",
        "private_key": pem, "client_email": f"skysift@{project}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


def test_service_account_file_found_in_credentials_directory(tmp_path, monkeypatch):
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    _service_account(creds_dir / "gcs-key.json")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds_dir))
    cfg = parse_config({"sync": {"credentials_file": "/etc/skysift/gcs-key.json",
                                 "gcs": {"bucket": "b"}, "bigquery": {"project": "p"}}})
    creds, project = _credentials(cfg, None)
    assert project == "proj-from-key"
    assert creds.service_account_email == "skysift@proj-from-key.iam.gserviceaccount.com"
    assert storage_client(cfg).project == "proj-from-key"
    assert bigquery_client(cfg).project == "p"  # the configured project wins for BigQuery


def test_missing_credentials_file_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = parse_config({"sync": {"credentials_file": str(tmp_path / "nope.json")}})
    with pytest.raises(SyncSetupError, match="nope.json does not exist"):
        _credentials(cfg, None)


def test_endpoint_means_anonymous_credentials(tmp_path):
    from google.auth.credentials import AnonymousCredentials

    cfg = parse_config({"sync": {"credentials_file": str(tmp_path / "ignored.json"),
                                 "gcs": {"bucket": "b", "endpoint": "http://127.0.0.1:1"}}})
    creds, _ = _credentials(cfg, cfg.sync.gcs.endpoint)
    assert isinstance(creds, AnonymousCredentials)
