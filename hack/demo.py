"""`make demo`: a full canary rollout on the local control plane, decided by statistics.

What runs, all on this machine:

- the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) and the CRD;
- a real Prometheus scraping Arbiter's router every second;
- two real HTTP model servers standing in for fraud-v1 (champion) and fraud-v2 (challenger), with
  Deployments and Services in namespace ``arbiter-demo`` (kwok makes their Pods Ready);
- ``arbiter router --configmap arbiter-demo/fraud-v2-routes``: sticky weighted routing and the
  /feedback endpoint through which conversions reach Prometheus;
- the operator (``arbiter run``), and a traffic generator sending users through the router and
  reporting conversions: 10% for v1, 13% for v2.

The experiment is examples/canary.yaml with the time scale shortened (steps of 20 seconds, a 2-second
analysis interval) and the variants' URLs pointing at the local model servers. The demo prints the
experiment's progress until it is decided, then its status. The control plane stays up for
``kubectl`` (``KUBECONFIG=.cluster/kubeconfig``); ``make cluster-down`` stops it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "hack", ROOT / "tests", ROOT / "tests" / "e2e"):
    sys.path.insert(0, str(extra))

import yaml  # noqa: E402
from harness.env import RolloutEnv  # noqa: E402
from harness.experiment import conversion_metric, latency_guardrail  # noqa: E402
from kubernetes import client, config  # noqa: E402
from localcluster import Prometheus, up  # noqa: E402

from arbiter_fixtures import OperatorProcess  # noqa: E402

NAMESPACE = "arbiter-demo"
EXPERIMENT = "fraud-v2"
TERMINAL = ("Promoted", "RolledBack", "Concluded", "Failed")


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def experiment_from_example(env: RolloutEnv) -> dict[str, Any]:
    """examples/canary.yaml's experiment, with a demo time scale and local endpoints."""
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / "canary.yaml").read_text()) if d]
    example = next(d for d in docs if d["kind"] == "ModelExperiment")
    steps = [{"weight": s["weight"], "minDuration": "20s"} for s in example["spec"]["steps"]]
    experiment = env.experiment(
        steps=steps,
        interval="2s",
        guardrails=[latency_guardrail(max_seconds=0.25, failure_limit=3)],
        primary=conversion_metric(mde=0.1),
        decision={"maxDuration": "15m"},
    )
    experiment["metadata"]["annotations"] = {"arbiter.dev/demo": "derived from examples/canary.yaml"}
    return experiment


def report_artifacts(body: dict[str, Any], prometheus_url: str) -> None:
    """Write .demo/report.html, its screenshot and .demo/result.json, and say where they are."""
    from arbiter.cli.report import write_demo_artifacts

    paths = write_demo_artifacts(body, ROOT / ".demo", prometheus_url, scenario="canary")
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def line(status: dict[str, Any]) -> str:
    weights = ", ".join(f"{v} {w}%" for v, w in (status.get("weights") or {}).items())
    decision = status.get("decision") or {}
    return (
        f"{status.get('phase', '-'):<12} step {status.get('currentStep', '-')}  [{weights}]  "
        f"{decision.get('outcome', '')}: {decision.get('reason', status.get('message', ''))}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(ROOT / ".cluster"), help="the local cluster's directory")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    args = parser.parse_args(argv)
    cluster_dir = Path(args.dir).resolve()

    say("starting the local control plane (cached binaries: a few seconds)")
    cluster = up(cluster_dir)
    config.load_kube_config(config_file=cluster.kubeconfig)
    kube_api = client.ApiClient()
    workdir = cluster_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    say("installing the ModelExperiment CRD")
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "modelexperiment.yaml")
    )
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/modelexperiments.arbiter.dev", "--timeout=60s"
    )
    if cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0:
        say(f"removing the previous demo namespace {NAMESPACE}")
        cluster.kubectl("delete", "mexp", "--all", "-n", NAMESPACE, "--wait=false", check=False)
        # No operator runs between demos to release its finalizer, so release it here.
        cluster.kubectl(
            "patch",
            "mexp",
            EXPERIMENT,
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s")
    cluster.kubectl("create", "namespace", NAMESPACE)

    say("starting Prometheus")
    prometheus = Prometheus(workdir=workdir / "prometheus")
    prometheus.start()
    operator = OperatorProcess(cluster.kubeconfig, workdir / "operator.log")
    env = RolloutEnv(
        cluster=cluster,
        kube_api=kube_api,
        namespace=NAMESPACE,
        prometheus=prometheus,
        workdir=workdir,
        experiment=EXPERIMENT,
        variants=("v1", "v2"),
    )
    try:
        say("starting the operator (arbiter run)")
        operator.start().wait_ready()
        # Prometheus also scrapes the operator: the report draws its per-experiment series.
        prometheus.add_target("arbiter-operator", [operator.metrics_url.split("/")[2]], scrape_interval="1s")
        say("starting two model servers, their Deployments and Services, and arbiter router")
        env.start()
        experiment = experiment_from_example(env)
        say(f"applying ModelExperiment {EXPERIMENT} (examples/canary.yaml on a demo time scale)")
        env.apply([experiment])
        say("sending traffic: true conversion 10% for v1, 13% for v2; Arbiter does not know that")
        env.traffic({"v1": 0.10, "v2": 0.13}, rate=250, max_seconds=args.timeout)
        deadline = time.monotonic() + args.timeout
        last = ""
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = json.loads(
                cluster.kubectl("get", "mexp", EXPERIMENT, "-n", NAMESPACE, "-o", "json").stdout
            )
            status = body.get("status") or {}
            current = line(status)
            if current != last:
                say(current)
                last = current
            if status.get("phase") in TERMINAL:
                break
            operator.assert_alive()
            time.sleep(2)  # a polling display, not a test: the experiment decides on its own clock
        print()
        print(cluster.kubectl("get", "mexp", "-n", NAMESPACE).stdout)
        print("history:")
        for entry in status.get("history", []):
            print(f"  {entry['time']}  {entry['from']} -> {entry['to']}: {entry['reason']}")
        primary = (status.get("analysis") or {}).get("primary") or {}
        for result in primary.get("results", []):
            print(
                f"primary {primary.get('metric')} ({primary.get('method')}): {result.get('variant')} "
                f"{result.get('verdict')}: control {result.get('controlValue')}, challenger "
                f"{result.get('treatmentValue')}, lift {result.get('relativeLift')}, p = {result.get('pValue')}"
            )
        print()
        report_artifacts(body, prometheus.url)
        print(f"Inspect it: KUBECONFIG={cluster.kubeconfig} kubectl get mexp -n {NAMESPACE} -o yaml")
        print("Stop the control plane: make cluster-down")
        return 0 if status.get("phase") in TERMINAL else 1
    finally:
        env.close()
        operator.stop()
        prometheus.stop()


if __name__ == "__main__":
    sys.exit(main())
