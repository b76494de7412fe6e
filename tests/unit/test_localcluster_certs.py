"""The throwaway PKI: every certificate chains to the right CA and names the right identity."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from localcluster import certs


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.Pki:
    return certs.generate(tmp_path_factory.mktemp("pki"))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _orgs(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def test_serving_cert_is_signed_by_the_ca_and_names_loopback(pki: certs.Pki) -> None:
    ca, serving = _cert(pki.ca_cert), _cert(pki.serving_cert)
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address(certs.KUBERNETES_SERVICE_IP) in sans.get_values_for_type(x509.IPAddress)
    assert {"localhost", "kubernetes.default.svc"} <= set(sans.get_values_for_type(x509.DNSName))
    usage = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_admin_is_a_system_master_signed_by_the_client_ca(pki: certs.Pki) -> None:
    admin = _cert(pki.client_cert("admin"))
    admin.verify_directly_issued_by(_cert(pki.client_ca_cert))
    assert _orgs(admin) == ["system:masters"]
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage


def test_client_certs_are_not_accepted_from_the_serving_ca(pki: certs.Pki) -> None:
    """The API server trusts only the client CA for client certificates, as envtest sets it up."""
    with pytest.raises(Exception):  # noqa: B017 - any signature/issuer mismatch
        _cert(pki.client_cert("admin")).verify_directly_issued_by(_cert(pki.ca_cert))


@pytest.mark.parametrize(
    ("user", "common_name"),
    [("controller-manager", "system:kube-controller-manager"), ("scheduler", "system:kube-scheduler")],
)
def test_components_use_their_bootstrap_identity(pki: certs.Pki, user: str, common_name: str) -> None:
    cert = _cert(pki.client_cert(user))
    cert.verify_directly_issued_by(_cert(pki.client_ca_cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == common_name


def test_the_scheduler_is_held_to_its_rbac_role(pki: certs.Pki) -> None:
    assert "system:masters" not in _orgs(_cert(pki.client_cert("scheduler")))


def test_every_key_matches_its_certificate(pki: certs.Pki) -> None:
    pairs = [(pki.serving_cert, pki.serving_key)] + [
        (pki.client_cert(user), pki.client_key(user)) for user, _, _ in certs.CLIENTS
    ]
    for cert_path, key_path in pairs:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == _cert(cert_path).public_key(), cert_path.name
        assert key_path.stat().st_mode & 0o077 == 0, f"{key_path.name} is readable by others"


def test_service_account_public_key_matches_the_signing_key(pki: certs.Pki) -> None:
    private = serialization.load_pem_private_key(pki.sa_key.read_bytes(), password=None)
    public = serialization.load_pem_public_key(pki.sa_pub.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key() == public
