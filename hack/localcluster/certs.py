"""Throwaway PKI for the local control plane, laid out the way envtest does it.

- ``ca``: signs the API server's serving certificate; it is also the ``--root-ca-file`` that the
  controller-manager publishes to every namespace as ``kube-root-ca.crt``.
- ``client-ca``: the API server's ``--client-ca-file``; signs one client certificate per user.
- ``sa``: the service-account token signing keypair (private key to the API server and the
  controller-manager, public key to the API server).

ECDSA P-256 keys are used throughout: the Kubernetes components accept them and they are
generated in microseconds, which keeps ``up`` fast.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The first address of --service-cluster-ip-range: the in-cluster `kubernetes` Service.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"

# Client identities: (file stem, common name, organizations).
CLIENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("admin", "arbiter-admin", ("system:masters",)),
    # system:masters with --use-service-account-credentials=false: the per-controller service
    # accounts (kubeadm's way) cost ~40 TokenRequests and 4-5 s of startup on 2 cores.
    ("controller-manager", "system:kube-controller-manager", ("system:masters",)),
    ("scheduler", "system:kube-scheduler", ()),
    # kwok updates Node and Pod status and node Leases like a kubelet; kwokctl gives it admin.
    ("kwok", "kwok-controller", ("system:masters",)),
)


@dataclass(frozen=True)
class Pki:
    """Paths of every file :func:`generate` writes."""

    dir: Path

    def path(self, name: str) -> Path:
        """Return the path of ``<name>`` inside the PKI directory."""
        return self.dir / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    @property
    def serving_cert(self) -> Path:
        return self.path("apiserver.crt")

    @property
    def serving_key(self) -> Path:
        return self.path("apiserver.key")

    @property
    def client_ca_cert(self) -> Path:
        return self.path("client-ca.crt")

    @property
    def sa_key(self) -> Path:
        return self.path("sa.key")

    @property
    def sa_pub(self) -> Path:
        return self.path("sa.pub")

    def client_cert(self, user: str) -> Path:
        """Return the certificate path of a user listed in :data:`CLIENTS`."""
        return self.path(f"{user}.crt")

    def client_key(self, user: str) -> Path:
        """Return the private key path of a user listed in :data:`CLIENTS`."""
        return self.path(f"{user}.key")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Back-date a little so a second of clock skew between processes never matters.
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    builder = (
        _builder(subject, ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def generate(pki_dir: Path) -> Pki:
    """Write a fresh CA, serving certificate, client CA, client certificates and SA keypair.

    Args:
        pki_dir: directory to write into (created if needed; existing files are replaced).

    Returns:
        A :class:`Pki` naming every file written.
    """
    pki_dir.mkdir(parents=True, exist_ok=True)
    pki = Pki(pki_dir)

    ca, ca_key = _make_ca("arbiter-local-ca")
    _write_cert(pki.ca_cert, ca)
    _write_key(pki.path("ca.key"), ca_key)
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(KUBERNETES_SERVICE_IP)),
    ]
    serving, serving_key = _leaf(ca, ca_key, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    _write_cert(pki.serving_cert, serving)
    _write_key(pki.serving_key, serving_key)

    client_ca, client_ca_key = _make_ca("arbiter-local-client-ca")
    _write_cert(pki.client_ca_cert, client_ca)
    _write_key(pki.path("client-ca.key"), client_ca_key)
    for user, common_name, orgs in CLIENTS:
        cert, key = _leaf(client_ca, client_ca_key, _name(common_name, orgs), ExtendedKeyUsageOID.CLIENT_AUTH)
        _write_cert(pki.client_cert(user), cert)
        _write_key(pki.client_key(user), key)

    sa_key = _new_key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


@dataclass(frozen=True)
class ServingPki:
    """A CA and one serving certificate signed by it, e.g. for a TLS-only Prometheus on loopback."""

    ca_cert: Path
    cert: Path
    key: Path


def generate_serving(directory: Path, common_name: str = "localhost") -> ServingPki:
    """Write a fresh CA and a serving certificate for ``localhost`` and ``127.0.0.1`` signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _make_ca(f"{common_name}-ca")
    pki = ServingPki(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    _write_cert(pki.ca_cert, ca)
    cert, key = _leaf(
        ca,
        ca_key,
        _name(common_name),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    _write_cert(pki.cert, cert)
    _write_key(pki.key, key)
    return pki
