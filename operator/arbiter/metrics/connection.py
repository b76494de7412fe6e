"""How to reach one experiment's Prometheus: URL, TLS, headers and credentials, resolved per tick.

``spec.analysis.prometheus`` may name a bearer token (a Secret key or a file), basic auth (Secret
keys), a CA (a Secret key or a file) and extra headers; anything it leaves out comes from the
operator's default connection (`arbiter run --prometheus-url ... --prometheus-bearer-token-file ...`,
set by the chart). Rules chosen on purpose:

- The operator's own credentials (its token file, basic auth, CA, headers) are sent only to the
  operator's own URL: an experiment that names another URL gets only what its spec names. Otherwise
  anyone who may create an experiment could have the operator's token sent to a server they run.
- Files named in a spec are read only below the operator's credentials directories
  (``--prometheus-credentials-dir``, default ``/etc/arbiter/prometheus``), for the same reason: a
  spec must not be able to send, say, the operator's ServiceAccount token as a bearer token.
- Secrets are read fresh on every resolution (one GET per Secret key per tick), and token files are
  re-read, so rotated credentials take effect at the next tick.
- Nothing here logs or formats a credential: :class:`Connection`'s repr and :meth:`Connection.describe`
  name where a credential came from, never its value; errors say which Secret, key or file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from arbiter.api.v1alpha1 import PrometheusSource, SecretKeySelector, parse_duration

__all__ = [
    "DEFAULT_CREDENTIALS_DIR",
    "Connection",
    "CredentialsError",
    "DefaultConnection",
    "SecretReader",
    "resolve_connection",
]

DEFAULT_CREDENTIALS_DIR = "/etc/arbiter/prometheus"
SecretReader = Callable[[str, str, str], bytes]
"""``(namespace, name, key) -> value``; raises any exception with a safe message on failure."""


class CredentialsError(Exception):
    """The connection could not be resolved (no URL, a Secret or file missing); nothing was sent."""


@dataclass(frozen=True)
class DefaultConnection:
    """The operator's own Prometheus connection, used where a spec leaves fields out.

    Attributes:
        url: the default Prometheus URL.
        bearer_token_file: a file holding a bearer token (re-read every tick).
        basic_auth_username: user name for basic auth (with ``basic_auth_password_file``).
        basic_auth_password_file: a file holding the basic-auth password.
        ca_file: a PEM CA bundle for https.
        insecure_skip_verify: do not verify the server certificate.
        headers: extra headers, e.g. ``X-Scope-OrgID``.
        credentials_dirs: directories below which files named in specs may be read.
    """

    url: str | None = None
    bearer_token_file: str | None = None
    basic_auth_username: str | None = None
    basic_auth_password_file: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials_dirs: tuple[str, ...] = (DEFAULT_CREDENTIALS_DIR,)

    def __post_init__(self) -> None:
        if self.bearer_token_file and self.basic_auth_password_file:
            raise ValueError("set either a bearer token file or basic auth for Prometheus, not both")
        if (self.basic_auth_username is None) != (self.basic_auth_password_file is None):
            raise ValueError("basic auth for Prometheus needs both a username and a password file")
        if self.insecure_skip_verify and self.ca_file:
            raise ValueError(
                "insecure-skip-verify turns verification off; it cannot be combined with a CA file"
            )
        if any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("use the bearer token or basic auth options, not an Authorization header")


@dataclass(frozen=True, repr=False)
class Connection:
    """Everything a provider needs to send one query. Credentials never appear in its repr.

    Attributes:
        url: base URL.
        timeout: seconds.
        headers: extra headers (no credentials).
        bearer_token: sent as ``Authorization: Bearer``.
        basic_auth: ``(username, password)``.
        verify: requests' ``verify``: True (system trust store), False, or a CA bundle path.
        sources: where the credentials came from, for messages (e.g. ``bearer token from Secret
            ns/n[key]``); empty when none are sent.
        verification: how the server certificate is verified, for messages.
    """

    url: str
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    verify: bool | str = True
    sources: tuple[str, ...] = ()
    verification: str = "system trust store"

    def describe(self) -> str:
        """Where the credentials come from (no values), e.g. for an error message."""
        return "; ".join(self.sources) if self.sources else "no credentials were sent"

    def __repr__(self) -> str:
        return (
            f"Connection(url={self.url!r}, timeout={self.timeout:g}, auth={self.describe()!r}, "
            f"verify={self.verification!r})"
        )


def _normalize(url: str) -> str:
    return url.rstrip("/")


def _secret_text(
    read_secret: SecretReader, namespace: str, selector: SecretKeySelector, what: str
) -> tuple[str, str]:
    where = f"Secret {namespace}/{selector.name}[{selector.key}]"
    try:
        raw = read_secret(namespace, selector.name, selector.key)
    except Exception as exc:  # the reader's messages name the Secret, never a value
        raise CredentialsError(f"{what}: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"{what}: {where} is not UTF-8 text") from None
    return text, where


def _allowed_file(path: str, dirs: tuple[str, ...], what: str) -> Path:
    real = os.path.realpath(path)
    for directory in dirs:
        root = os.path.realpath(directory)
        if os.path.commonpath([real, root]) == root:
            return Path(real)
    allowed = ", ".join(dirs) or "none configured"
    raise CredentialsError(
        f"{what}: {path} is outside the operator's credentials directories ({allowed}); mount the file "
        "there or use a Secret"
    )


def _read_file(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"{what}: file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{what}: cannot read file {path} ({type(exc).__name__})") from None


def _ca_bundle_file(pem: str, where: str) -> str:
    """A file holding ``pem`` (requests verifies against a path), one per distinct bundle."""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise CredentialsError(f"tls.caSecretRef: {where} holds no PEM certificate")
    directory = Path(tempfile.gettempdir()) / "arbiter-prometheus-ca"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{hashlib.sha256(pem.encode()).hexdigest()[:32]}.pem"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(pem, encoding="utf-8")
        partial.replace(path)
    return str(path)


def resolve_connection(
    source: PrometheusSource,
    namespace: str,
    defaults: DefaultConnection,
    read_secret: SecretReader,
) -> Connection:
    """The connection one experiment's ``spec.analysis.prometheus`` asks for, with the defaults filled in.

    Raises:
        CredentialsError: no URL, or a credential, CA or file could not be read (the message says
            which, never a value).
    """
    url = source.url or defaults.url
    if not url:
        raise CredentialsError(
            "no Prometheus URL: set spec.analysis.prometheus.url, or start the operator with --prometheus-url"
        )
    own = defaults.url is not None and _normalize(url) == _normalize(defaults.url)
    sources: list[str] = []
    headers: dict[str, str] = dict(defaults.headers) if own else {}
    headers.update(source.headers or {})
    bearer: str | None = None
    basic: tuple[str, str] | None = None
    verify: bool | str = True
    verification = "system trust store"

    if source.bearer_token is not None:
        token = source.bearer_token
        if token.secret_key_ref is not None:
            bearer, where = _secret_text(read_secret, namespace, token.secret_key_ref, "bearerToken")
            sources.append(f"bearer token from {where}")
        else:
            assert token.file is not None
            bearer = _read_file(
                _allowed_file(token.file, defaults.credentials_dirs, "bearerToken.file"), "bearerToken"
            )
            sources.append(f"bearer token from file {token.file}")
    elif source.basic_auth is not None:
        user, user_where = _secret_text(
            read_secret, namespace, source.basic_auth.username, "basicAuth.username"
        )
        password, _ = _secret_text(read_secret, namespace, source.basic_auth.password, "basicAuth.password")
        basic = (user.strip(), password.rstrip("\r\n"))
        sources.append(f"basic auth from {user_where} and its password key")
    elif own and defaults.bearer_token_file:
        bearer = _read_file(defaults.bearer_token_file, "--prometheus-bearer-token-file")
        sources.append(f"bearer token from the operator's file {defaults.bearer_token_file}")
    elif own and defaults.basic_auth_password_file and defaults.basic_auth_username:
        password = _read_file(defaults.basic_auth_password_file, "--prometheus-basic-auth-password-file")
        basic = (defaults.basic_auth_username, password.rstrip("\r\n"))
        sources.append(
            f"basic auth as the operator's user with password file {defaults.basic_auth_password_file}"
        )
    if bearer is not None:
        bearer = bearer.strip()
        if not bearer:
            raise CredentialsError(f"the bearer token is empty ({sources[-1]})")

    tls = source.tls
    if tls is not None and tls.insecure_skip_verify:
        verify = False
        verification = "not verified (insecureSkipVerify)"
    elif tls is not None and tls.ca_secret_ref is not None:
        pem, where = _secret_text(read_secret, namespace, tls.ca_secret_ref, "tls.caSecretRef")
        verify = _ca_bundle_file(pem, where)
        verification = f"CA from {where}"
    elif tls is not None and tls.ca_file is not None:
        path = _allowed_file(tls.ca_file, defaults.credentials_dirs, "tls.caFile")
        if not path.is_file():
            raise CredentialsError(f"tls.caFile: file {tls.ca_file} does not exist")
        verify = str(path)
        verification = f"CA from file {tls.ca_file}"
    elif own and defaults.insecure_skip_verify:
        verify = False
        verification = "not verified (the operator's default)"
    elif own and defaults.ca_file:
        if not Path(defaults.ca_file).is_file():
            raise CredentialsError(f"--prometheus-ca-file: file {defaults.ca_file} does not exist")
        verify = defaults.ca_file
        verification = f"CA from the operator's file {defaults.ca_file}"
    return Connection(
        url=url,
        timeout=parse_duration(source.timeout),
        headers=headers,
        bearer_token=bearer,
        basic_auth=basic,
        verify=verify,
        sources=tuple(sources),
        verification=verification,
    )
