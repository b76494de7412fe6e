"""One test's world: model servers, their Deployments and Services, a router scraped by Prometheus.

``RolloutEnv.start()`` builds it in the test's namespace:

1. one model-server process per variant (``ModelServerProcess``), on loopback ports;
2. a Deployment (kwok makes its Pods Ready) and a Service per variant, named ``model-<variant>``;
3. ``arbiter router`` as a process:

   - provider ``Router``: ``--configmap NS/<experiment>-routes``, with a token of the chart's router
     ServiceAccount (its Role reads that one ConfigMap). The ConfigMap does not exist until
     the operator creates it; until then the router answers 503 and /readyz says 503 (the ConfigMap
     watch lists, finds nothing, and picks the object up from the watch when it appears);
   - provider ``Replicas``: there is no data plane in a kwok cluster, so a *kube-proxy stand-in*
     (``ReplicaRoutes``) turns the Deployments' ready replica counts into a routes file every few
     hundred milliseconds and the router serves it with ``--config``: every ready replica gets an equal
     share, which is what kube-proxy does for the endpoints behind one Service;

4. the router's /metrics as Prometheus job ``arbiter-router-<namespace>`` (scrape interval 1s), waited
   for until it is up.

``close()`` undoes it all (the namespace fixture deletes the Kubernetes objects).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from arbiter.router.config import RouterConfig, Stickiness
from arbiter.router.config import Variant as RouteVariant
from chart_support import install_router_identity
from harness.experiment import StatusRecorder, ValueRecorder, VariantRef, experiment_manifest, router_job
from harness.mlserver import Catalogue, MLServerProcess, ensure_models
from harness.model_traffic import ModelTraffic
from harness.processes import ModelServerProcess, RouterProcess
from harness.traffic import TrafficGenerator
from helpers import wait_for
from podman_image import ArbiterImage

SCRAPE_INTERVAL = "1s"


def deployment(name: str, variant: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "model", "version": variant}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": f"registry.example.com/ml/model:{variant}",
                            "ports": [{"containerPort": 8080, "name": "http"}],
                        }
                    ]
                },
            },
        },
    }


def service(name: str, variant: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": "model", "version": variant},
            "ports": [{"port": 80, "targetPort": "http", "name": "http"}],
        },
    }


class ReplicaRoutes:
    """Kube-proxy stand-in for provider Replicas: routes file weights = ready replicas per variant.

    Args:
        kube_api: API client.
        namespace: where the Deployments live.
        experiment: the router's experiment label.
        variants: the variants (name, Deployment, URL), champion first.
        path: the routes file the router watches.
    """

    def __init__(
        self, kube_api: Any, namespace: str, experiment: str, variants: list[VariantRef], path: Path
    ) -> None:
        from kubernetes import client

        self.apps = client.AppsV1Api(kube_api)
        self.namespace = namespace
        self.experiment = experiment
        self.variants = variants
        self.path = path
        self.written: dict[str, int] = {}
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-routes", daemon=True)

    def ready_replicas(self) -> dict[str, int]:
        """Ready replicas per variant, as the Deployments report them."""
        out = {}
        for variant in self.variants:
            body = self.apps.read_namespaced_deployment(
                variant.deployment, self.namespace, _request_timeout=5
            )
            out[variant.name] = int((body.status and body.status.ready_replicas) or 0)
        return out

    def sync(self) -> bool:
        """Write the routes file if the ready replicas changed; False when no variant has a ready replica."""
        ready = self.ready_replicas()
        if sum(ready.values()) == 0:
            return False  # kube-proxy would have no endpoint; keep the last routes
        if ready == self.written:
            return True
        config = RouterConfig(
            experiment=self.experiment,
            variants=tuple(RouteVariant(name=v.name, url=v.url, weight=ready[v.name]) for v in self.variants),
            champion=self.variants[0].name,
            # Kube-proxy is not sticky; the key only tells the router where /feedback by key belongs.
            stickiness=Stickiness(header="x-user-id"),
        )
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(config.to_yaml())
        tmp.replace(self.path)
        self.written = ready
        self.writes += 1
        return True

    def start(self) -> ReplicaRoutes:
        wait_for(self.sync, timeout=60, message="a ready replica to route to")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(Exception):  # an API hiccup: the next sync catches up
                self.sync()


class RolloutEnv:
    """Model servers, workloads, router and scraping for one experiment in one namespace.

    Args:
        cluster, kube_api, namespace, prometheus: the session fixtures.
        workdir: where logs and the routes file go.
        experiment: the experiment's name (the router's label; the ConfigMap is ``<experiment>-routes``).
        variants: variant names, champion first.
        provider: ``Router`` or ``Replicas``.
        replicas: Deployment replicas per variant at the start (Replicas: their sum is the budget).
        latency_ms, jitter_ms: the model servers' starting latency.
        answer_like: ``{variant: other}``: that variant's server answers exactly like ``other``'s (same
            seed, ``--answer-as other``), e.g. ``{"v2": "v1"}`` for a shadow that agrees with the champion.
        router_image: run the router from this container image (the ``arbiter_image`` fixture) instead
            of the installed command.
        real_models: ``{variant: model}``: serve every variant with MLServer and the trained model of that
            name (``champion``, ``better``, ``slow``... see docs/models.md) instead of a stand-in.
        router_args: more ``arbiter router`` flags (e.g. ``--prediction-log DIR``).
    """

    def __init__(
        self,
        *,
        cluster: Any,
        kube_api: Any,
        namespace: str,
        prometheus: Any,
        workdir: Path,
        experiment: str = "canary",
        variants: tuple[str, ...] = ("v1", "v2"),
        provider: str = "Router",
        replicas: dict[str, int] | None = None,
        latency_ms: float = 5.0,
        jitter_ms: float = 2.0,
        answer_like: dict[str, str] | None = None,
        router_image: ArbiterImage | None = None,
        real_models: dict[str, str] | None = None,
        router_args: list[str] | None = None,
    ) -> None:
        if provider not in ("Router", "Replicas"):
            raise ValueError(f"provider {provider!r}: the e2e harness drives Router and Replicas")
        unknown = {name for pair in (answer_like or {}).items() for name in pair} - set(variants)
        if unknown:
            raise ValueError(f"answer_like names variants that are not in {variants}: {sorted(unknown)}")
        if real_models is not None and set(real_models) != set(variants):
            raise ValueError(f"real_models must name a model for every variant of {variants}")
        self.cluster = cluster
        self.kube_api = kube_api
        self.namespace = namespace
        self.prometheus = prometheus
        self.workdir = workdir
        self.experiment_name = experiment
        self.variant_names = variants
        self.provider = provider
        self.replicas = replicas or dict.fromkeys(variants, 1)
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.answer_like = dict(answer_like or {})
        self.router_image = router_image
        self.real_models = dict(real_models) if real_models is not None else None
        self.router_args = list(router_args or [])
        self.catalogue: Catalogue | None = None
        self.models: dict[str, ModelServerProcess | MLServerProcess] = {}
        self.router: RouterProcess | None = None
        self.replica_routes: ReplicaRoutes | None = None
        self.generators: list[TrafficGenerator | ModelTraffic] = []
        self.recorders: list[StatusRecorder | ValueRecorder] = []
        self.job = router_job(namespace)
        self._job_added = False

    @property
    def config_map(self) -> str:
        return f"{self.experiment_name}-routes"

    @property
    def variants(self) -> list[VariantRef]:
        return [
            VariantRef(name, f"model-{name}", f"model-{name}", self.models[name].url)
            for name in self.variant_names
        ]

    def start(self) -> RolloutEnv:
        """Build everything; on failure, undo what was built and raise."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        seeds = {name: index for index, name in enumerate(self.variant_names)}
        if self.real_models is not None:
            self.catalogue = ensure_models()
            self.models.update(MLServerProcess.start_many(self.catalogue, self.real_models, self.workdir))
        for name in self.variant_names if self.real_models is None else ():
            like = self.answer_like.get(name)
            self.models[name] = ModelServerProcess.start(
                name,
                self.workdir,
                latency_ms=self.latency_ms,
                jitter_ms=self.jitter_ms,
                seed=seeds[like or name],
                answer_as=like,
            )
        docs = []
        for ref in self.variants:
            docs.append(deployment(ref.deployment, ref.name, self.replicas[ref.name]))
            docs.append(service(ref.service, ref.name))
        self.apply(docs)
        if self.provider == "Router":
            # The router runs as the chart's router ServiceAccount: it may read its ConfigMap and nothing else.
            kubeconfig = install_router_identity(self.cluster, self.namespace, self.config_map, self.workdir)
            self.router = RouterProcess.start(
                ["--configmap", f"{self.namespace}/{self.config_map}", *self.router_args],
                self.workdir,
                {"KUBECONFIG": str(kubeconfig)},
                image=self.router_image,
            )
        else:
            # A routes file and no API access (the kube-proxy stand-in writes the file).
            env = {"KUBECONFIG": self.cluster.kubeconfig}
            self.wait_for_deployments_ready()
            routes = self.workdir / "routes.yaml"
            self.replica_routes = ReplicaRoutes(
                self.kube_api, self.namespace, self.experiment_name, self.variants, routes
            ).start()
            self.router = RouterProcess.start(
                ["--config", str(routes), "--poll-interval", "0.2", *self.router_args],
                self.workdir,
                env,
                image=self.router_image,
            )
        self.prometheus.add_target(self.job, [self.router.metrics_address], scrape_interval=SCRAPE_INTERVAL)
        self._job_added = True
        self.prometheus.wait_for_target_up(self.job, timeout=30)

    def close(self) -> None:
        """Stop recorders, traffic, the router and the model servers; stop scraping the router."""
        for recorder in self.recorders:
            recorder.stop()
        for generator in self.generators:
            if isinstance(generator, ModelTraffic):
                generator.stop(flush=False)  # labels still due go nowhere: everything is being stopped
            else:
                generator.stop()
        if self.replica_routes is not None:
            self.replica_routes.stop()
        if self._job_added:
            with contextlib.suppress(Exception):  # Prometheus may be stopped by the test; the job goes anyway
                self.prometheus.remove_target(self.job)
        processes = [self.router, *self.models.values()]
        for process in processes:
            if process is not None:
                process.stop()

    def logs(self) -> str:
        """The tails of every child's log, for a failure report."""
        parts = []
        for process in [self.router, *self.models.values()]:
            if process is not None:
                parts.append(f"--- {process.name} ({process.log_path}) ---\n{process.log()[-3000:]}")
        return "\n".join(parts)

    # -- Kubernetes ---------------------------------------------------------------------------

    def apply(self, docs: list[dict[str, Any]]) -> None:
        """kubectl apply the documents in the namespace."""
        import yaml

        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump_all(docs))

    def deployment_replicas(self) -> dict[str, tuple[int, int]]:
        """(spec.replicas, status.readyReplicas) per variant."""
        from kubernetes import client

        apps = client.AppsV1Api(self.kube_api)
        out = {}
        for ref in self.variants:
            body = apps.read_namespaced_deployment(ref.deployment, self.namespace, _request_timeout=5)
            out[ref.name] = (
                int(body.spec.replicas or 0),
                int((body.status and body.status.ready_replicas) or 0),
            )
        return out

    def wait_for_deployments_ready(self, timeout: float = 90) -> None:
        wait_for(
            lambda: all(spec == ready for spec, ready in self.deployment_replicas().values()),
            timeout=timeout,
            message="kwok to make every Deployment ready",
        )

    # -- the experiment -----------------------------------------------------------------------

    def experiment(self, **overrides: Any) -> dict[str, Any]:
        """A ModelExperiment for these variants (champion = the first); ``overrides`` go to the builder."""
        champion, *challengers = self.variants
        settings: dict[str, Any] = {
            "champion": champion,
            "challengers": challengers,
            "prometheus_url": self.prometheus.url,
            "provider": self.provider,
            "config_map": self.config_map,
        }
        settings.update(overrides)
        return experiment_manifest(self.experiment_name, **settings)

    def record_status(self, name: str) -> StatusRecorder:
        """Record every distinct status of experiment ``name`` from now on (stopped at teardown)."""
        recorder = StatusRecorder(self.kube_api, self.namespace, name)
        self.recorders.append(recorder)
        return recorder.start()

    def record(self, read: Any) -> ValueRecorder:
        """Record every distinct value ``read()`` returns from now on (stopped at teardown)."""
        recorder = ValueRecorder(read)
        self.recorders.append(recorder)
        return recorder.start()

    # -- traffic ------------------------------------------------------------------------------

    def model_traffic(self, **options: Any) -> ModelTraffic:
        """Start real transactions with delayed labels through the router (``real_models`` only; stopped at teardown)."""
        assert self.router is not None
        assert self.catalogue is not None, "model_traffic needs real_models"
        generator = ModelTraffic(self.router.url, self.catalogue.rows, **options)
        self.generators.append(generator)
        return generator.start()

    def traffic(self, conversion: dict[str, float], **options: Any) -> TrafficGenerator:
        """Start a traffic generator through the router (stopped at teardown)."""
        assert self.router is not None
        generator = TrafficGenerator(self.router.url, conversion=conversion, **options)
        self.generators.append(generator)
        return generator.start()
