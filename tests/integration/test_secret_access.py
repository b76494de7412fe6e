"""Reading a Prometheus credential from a Secret with the least privilege docs/operations.md asks for: a
ServiceAccount with no Secret access gets a clear 403 message; a namespaced Role granting `get` on one
named Secret lets it read that Secret and no other. Against the real API server with RBAC enforced."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from arbiter.k8s.secrets import SecretError, read_secret_key
from helpers import wait_for

TOKEN = "prometheus-token-value-9d2e"


@pytest.fixture
def operator_identity(kube_api: Any, cluster: Any, namespace: str) -> Iterator[client.ApiClient]:
    """An ApiClient authenticated as a fresh ServiceAccount `arbiter` (TokenRequest), with no RBAC yet."""
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="arbiter"))
    )
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    issued = core.create_namespaced_service_account_token("arbiter", namespace, request).status
    assert issued is not None and issued.token
    config = client.Configuration()
    config.host = cluster.server
    config.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {issued.token}"}
    with client.ApiClient(config) as api:
        yield api


def test_a_named_secret_is_readable_only_with_a_role_for_that_name(
    kube_api: Any, namespace: str, operator_identity: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    for name in ("prometheus-token", "someone-elses"):
        data = {"token": base64.b64encode(TOKEN.encode()).decode()}
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=data)
        )

    with pytest.raises(SecretError) as refused:
        read_secret_key(namespace, "prometheus-token", "token", api=operator_identity)
    assert f"may not read Secret {namespace}/prometheus-token (403 Forbidden)" in str(refused.value)
    assert "docs/operations.md" in str(refused.value)

    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="arbiter-read-prometheus-token"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["secrets"], resource_names=["prometheus-token"], verbs=["get"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="arbiter-read-prometheus-token"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="arbiter-read-prometheus-token"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="arbiter", namespace=namespace)],
        ),
    )
    # RBAC changes reach the authorizer's cache within moments.
    value = wait_for(
        lambda: read_secret_key(namespace, "prometheus-token", "token", api=operator_identity),
        timeout=30,
        message="the Role did not grant get on the named Secret",
    )
    assert value == TOKEN.encode()
    with pytest.raises(SecretError, match="403 Forbidden"):
        read_secret_key(namespace, "someone-elses", "token", api=operator_identity)
    with pytest.raises(SecretError, match="has no key 'password'"):
        read_secret_key(namespace, "prometheus-token", "password", api=operator_identity)
