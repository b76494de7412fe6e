"""Dev tooling: a local Kubernetes control plane and Prometheus, run as plain processes.

``python -m localcluster up|down|status --dir DIR`` drives the control plane from the shell; tests
use :func:`up`, :func:`down` and :class:`Prometheus` through the fixtures in tests/conftest.py.
"""

from localcluster.cluster import Cluster, ClusterError, KubectlError, down, running, up
from localcluster.prometheus import Prometheus, PrometheusError, WebConfig

__all__ = [
    "Cluster",
    "ClusterError",
    "KubectlError",
    "Prometheus",
    "PrometheusError",
    "WebConfig",
    "down",
    "running",
    "up",
]
