"""Secrets are never stored, printed or logged (API.md, "Remotes"; issue 16, point 4).

Real output only: the config file, ``repr``, the installed ``mv`` run in a subprocess,
error messages, and the DEBUG log records of s3fs / fsspec / botocore / aiobotocore
during a real push to the moto S3 server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import modelvault
from modelvault import remotes
from modelvault.remote.transport import public_url, redact

SECRET = "hunter2-Zq9"  # never to be seen anywhere
URLS_WITH_PASSWORDS = [
    f"s3://AKIAEXAMPLE:{SECRET}@bucket/p",
    f"https://user:{SECRET}@host/models",
    f"s3://AKIAEXAMPLE:wJal/{SECRET}+x@bucket/p",  # AWS secrets hold '/' and '+'
    f"ftp://user:{SECRET}@127.0.0.1:21/m",
    f"sftp://deploy:{SECRET}@host:22/srv",
]
SECRET_OPTIONS: list[dict[str, Any]] = [
    {"headers": {"Authorization": f"Bearer {SECRET}"}},
    {"connection_string": f"AccountName=a;AccountKey={SECRET}"},
    {"passphrase": SECRET},
    {"client_kwargs": {"aws_secret_access_key": SECRET}},
    {"storage_options": {"nested": {"password": SECRET}}},
    {"endpoint_url": f"http://minio:{SECRET}@127.0.0.1:9000"},
    {"cookies": {"session": SECRET}},
    {"account_key": SECRET},
    {"sas_token": SECRET},
    {"private_key": SECRET},
]


def _config_text(store: modelvault.Store) -> str:
    return (store.path / "config.json").read_text()


@pytest.mark.parametrize("url", URLS_WITH_PASSWORDS)
def test_url_with_password_is_refused_and_not_echoed(store: modelvault.Store, url: str) -> None:
    with pytest.raises(modelvault.InvalidInput) as info:
        remotes.add("origin", url, store=store)
    assert isinstance(info.value, ValueError)
    assert SECRET not in str(info.value)
    assert "password" in str(info.value)
    assert remotes.list(store=store) == []
    assert SECRET not in _config_text(store)


def test_user_without_password_and_plain_urls_are_accepted(store: modelvault.Store) -> None:
    remotes.add("a", "sftp://deploy@host/srv/models", store=store)
    remotes.add("b", "http://host:8080/path@v2/x", store=store)  # a port, not a password
    remotes.add("c", "s3://bucket/keys/a:b@c", store=store)  # ':' and '@' in a key
    assert [r.url for r in remotes.list(store=store)] == [
        "sftp://deploy@host/srv/models",
        "http://host:8080/path@v2/x",
        "s3://bucket/keys/a:b@c",
    ]


@pytest.mark.parametrize("options", SECRET_OPTIONS)
def test_secret_options_are_refused(store: modelvault.Store, options: dict[str, Any]) -> None:
    with pytest.raises(modelvault.InvalidInput, match="credentials") as info:
        remotes.add("origin", "s3://bucket/p", store=store, **options)
    assert SECRET not in str(info.value)
    assert SECRET not in _config_text(store)


def test_harmless_options_are_kept(store: modelvault.Store) -> None:
    options = {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": False,
        "requester_pays": True,
        "s3_additional_kwargs": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x"},
        "config_kwargs": {"read_timeout": 120},
        "client_kwargs": {"region_name": "eu-west-1"},
        "version_aware": False,
    }
    remotes.add("origin", "s3://bucket/p", store=store, **options)
    assert remotes.get("origin", store=store).options == options


def _hand_written_secrets(store: modelvault.Store) -> None:
    """A config written by hand (or by an older modelvault) holding secrets."""
    doc = json.loads(_config_text(store))
    doc["remotes"] = {
        "origin": {
            "url": f"s3://AKIAEXAMPLE:{SECRET}@bucket/p",
            "options": {
                "secret": SECRET,
                "client_kwargs": {"aws_secret_access_key": SECRET, "region_name": "r1"},
                "headers": {"Authorization": SECRET},
                "endpoint_url": f"http://u:{SECRET}@127.0.0.1:9",
            },
        }
    }
    (store.path / "config.json").write_text(json.dumps(doc))


def test_repr_of_listed_remotes_hides_secrets(store: modelvault.Store) -> None:
    _hand_written_secrets(store)
    shown = repr(remotes.list(store=store))
    assert SECRET not in shown and SECRET not in str(remotes.list(store=store))
    assert "s3://bucket/p" in shown and "r1" in shown


def test_push_to_a_url_with_a_password_does_not_echo_it(
    store: modelvault.Store, tmp_path: Path
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x" * 1000)
    store.save(tmp_path / "m", "s:v1")
    calls = (
        lambda url: store.push("s:v1", url),
        lambda url: store.pull("s:v1", url),
        lambda url: store.list_remote(url),
    )
    for url in URLS_WITH_PASSWORDS:
        for call in calls:
            with pytest.raises(modelvault.InvalidInput) as info:
                call(url)
            assert SECRET not in str(info.value), str(info.value)
            assert SECRET not in repr(info.value)


def test_public_url_and_redact() -> None:
    for url in URLS_WITH_PASSWORDS:
        assert SECRET not in public_url(url)
        assert SECRET not in redact(f"error at {url}: boom; also '{url}'")
    assert public_url("s3://AKIA:s3cr3t@bucket/p") == "s3://bucket/p"
    assert public_url("memory://x") == "memory://x"
    assert redact("no url here") == "no url here"


# -- the CLI, as a user runs it ---------------------------------------------------------


def _mv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("mv")
    return subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def env(_isolated_home: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "MODELVAULT_REMOTE"}
    out.update(MODELVAULT_HOME=str(_isolated_home), NO_COLOR="1")
    return out


def test_cli_remote_add_and_list_never_show_a_secret(
    env: dict[str, str], _isolated_home: Path
) -> None:
    for url in URLS_WITH_PASSWORDS:
        out = _mv(env, "remote", "add", "origin", url)
        assert out.returncode != 0
        assert SECRET not in out.stdout + out.stderr
        assert "password" in out.stderr
    for opt in (f"passphrase={SECRET}", f'headers={{"Authorization": "{SECRET}"}}'):
        out = _mv(env, "remote", "add", "origin", "s3://b/p", "-O", opt)
        assert out.returncode != 0 and SECRET not in out.stdout + out.stderr
    ok = _mv(env, "remote", "add", "team", "s3://b/p", "-O", "endpoint_url=http://127.0.0.1:9")
    assert ok.returncode == 0, ok.stderr
    # secrets written by hand (or by an older version) stay hidden in both listings
    _hand_written_secrets(modelvault.Store(_isolated_home))
    table = _mv(env, "remote", "list")
    as_json = _mv(env, "remote", "list", "-o", "json")
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    for out in (table, as_json):
        assert SECRET not in out.stdout + out.stderr
        assert "s3://bucket/p" in out.stdout and "r1" in out.stdout
    docs = json.loads(as_json.stdout)
    assert [d["name"] for d in docs] == ["origin"]


def test_cli_push_to_a_url_with_a_password(
    env: dict[str, str], tmp_path: Path, _isolated_home: Path
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x" * 1000)
    modelvault.Store(_isolated_home).save(tmp_path / "m", "s:v1")
    for url in URLS_WITH_PASSWORDS[:3]:
        out = _mv(env, "push", "s:v1", url)
        assert out.returncode != 0
        assert SECRET not in out.stdout + out.stderr, out.stderr
        assert "Traceback" not in out.stderr


# -- logs ------------------------------------------------------------------------------

_LOGGERS = ("s3fs", "fsspec", "botocore", "aiobotocore", "urllib3", "aiohttp", "modelvault")


def test_debug_logs_of_a_real_s3_push_hold_no_secret(
    store: modelvault.Store,
    tmp_path: Path,
    s3_bucket: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto accepts any key pair: use a secret key we can look for in the records
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket["endpoint_url"])
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(os.urandom(50_000))
    store.save(tmp_path / "m", "s:v1")
    caplog.set_level(logging.DEBUG)
    for name in _LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    remote = s3_bucket["url"] + "/models"
    store.push("s:v1", remote)
    bucket = s3_bucket["url"].removeprefix("s3://")
    with pytest.raises(modelvault.InvalidInput):
        store.push("s:v1", f"s3://AKIAEXAMPLEID:{SECRET}@{bucket}/other")
    with pytest.raises(modelvault.InvalidInput):
        store.pull("s:v1", f"s3://AKIAEXAMPLEID:wJal/{SECRET}@{bucket}/models")
    assert store.list_remote(remote) == [modelvault.Tag("s", "v1")]
    records = caplog.records
    by = {r.name.split(".")[0] for r in records}
    assert {"s3fs", "botocore", "aiobotocore"} <= by, by  # the test saw real debug output
    for r in records:
        text = r.getMessage()
        assert SECRET not in text, (r.name, text[:300])


def test_hand_written_endpoint_with_a_password_is_never_used(
    store: modelvault.Store,
    tmp_path: Path,
    s3_bucket: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x" * 1000)
    store.save(tmp_path / "m", "s:v1")
    endpoint = s3_bucket["endpoint_url"].replace("http://", f"http://u:{SECRET}@")
    doc = json.loads(_config_text(store))
    doc["remotes"] = {
        "origin": {
            "url": s3_bucket["url"],
            "options": {"client_kwargs": {"endpoint_url": endpoint}},
        }
    }
    (store.path / "config.json").write_text(json.dumps(doc))
    caplog.set_level(logging.DEBUG)
    for call in (
        lambda: store.push("s:v1"),
        lambda: store.pull("s:v1"),
        lambda: store.list_remote(),
    ):
        with pytest.raises(modelvault.InvalidInput, match=r"client_kwargs\.endpoint_url") as info:
            call()
        assert SECRET not in str(info.value)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_export_and_import_refuse_a_url_with_a_password(
    store: modelvault.Store, tmp_path: Path
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x" * 1000)
    store.save(tmp_path / "m", "s:v1")
    for url in URLS_WITH_PASSWORDS[:3]:
        target = url.rstrip("/") + "/s.bentomodel"
        for call in (
            lambda target=target: store.export_model("s:v1", target),
            lambda target=target: store.import_model(target),
        ):
            with pytest.raises(modelvault.InvalidInput) as info:
                call()
            assert SECRET not in str(info.value)
