"""Resolving `spec.analysis.prometheus` into a connection, and what goes over the wire, at the HTTP
boundary (the fake Prometheus records headers). Secrets come from a dict standing in for the API server;
the real Secrets, TLS and basic auth are in tests/integration/test_prometheus_auth.py."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from fakeprom import FakePrometheus, Reply, scalar

from arbiter.api.v1alpha1 import Analysis
from arbiter.metrics import (
    CredentialsError,
    DefaultConnection,
    ErrorKind,
    PrometheusProvider,
    QueryContext,
    ResultKind,
    provider_for,
    resolve_connection,
)

TOKEN = "tok-7f3c1e-super-secret"


def source(block: dict[str, object]) -> Analysis:
    return Analysis.model_validate({"prometheus": block})


def secrets(values: dict[tuple[str, str, str], bytes]):  # type: ignore[no-untyped-def]
    def read(namespace: str, name: str, key: str) -> bytes:
        if (namespace, name, key) not in values:
            raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
        return values[(namespace, name, key)]

    return read


def test_a_token_from_a_secret_is_sent_as_a_bearer_header_with_the_custom_headers(
    fake_prometheus: FakePrometheus,
) -> None:
    fake_prometheus.answer_with({"vector(1)": Reply(scalar(1))})
    analysis = source(
        {
            "url": fake_prometheus.url,
            "bearerToken": {"secretKeyRef": {"name": "prom", "key": "token"}},
            "headers": {"X-Scope-OrgID": "tenant-a"},
        }
    )
    read = secrets({("ml", "prom", "token"): f"{TOKEN}\n".encode()})
    provider = provider_for(analysis, "ml", read_secret=read, defaults=DefaultConnection())
    assert isinstance(provider, PrometheusProvider)
    assert provider.is_online()
    headers = {k.lower(): v for k, v in fake_prometheus.headers[-1].items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["x-scope-orgid"] == "tenant-a"
    assert TOKEN not in repr(provider)


def test_a_missing_secret_becomes_a_credentials_error_for_every_query_and_nothing_is_sent(
    fake_prometheus: FakePrometheus,
) -> None:
    analysis = source(
        {"url": fake_prometheus.url, "bearerToken": {"secretKeyRef": {"name": "p", "key": "t"}}}
    )
    provider = provider_for(analysis, "ml", read_secret=secrets({}), defaults=DefaultConnection())
    answers = provider.query_per_variant("up", QueryContext("e", "ml"), ["v1", "v2"])
    assert {a.error_kind for a in answers.values()} == {ErrorKind.CREDENTIALS}
    assert "Secret ml/p has no key 't'" in answers["v1"].message
    assert fake_prometheus.queries == []


def test_a_401_is_unauthorized_and_says_where_the_credentials_came_from(
    fake_prometheus: FakePrometheus,
) -> None:
    fake_prometheus.answer_with({}, default=Reply(b"Unauthorized\n", status=401, content_type="text/plain"))
    analysis = source(
        {
            "url": fake_prometheus.url,
            "basicAuth": {"username": {"name": "a", "key": "u"}, "password": {"name": "a", "key": "p"}},
        }
    )
    read = secrets({("ml", "a", "u"): b"arbiter", ("ml", "a", "p"): TOKEN.encode()})
    provider = provider_for(analysis, "ml", read_secret=read, defaults=DefaultConnection())
    answers = provider.query_per_variant('up{variant="{{variant}}"}', QueryContext("e", "ml"), ["v1", "v2"])
    assert answers["v1"].error_kind is ErrorKind.UNAUTHORIZED
    assert "HTTP 401 Unauthorized" in answers["v1"].message and "Secret ml/a[u]" in answers["v1"].message
    sent = fake_prometheus.headers[0]["Authorization"]
    assert sent == "Basic " + base64.b64encode(f"arbiter:{TOKEN}".encode()).decode()
    assert all(TOKEN not in a.message for a in answers.values())
    # A refusal is not retried for the other variants of the same call.
    assert len(fake_prometheus.queries) == 1


def test_files_named_in_a_spec_are_read_only_below_the_credentials_directories(tmp_path: Path) -> None:
    allowed = tmp_path / "creds"
    allowed.mkdir()
    (allowed / "token").write_text(TOKEN)
    outside = tmp_path / "sa-token"
    outside.write_text("the operator's own ServiceAccount token")
    (allowed / "escape").symlink_to(outside)
    defaults = DefaultConnection(credentials_dirs=(str(allowed),))

    def resolve(path: Path) -> str | None:
        block = {"url": "http://prom:9090", "bearerToken": {"file": str(path)}}
        return resolve_connection(source(block).prometheus, "ml", defaults, secrets({})).bearer_token

    assert resolve(allowed / "token") == TOKEN
    for forbidden in (outside, allowed / "escape", allowed / ".." / "sa-token"):
        with pytest.raises(CredentialsError, match="outside the operator's credentials directories"):
            resolve(forbidden)


def test_the_operator_defaults_apply_to_its_own_url_and_a_spec_overrides_them(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    defaults = DefaultConnection(
        url="https://prom.monitoring:9090/",
        bearer_token_file=str(token_file),
        insecure_skip_verify=True,
        headers={"X-Scope-OrgID": "platform"},
    )
    empty = resolve_connection(source({}).prometheus, "ml", defaults, secrets({}))
    assert (empty.url, empty.bearer_token, empty.verify) == ("https://prom.monitoring:9090/", TOKEN, False)
    assert empty.headers == {"X-Scope-OrgID": "platform"}
    assert TOKEN not in repr(empty)

    same = resolve_connection(
        source({"url": "https://prom.monitoring:9090", "headers": {"X-Scope-OrgID": "team"}}).prometheus,
        "ml",
        defaults,
        secrets({}),
    )
    assert same.bearer_token == TOKEN and same.headers == {"X-Scope-OrgID": "team"}

    other = resolve_connection(
        source({"url": "https://evil.example"}).prometheus, "ml", defaults, secrets({})
    )
    assert (other.bearer_token, other.basic_auth, other.verify, dict(other.headers)) == (None, None, True, {})

    by_spec = resolve_connection(
        source(
            {"basicAuth": {"username": {"name": "a", "key": "u"}, "password": {"name": "a", "key": "p"}}}
        ).prometheus,
        "ml",
        defaults,
        secrets({("ml", "a", "u"): b"team", ("ml", "a", "p"): b"pw\n"}),
    )
    assert by_spec.bearer_token is None and by_spec.basic_auth == ("team", "pw")


def test_a_ca_from_a_secret_is_written_once_to_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    block = {"url": "https://prom:9090", "tls": {"caSecretRef": {"name": "ca", "key": "ca.crt"}}}
    read = secrets({("ml", "ca", "ca.crt"): pem})
    first = resolve_connection(source(block).prometheus, "ml", DefaultConnection(), read)
    second = resolve_connection(source(block).prometheus, "ml", DefaultConnection(), read)
    assert isinstance(first.verify, str) and first.verify == second.verify
    assert Path(first.verify).read_bytes() == pem
    assert oct(os.stat(Path(first.verify).parent).st_mode & 0o777) == "0o700"
    not_pem = secrets({("ml", "ca", "ca.crt"): b"hello"})
    with pytest.raises(CredentialsError, match="holds no PEM certificate"):
        resolve_connection(source(block).prometheus, "ml", DefaultConnection(), not_pem)


def test_no_url_anywhere_is_a_clear_error() -> None:
    provider = provider_for(source({}), "ml", read_secret=secrets({}), defaults=DefaultConnection())
    answer = provider.query_per_variant("up", QueryContext("e", "ml"), ["v1"])["v1"]
    assert answer.outcome is ResultKind.ERROR and "--prometheus-url" in answer.message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"bearer_token_file": "/t", "basic_auth_username": "u", "basic_auth_password_file": "/p"},
            "not both",
        ),
        ({"basic_auth_username": "u"}, "needs both"),
        ({"insecure_skip_verify": True, "ca_file": "/ca"}, "cannot be combined"),
        ({"headers": {"Authorization": "Bearer x"}}, "not an Authorization header"),
    ],
)
def test_inconsistent_operator_defaults_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DefaultConnection(**options)  # type: ignore[arg-type]
