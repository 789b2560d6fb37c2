"""Weekly training: check data → train → evaluate → promote if better → notify.

Every step is a call to the bikeshare server (bikeshare_client.py); the server trains, registers the
new version as `staging`, and gives it `production` only when it beats the current production model
on the held-out window (the champion/challenger gate). These tasks read that outcome and never force
a promotion past the gate.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param, dag, task

from bikeshare_client import DAG_DEFAULTS, client

log = logging.getLogger("bikeshare")

FAMILIES = {
    "gbtree": "MODEL_FAMILY_GBTREE",
    "random_forest": "MODEL_FAMILY_RANDOM_FOREST",
    "linear": "MODEL_FAMILY_LINEAR",
}
OBJECTIVES = {
    "squared_error": "OBJECTIVE_SQUARED_ERROR",
    "poisson": "OBJECTIVE_POISSON",
    "tweedie": "OBJECTIVE_TWEEDIE",
}


@dag(
    dag_id="training_pipeline",
    schedule="@weekly",
    **DAG_DEFAULTS,
    params={
        "families": Param(
            [],
            type="array",
            items={"enum": list(FAMILIES)},
            description="Model families to try; empty means all three.",
        ),
        "objectives": Param(
            [],
            type="array",
            items={"enum": list(OBJECTIVES)},
            description="Objectives to try; empty means squared error.",
        ),
        "search_trials": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Random-search trials per family; null means the server's default, 0 the baselines only.",
        ),
        "experiment": Param("", type="string", description="Experiment name; empty means the server's default."),
        "timeout_minutes": Param(120, type="integer", minimum=1, description="Longest wait for the training job."),
    },
    doc_md=__doc__,
)
def training_pipeline():
    @task
    def check_data() -> dict[str, Any]:
        """The server is up and the token can read the registry; records the production model's data fingerprint.

        The rows themselves are validated by the training job (its `validate` stage rejects bad rows with a
        per-field reason and fails the job); `evaluate` then checks the new run recorded its data fingerprint.
        """
        bikeshare = client()
        status, health = bikeshare.get("/healthz")
        if status != 200:
            raise RuntimeError(f"GET /healthz answered {status}: {health}")
        status, ready = bikeshare.get("/readyz")
        log.info("readyz %s: %s", status, ready)
        production = bikeshare.model_version("production")
        if production is None:
            log.info("no production model yet: this run trains the first one")
            return {"production_version": None, "data_fingerprint": None}
        run = bikeshare.call("RegistryService", "GetRun", {"runId": production["runId"]})["run"]
        fingerprint = run.get("dataFingerprint")
        if not fingerprint:
            raise RuntimeError(f"production version {production['version']}'s run {run['id']} has no data fingerprint")
        log.info("production is version %s, trained on data %s", production["version"], fingerprint)
        return {"production_version": production["version"], "data_fingerprint": fingerprint}

    @task
    def train(data: dict[str, Any], params=None, dag_run=None) -> dict[str, Any]:
        """Starts a training job and waits for it; the job registers a version and applies the gate itself."""
        bikeshare = client()
        request: dict[str, Any] = {
            "families": [FAMILIES[f] for f in params["families"]],
            "objectives": [OBJECTIVES[o] for o in params["objectives"]],
            "reason": f"airflow training_pipeline {dag_run.run_id}",
            # A retry of this task finds the job it started instead of starting a second one.
            "idempotencyKey": f"airflow/training_pipeline/{dag_run.run_id}",
        }
        if params["search_trials"] is not None:
            request["searchTrials"] = params["search_trials"]
        if params["experiment"]:
            request["experiment"] = params["experiment"]
        job = bikeshare.call("TrainService", "StartTraining", request)["job"]
        log.info("training job %s started (was production: %s)", job["id"], data["production_version"])
        job = bikeshare.wait_for_success(job["id"], timeout_s=60 * params["timeout_minutes"])
        return {
            "job_id": job["id"],
            "run_id": job["runId"],
            "model_version": job["modelVersion"],
            "promoted": bool(job.get("promoted", False)),
        }

    @task
    def evaluate(data: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
        """The new version's test metrics and the gate's figures, from the registry."""
        bikeshare = client()
        run = bikeshare.call("RegistryService", "GetRun", {"runId": outcome["run_id"]})["run"]
        metrics, tags = run.get("metrics", {}), run.get("tags", {})
        if not run.get("dataFingerprint"):
            raise RuntimeError(f"run {run['id']} of version {outcome['model_version']} has no data fingerprint")
        challenger = metrics.get("gate.challenger_rmse", metrics.get("test_rmse"))
        champion = metrics.get("gate.champion_rmse")
        result = {
            **outcome,
            "test_rmse": metrics.get("test_rmse"),
            "test_mae": metrics.get("test_mae"),
            "challenger_rmse": challenger,
            "champion_rmse": champion,
            "champion_version": tags.get("gate.champion_version"),
            "gate_window": tags.get("gate.window"),
            "data_fingerprint": run["dataFingerprint"],
            "same_data_as_production": run["dataFingerprint"] == data["data_fingerprint"],
        }
        log.info(
            "version %s: test RMSE %s; gate: challenger %s vs champion %s (version %s) on %s",
            outcome["model_version"],
            result["test_rmse"],
            challenger,
            champion,
            result["champion_version"],
            result["gate_window"],
        )
        return result

    @task
    def promote_if_better(evaluation: dict[str, Any]) -> dict[str, Any]:
        """Confirms the gate's decision against the registry; a version the gate kept out stays `staging`."""
        bikeshare = client()
        version = evaluation["model_version"]
        production = bikeshare.model_version("production")
        if production is None:
            raise RuntimeError(f"model {bikeshare.model_name} has no production version after the gate")
        if evaluation["promoted"]:
            if production["version"] != version:
                # Another job may have promoted a newer version since; that is the gate working, not an error.
                log.warning("version %s was promoted, but production is now version %s", version, production["version"])
            else:
                log.info("version %s is production", version)
        else:
            log.info(
                "version %s stays staging: RMSE %s does not beat production version %s (%s); not forcing it",
                version,
                evaluation["challenger_rmse"],
                production["version"],
                evaluation["champion_rmse"],
            )
        return {**evaluation, "production_version": production["version"]}

    @task
    def notify(result: dict[str, Any]) -> str:
        """A one-line summary in the task log; the server itself e-mails about training and deployment."""
        verdict = "promoted to production" if result["promoted"] else "kept as staging"
        summary = (
            f"training job {result['job_id']}: version {result['model_version']} {verdict} "
            f"(test RMSE {result['test_rmse']}, production is version {result['production_version']})"
        )
        log.info(summary)
        return summary

    data = check_data()
    notify(promote_if_better(evaluate(data, train(data))))


training_pipeline()
