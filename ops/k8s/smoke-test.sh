#!/usr/bin/env bash
# Smoke test of a deployed bikeshare: waits until /readyz says a model is served, then checks
# liveness, one legacy REST prediction and the same prediction over Connect. The CD workflow runs
# it against staging and production (through `kubectl port-forward`); tests/ops/deploy.test.ts
# runs it against a real local server.
#   ops/k8s/smoke-test.sh BASE_URL        e.g. http://127.0.0.1:18080
# Progress goes to stderr; stdout gets one line, model_version=N (the served model), in the
# format of $GITHUB_OUTPUT. SMOKE_TIMEOUT_SECONDS (default 600) bounds the wait for readiness.
# Needs curl only.
set -euo pipefail

base=${1:?usage: smoke-test.sh BASE_URL}
base=${base%/}
timeout=${SMOKE_TIMEOUT_SECONDS:-600}
say() { echo "smoke-test: $*" >&2; }

deadline=$((SECONDS + timeout))
until ready=$(curl -fsS --max-time 5 "$base/readyz" 2>/dev/null); do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "FAILED: $base/readyz did not answer 200 within ${timeout}s"
    exit 1
  fi
  sleep 2
done
say "ready: $ready"
if ! [[ $ready =~ \"model_version\":\"([0-9]+)\" ]]; then
  say "FAILED: /readyz did not name the served model version: $ready"
  exit 1
fi
model_version=${BASH_REMATCH[1]}

curl -fsS --max-time 5 "$base/healthz" >/dev/null || { say "FAILED: $base/healthz"; exit 1; }

# A summer weekday at 17:00: any served model predicts a busy hour.
conditions='"season":3,"yr":1,"mnth":7,"hr":17,"holiday":0,"weekday":3,"workingday":1,"weathersit":1,"temp":0.72,"atemp":0.66,"hum":0.5,"windspeed":0.2'

rest=$(curl -fsS --max-time 10 -H 'content-type: application/json' -d "{$conditions}" "$base/predict") ||
  { say "FAILED: POST $base/predict"; exit 1; }
if ! [[ $rest =~ \"prediction\":([0-9.eE+-]+) ]] || ! [[ $rest =~ \"model_version\":\"[^\"]+\" ]]; then
  say "FAILED: POST /predict answered without a prediction and a model version: $rest"
  exit 1
fi
say "REST /predict: $rest"

connect=$(curl -fsS --max-time 10 -H 'content-type: application/json' -d "{\"conditions\":{$conditions}}" \
  "$base/bikeshare.v1.PredictService/Predict") || { say "FAILED: Connect PredictService/Predict"; exit 1; }
if ! [[ $connect =~ \"prediction\":([0-9.eE+-]+) ]]; then
  say "FAILED: Connect Predict answered without a prediction: $connect"
  exit 1
fi
say "Connect Predict: $connect"
say "passed for $base"
echo "model_version=$model_version"
