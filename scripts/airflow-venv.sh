#!/usr/bin/env bash
# Creates .cache/airflow-venv/ (git-ignored) with a pinned Apache Airflow, for the DAGs in
# pipelines/airflow/dags and their test (tests/pipelines/airflow.test.ts), locked by
# pipelines/airflow/constraints.txt. See scripts/pinned-venv.sh.
exec bash "$(dirname "$0")/pinned-venv.sh" airflow-venv pipelines/airflow/constraints.txt "apache-airflow==3.3.2"
