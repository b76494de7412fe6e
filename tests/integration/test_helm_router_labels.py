"""The chart's delayed-label options: attribution keys from a Secret, the prediction log on a volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from localcluster import binaries

from chart_support import HelmError, render

ROUTER = ("router.enabled=true", "router.instances[0].name=fraud,router.instances[0].configMap=fraud-routes")


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return binaries.ensure_built()


def _router(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment" and "router" in d["metadata"]["name"])
    return dict(deployment["spec"]["template"]["spec"])


def test_attribution_and_prediction_log_reach_the_router_and_its_command_line_parses(bin_dir: Path) -> None:
    from arbiter.cli import build_parser

    docs = render(
        bin_dir,
        settings=(
            *ROUTER,
            "router.attribution.enabled=true,router.attribution.existingSecret=router-keys",
            "router.attribution.maxAgeSeconds=3600",
            "router.predictionLog.enabled=true,router.predictionLog.files=3,router.predictionLog.maxBytes=10485760",
            "router.predictionLog.fields.class=/outputs/0/data/0,router.predictionLog.fields.score=/outputs/1/data/1",
        ),
    )
    pod = _router(docs)
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.attribution_keys == "/etc/arbiter/attribution" and args.attribution_max_age == 3600
    assert args.prediction_log == "/var/log/arbiter/predictions"
    assert (args.prediction_log_files, args.prediction_log_max_bytes) == (3, 10485760)
    assert dict(args.prediction_log_field) == {
        "class": ("outputs", "0", "data", "0"),
        "score": ("outputs", "1", "data", "1"),
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["attribution-keys"]["secret"] == {
        "secretName": "router-keys",
        "items": [{"key": "keys", "path": "keys"}],
    }
    # Two kinds of 3 files of 10 MiB, plus one rotation in progress.
    assert volumes["prediction-log"]["emptyDir"] == {"sizeLimit": "71Mi"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["attribution-keys"]["readOnly"] is True
    assert mounts["prediction-log"]["mountPath"] == args.prediction_log


def test_prediction_log_on_a_claim_and_nothing_by_default(bin_dir: Path) -> None:
    pod = _router(render(bin_dir, settings=(*ROUTER,)))
    assert not any("attribution" in a or "prediction" in a for a in pod["containers"][0]["args"])
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    docs = render(
        bin_dir,
        settings=(
            *ROUTER,
            "router.predictionLog.enabled=true,router.predictionLog.volume.persistentVolumeClaim.claimName=logs",
        ),
    )
    volume = next(v for v in _router(docs)["volumes"] if v["name"] == "prediction-log")
    assert volume == {"name": "prediction-log", "persistentVolumeClaim": {"claimName": "logs"}}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "router.attribution.enabled=true",
            "router.attribution.enabled needs router.attribution.existingSecret",
        ),
        ("router.predictionLog.fields.class=outputs", "at '/router/predictionLog/fields/class'"),
        ("router.predictionLog.keys=sha1", "at '/router/predictionLog/keys'"),
        ("router.predictionLog.maxBytes=10", "at '/router/predictionLog/maxBytes'"),
        ("router.attribution.maxAgeSeconds=0", "at '/router/attribution/maxAgeSeconds'"),
    ],
)
def test_bad_label_values_fail_with_the_value_named(bin_dir: Path, setting: str, message: str) -> None:
    with pytest.raises(HelmError) as failure:
        render(bin_dir, settings=(*ROUTER, setting))
    assert message in str(failure.value)
