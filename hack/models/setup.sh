#!/usr/bin/env bash
# Create (once) the virtualenv that runs the real model server: MLServer with its scikit-learn runtime,
# then train the demo's models into the cache (hack/models/train.py). Idempotent: a stamp holding the
# hash of requirements.txt and train.py skips what is already done.
# Usage: hack/models/setup.sh          -> prints the models directory on the last line
# Env:   ARBITER_CACHE (default ~/.cache/arbiter), PYTHON (default python3; MLServer 1.7 needs 3.9-3.12)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${ARBITER_CACHE:-$HOME/.cache/arbiter}"
venv="$cache/mlserver-venv"
python="${PYTHON:-python3}"
mkdir -p "$cache"
# Concurrent callers (the demo and a test session) wait for one setup instead of racing it.
exec 9>"$cache/.mlserver-venv.lock"
flock 9
start=$(date +%s)
log() { printf '[models %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

want="$(cat "$here/requirements.txt" | sha256sum | cut -c1-16)"
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
  log "creating $venv (MLServer + scikit-learn, about 530 MB; first run about a minute)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q -U pip
  "$venv/bin/pip" install --disable-pip-version-check --progress-bar off -q -r "$here/requirements.txt"
  echo "$want" >"$venv/.installed"
  log "installed $("$venv/bin/mlserver" --version 2>/dev/null || echo mlserver)"
else
  log "model server virtualenv: cached ($venv)"
fi

trained="$(cat "$here/requirements.txt" "$here/train.py" "$here/arbiter_runtimes.py" | sha256sum | cut -c1-16)"
models="$cache/models/$trained"
if [ ! -f "$models/catalogue.json" ]; then
  log "training the models into $models (scikit-learn, fixed seeds; about a minute)"
  rm -rf "$models.tmp"
  OMP_NUM_THREADS=1 "$venv/bin/python" "$here/train.py" --out "$models.tmp"
  rm -rf "$models"
  mv "$models.tmp" "$models"
else
  log "models: cached ($models)"
fi
echo "$models"
