"""The metrics provider against a real Prometheus that requires TLS and basic auth (``--web.config.file``),
with credentials in real Secrets on the real API server, and the operator's log never showing them.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from localcluster import Prometheus, PrometheusError, WebConfig

from arbiter.api import parse_spec
from arbiter.api.v1alpha1 import Analysis
from arbiter.metrics import DefaultConnection, ErrorKind, QueryContext, ResultKind, provider_for
from arbiter_fixtures import ROOT, OperatorProcess, experiment_docs
from helpers import wait_for

VARIANTS = ["v1", "v2"]
CANARY = ROOT / "examples" / "canary.yaml"


@pytest.fixture(scope="module")
def secure_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus that serves only HTTPS and only to the basic-auth user of its web config."""
    workdir = tmp_path_factory.mktemp("secure-prometheus")
    server = Prometheus(workdir, web=WebConfig.generate(workdir / "pki"), die_with_parent=True)
    try:
        server.start()
    except PrometheusError as err:
        pytest.fail(f"Prometheus with a web config did not start:\n{err}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def web(prometheus: Prometheus) -> WebConfig:
    assert prometheus.web is not None
    return prometheus.web


def put_secret(kube_api: Any, namespace: str, name: str, data: dict[str, str]) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, body)


def auth_secret(kube_api: Any, namespace: str, prometheus: Prometheus, password: str | None = None) -> None:
    config = web(prometheus)
    put_secret(
        kube_api,
        namespace,
        "prom-auth",
        {
            "username": config.username,
            "password": config.password if password is None else password,
            "ca.crt": config.pki.ca_cert.read_text(),
        },
    )


def analysis(prometheus_block: dict[str, Any]) -> Analysis:
    return Analysis.model_validate({"prometheus": prometheus_block})


def secret_block(url: str) -> dict[str, Any]:
    return {
        "url": url,
        "basicAuth": {
            "username": {"name": "prom-auth", "key": "username"},
            "password": {"name": "prom-auth", "key": "password"},
        },
        "tls": {"caSecretRef": {"name": "prom-auth", "key": "ca.crt"}},
        "headers": {"X-Scope-OrgID": "tenant-a"},
    }


def ask(source: Analysis, namespace: str, defaults: DefaultConnection | None = None) -> Any:
    provider = provider_for(source, namespace, defaults=defaults or DefaultConnection())
    answers = provider.query_per_variant("vector(42)", QueryContext("exp", namespace), VARIANTS)
    close = getattr(provider, "close", None)
    if close is not None:
        close()
    return answers["v1"]


def test_a_query_goes_through_tls_and_basic_auth_read_from_secrets(
    kube_api: Any, namespace: str, secure_prometheus: Prometheus
) -> None:
    auth_secret(kube_api, namespace, secure_prometheus)
    observation = ask(analysis(secret_block(secure_prometheus.url)), namespace)
    assert observation.outcome is ResultKind.VALUE, observation.message
    assert observation.value == 42.0


def test_a_wrong_password_is_a_clear_unauthorized_error_that_never_shows_the_password(
    kube_api: Any, namespace: str, secure_prometheus: Prometheus
) -> None:
    auth_secret(kube_api, namespace, secure_prometheus, password="not-the-password-4711")
    observation = ask(analysis(secret_block(secure_prometheus.url)), namespace)
    assert observation.error_kind is ErrorKind.UNAUTHORIZED
    assert "refused the credentials (HTTP 401 Unauthorized)" in observation.message
    assert f"Secret {namespace}/prom-auth[username]" in observation.message
    assert "not-the-password-4711" not in str(observation.to_dict())


def test_a_missing_secret_key_is_named_and_nothing_is_sent(
    kube_api: Any, namespace: str, secure_prometheus: Prometheus
) -> None:
    put_secret(kube_api, namespace, "prom-auth", {"username": "arbiter"})
    observation = ask(analysis(secret_block(secure_prometheus.url)), namespace)
    assert observation.error_kind is ErrorKind.CREDENTIALS
    assert f"Secret {namespace}/prom-auth has no key 'password'" in observation.message


def test_a_server_certificate_from_an_unknown_ca_fails_verification(
    kube_api: Any, namespace: str, secure_prometheus: Prometheus
) -> None:
    auth_secret(kube_api, namespace, secure_prometheus)
    block = secret_block(secure_prometheus.url)
    del block["tls"]  # the system trust store does not know the test CA
    observation = ask(analysis(block), namespace)
    assert observation.error_kind is ErrorKind.UNREACHABLE
    assert "TLS with Prometheus" in observation.message and "certificate verify failed" in observation.message


def test_the_operator_default_connection_is_used_for_its_own_url_only(
    namespace: str, secure_prometheus: Prometheus, tmp_path: Path
) -> None:
    config = web(secure_prometheus)
    password_file = tmp_path / "password"
    password_file.write_text(config.password + "\n")
    defaults = DefaultConnection(
        url=secure_prometheus.url,
        basic_auth_username=config.username,
        basic_auth_password_file=str(password_file),
        ca_file=str(config.pki.ca_cert),
    )
    assert ask(analysis({}), namespace, defaults).value == 42.0

    # The same server under another name is another URL: the operator's credentials are not sent there.
    elsewhere = f"https://localhost:{secure_prometheus.port}"
    observation = ask(analysis({"url": elsewhere, "tls": {"insecureSkipVerify": True}}), namespace, defaults)
    assert observation.error_kind is ErrorKind.UNAUTHORIZED
    assert "no credentials were sent" in observation.message

    assert ask(analysis({}), namespace, DefaultConnection()).error_kind is ErrorKind.CREDENTIALS


def experiment_with(prometheus_block: dict[str, Any], name: str) -> list[dict[str, Any]]:
    docs = copy.deepcopy(experiment_docs(CANARY))
    for doc in docs:
        if doc["kind"] == "ModelExperiment":
            doc["metadata"]["name"] = name
            doc["spec"]["steps"][0]["minDuration"] = "1h"
            doc["spec"]["analysis"]["interval"] = "1s"
            doc["spec"]["analysis"]["prometheus"] = prometheus_block
            parse_spec(doc["spec"])
    return docs


def test_the_operator_queries_with_credentials_and_never_logs_them(
    cluster: Any,
    kube_api: Any,
    arbiter_crd: str,
    namespace: str,
    secure_prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    config = web(secure_prometheus)
    password_file = tmp_path / "password"
    password_file.write_text(config.password)
    wrong = "wrong-password-0815"
    put_secret(kube_api, namespace, "bad-auth", {"username": config.username, "password": wrong})
    env = {
        "ARBITER_PROMETHEUS_URL": secure_prometheus.url,
        "ARBITER_PROMETHEUS_BASIC_AUTH_USERNAME": config.username,
        "ARBITER_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE": str(password_file),
        "ARBITER_PROMETHEUS_CA_FILE": str(config.pki.ca_cert),
    }
    operator = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", env=env).start()
    try:
        operator.wait_ready()
        good = experiment_with({}, "default-connection")
        bad = experiment_with(
            {
                "basicAuth": {
                    "username": {"name": "bad-auth", "key": "username"},
                    "password": {"name": "bad-auth", "key": "password"},
                },
            },
            "wrong-password",
        )
        workloads = [d for d in good if d["kind"] != "ModelExperiment"]
        experiments = [d for d in good + bad if d["kind"] == "ModelExperiment"]
        cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(workloads + experiments)
        )

        def condition(name: str) -> dict[str, Any] | None:
            status = yaml.safe_load(
                cluster.kubectl("get", "mexp", name, "-n", namespace, "-o", "yaml").stdout
            )
            found = [
                c
                for c in (status.get("status") or {}).get("conditions", [])
                if c["type"] == "MetricsAvailable"
            ]
            return found[0] if found else None

        readable = wait_for(
            lambda: (c := condition("default-connection")) and c["status"] == "True" and c,
            timeout=90,
            message="the experiment on the default connection never read its metrics",
        )
        refused = wait_for(
            lambda: (c := condition("wrong-password")) and c["status"] == "False" and c,
            timeout=90,
            message="the wrong password never became a condition",
        )
        print(f"\n{readable}\n{refused}")
        assert "refused the credentials (HTTP 401 Unauthorized)" in refused["message"]
        operator.assert_alive()
    finally:
        operator.stop()
    log = operator.log()
    assert "wrong-password" in log  # the log does show this experiment's activity...
    for secret in (
        config.password,
        wrong,
        base64.b64encode(f"{config.username}:{config.password}".encode()).decode(),
    ):
        assert secret not in log, "a credential appears in the operator's log"
