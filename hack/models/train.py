"""Train the demo's fraud models with scikit-learn and lay them out for MLServer.

Runs inside the model server's virtualenv (hack/models/setup.sh calls it). Everything is seeded, so the
same scikit-learn version trains the same models. The task is a fraud-like, imbalanced binary
classification (about 10% positives) from ``make_classification``; 30% of it is held out and written to
``rows.json`` for the load generator, which sends those rows as requests and reports their true labels
later as outcomes.

Layout of ``--out``::

    catalogue.json                 what each variant is and how it scores on the held-out rows
    rows.json                      {"features": [[20 floats], ...], "labels": [0|1, ...]}
    serve/<variant>/settings.json  one MLServer per variant: loopback, no worker pool, no metrics port
    serve/<variant>/fraud/         model-settings.json (+ model.joblib, + arbiter_runtimes.py if slow)

Every variant serves the model name ``fraud`` (version = the variant's name), so a request path is the
same whichever variant the router picks: ``POST /v2/models/fraud/infer``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

MODEL_NAME = "fraud"
SEED = 11
HERE = Path(__file__).resolve().parent
# The slow variant's delay unless the server is started with ARBITER_MODEL_DELAY_MS.
SLOW_DELAY_MS = 300

# variant -> (what it is, how it is built). "champion" is the model in production.
VARIANTS: dict[str, str] = {
    "champion": "random forest (40 trees, depth 8, seed 1): the model in production",
    "better": "histogram gradient boosting: more accurate, catches far more fraud",
    "worse": "logistic regression: a linear model on a non-linear task, less accurate",
    "identical": "the champion's model file, byte for byte (an A/A test)",
    "slow": f"the champion's model behind a runtime that adds {SLOW_DELAY_MS} ms",
    "agreeing": "random forest like the champion's, seed 2: agrees on about 99% of the answers",
    "disagreeing": "random forest with balanced class weights: flags many more frauds, agrees on about 83%",
}


def train(x_train: np.ndarray, y_train: np.ndarray) -> dict[str, Any]:
    """Fit every distinct model (identical and slow reuse the champion's)."""

    def forest(seed: int, **extra: Any) -> RandomForestClassifier:
        return RandomForestClassifier(n_estimators=40, max_depth=8, random_state=seed, n_jobs=1, **extra)

    champion = forest(1).fit(x_train, y_train)
    return {
        "champion": champion,
        "better": HistGradientBoostingClassifier(random_state=SEED).fit(x_train, y_train),
        "worse": LogisticRegression(max_iter=2000).fit(x_train, y_train),
        "identical": champion,
        "slow": champion,
        "agreeing": forest(2).fit(x_train, y_train),
        "disagreeing": forest(1, class_weight="balanced").fit(x_train, y_train),
    }


def write_variant(out: Path, name: str, model: Any, champion_file: Path | None) -> Path:
    """Lay out one MLServer folder for variant ``name``; return the model file."""
    folder = out / "serve" / name
    model_dir = folder / MODEL_NAME
    model_dir.mkdir(parents=True)
    # Ports come from the environment (MLSERVER_HTTP_PORT, MLSERVER_GRPC_PORT) at start, so two servers of
    # the same variant can run at once; settings.json values would override the environment.
    settings = {"host": "127.0.0.1", "parallel_workers": 0, "metrics_endpoint": None, "debug": False}
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    model_file = model_dir / "model.joblib"
    if name == "identical" and champion_file is not None:
        shutil.copyfile(champion_file, model_file)  # the same bytes, not a re-fit
    else:
        joblib.dump(model, model_file)
    parameters: dict[str, Any] = {"uri": "./model.joblib", "version": name}
    implementation = "mlserver_sklearn.SKLearnModel"
    if name == "slow":
        shutil.copyfile(HERE / "arbiter_runtimes.py", model_dir / "arbiter_runtimes.py")
        implementation = "arbiter_runtimes.DelayedSKLearnModel"
        parameters["extra"] = {"delay_ms": SLOW_DELAY_MS}
    model_settings = {"name": MODEL_NAME, "implementation": implementation, "parameters": parameters}
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    return model_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to create")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True)
    started = time.monotonic()

    x, y = make_classification(
        n_samples=30_000,
        n_features=20,
        n_informative=10,
        n_redundant=4,
        weights=[0.9],
        class_sep=0.8,
        flip_y=0.01,
        random_state=SEED,
    )
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    models = train(x_train, y_train)

    champion_predictions = models["champion"].predict(x_test)
    champion_scores = models["champion"].predict_proba(x_test)[:, 1]
    catalogue: dict[str, Any] = {
        "model": MODEL_NAME,
        "scikitLearn": sklearn.__version__,
        "mlserver": str(Path(sys.executable).with_name("mlserver")),
        "python": sys.executable,
        "rows": "rows.json",
        "positiveRate": round(float(y_test.mean()), 4),
        "variants": {},
    }
    champion_file = None
    for name, description in VARIANTS.items():
        model = models[name]
        model_file = write_variant(out, name, model, champion_file)
        if name == "champion":
            champion_file = model_file
        predictions = model.predict(x_test)
        scores = model.predict_proba(x_test)[:, 1]
        catalogue["variants"][name] = {
            "description": description,
            "folder": f"serve/{name}",
            "accuracy": round(float((predictions == y_test).mean()), 4),
            "recall": round(float(predictions[y_test == 1].mean()), 4),
            "agreementWithChampion": round(float((predictions == champion_predictions).mean()), 4),
            "scoreDeltaP95": round(float(np.percentile(np.abs(scores - champion_scores), 95)), 4),
            "delayMs": SLOW_DELAY_MS if name == "slow" else 0,
        }
        print(f"  {name:<12} {json.dumps(catalogue['variants'][name])}", file=sys.stderr, flush=True)

    rows = {"features": np.round(x_test, 6).tolist(), "labels": [int(v) for v in y_test]}
    (out / "rows.json").write_text(json.dumps(rows, separators=(",", ":")))
    (out / "catalogue.json").write_text(json.dumps(catalogue, indent=2) + "\n")
    print(f"  trained {len(VARIANTS)} variants in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
