"""The Helm chart as tests use it: the real helm binary, rendered objects, a ServiceAccount's kubeconfig.

``helm(bin_dir, *args, kubeconfig=None)`` runs the helm built by hack/build-control-plane.sh;
``render(bin_dir, values_files=..., settings=...)`` returns the rendered objects;
``identity_docs(docs)`` picks the operator's ServiceAccount and RBAC out of a rendering;
``service_account_kubeconfig(cluster, namespace, name, path)`` writes a kubeconfig that authenticates
with a TokenRequest token of that ServiceAccount (what a Pod running as it would use).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "arbiter"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
KUBE_VERSION = "1.36.3"  # helm template alone assumes Kubernetes 1.20, which the chart refuses
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
# The operator's identity in a rendering: its ServiceAccount and everything granting it permissions.
IDENTITY_KINDS = ("ServiceAccount", *RBAC_KINDS)


class HelmError(AssertionError):
    """helm exited non-zero; the message has its stderr."""


def helm(
    bin_dir: str | Path, *args: str, kubeconfig: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``helm ARGS`` (text, captured); raise :class:`HelmError` with the stderr if it fails."""
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/arbiter-helm-cache"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = kubeconfig
    result = subprocess.run(
        [str(Path(bin_dir) / "helm"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def render(
    bin_dir: str | Path,
    *,
    release: str = "arbiter",
    namespace: str = "arbiter-system",
    values_files: tuple[Path, ...] = (),
    settings: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """``helm template`` the chart; every rendered object (CRDs excluded: helm template omits crds/)."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for path in values_files:
        args += ["--values", str(path)]
    for setting in settings:
        args += ["--set", setting]
    return [d for d in yaml.safe_load_all(helm(bin_dir, *args).stdout) if d]


def identity_docs(docs: list[dict[str, Any]], component: str = "operator") -> list[dict[str, Any]]:
    """The ServiceAccounts and RBAC objects of one component (operator or router) of a rendering."""

    def of_component(doc: dict[str, Any]) -> bool:
        labels = doc["metadata"].get("labels", {})
        return labels.get("app.kubernetes.io/component", "operator") == component

    return [d for d in docs if d["kind"] in IDENTITY_KINDS and of_component(d)]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The rendered object of that kind and name."""
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered ({[d['kind'] for d in docs]})"
    return matches[0]


def service_account_kubeconfig(
    cluster: Any, namespace: str, name: str, path: Path, *, duration: str = "24h"
) -> Path:
    """Write a kubeconfig for ServiceAccount ``namespace/name`` with a TokenRequest token; return its path.

    ``kubectl create token`` calls the TokenRequest API, as the kubelet does for a Pod's projected token.
    """
    token = cluster.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ca_data = admin["clusters"][0]["cluster"].get("certificate-authority-data")
    if ca_data is None:
        ca_file = admin["clusters"][0]["cluster"]["certificate-authority"]
        ca_data = base64.b64encode(Path(ca_file).read_bytes()).decode()
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": cluster.server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": user, "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def apply(cluster: Any, docs: list[dict[str, Any]], *extra: str) -> str:
    """Server-side apply the objects (field manager ``arbiter-tests``); return kubectl's output."""
    return str(
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=arbiter-tests",
            *extra,
            "-f",
            "-",
            input=yaml.safe_dump_all(docs),
        ).stdout
    )


def install_router_identity(cluster: Any, namespace: str, config_map: str, workdir: Path) -> Path:
    """The chart's router ServiceAccount and Role for ConfigMap ``namespace/config_map``, applied; its kubeconfig.

    What ``router.instances: [{configMap: ...}]`` installs next to the models: the router may get, list and
    watch that one ConfigMap by name, nothing else.
    """
    docs = render(
        cluster.bin_dir,
        namespace=namespace,
        settings=(
            "router.enabled=true",
            "router.instances[0].name=e2e",
            f"router.instances[0].configMap={config_map}",
        ),
    )
    identity = identity_docs(docs, component="router")
    apply(cluster, identity)
    (account,) = [d["metadata"]["name"] for d in identity if d["kind"] == "ServiceAccount"]
    return service_account_kubeconfig(cluster, namespace, account, workdir / "router.kubeconfig")
