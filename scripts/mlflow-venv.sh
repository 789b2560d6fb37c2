#!/usr/bin/env bash
# Creates .cache/mlflow-venv/ (git-ignored) with MLflow's own tracking client, mlflow-skinny, for
# tests/services/mlflow-api.test.ts (a notebook's calls against bikeshare's MLflow API, docs/mlflow-api.md),
# locked by tests/python/mlflow-constraints.txt. See scripts/pinned-venv.sh.
exec bash "$(dirname "$0")/pinned-venv.sh" mlflow-venv tests/python/mlflow-constraints.txt "mlflow-skinny==3.18.0"
