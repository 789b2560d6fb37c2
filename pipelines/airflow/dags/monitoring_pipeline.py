"""Hourly monitoring: run the server's check → branch: wait for the retraining it started, or not.

MonitorService.RunCheck computes drift and live accuracy over the week ending at the check time,
raises alerts (the server e-mails them) and, when allowed and a rule calls for it, starts a
retraining itself — subject to its own rules (no job already running, the retraining cool-down), so
that the policy lives in one place. The branch follows what the server decided. A server driven by
this DAG can leave its own schedule off (BIKESHARE_CHECK_INTERVAL_SECONDS=0).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Param, dag, task

from bikeshare_client import DAG_DEFAULTS, client

log = logging.getLogger("bikeshare")


def _check_time(value: str | None, fallback: datetime) -> str:
    if not value:
        return fallback.astimezone(UTC).isoformat().replace("+00:00", "Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"param check_time must be an ISO-8601 time such as 2012-08-08T00:00:00Z, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"param check_time must carry a time zone (e.g. a trailing Z), got {value!r}")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dag(
    dag_id="monitoring_pipeline",
    schedule="@hourly",
    **DAG_DEFAULTS,
    params={
        "check_time": Param(
            None,
            type=["null", "string"],
            description="End of the checked week (ISO-8601 with a zone); null: the end of the run's data interval.",
        ),
        "allow_retrain": Param(True, type="boolean", description="Let the check start a retraining."),
        "timeout_minutes": Param(120, type="integer", minimum=1, description="Longest wait for a retraining."),
    },
    doc_md=__doc__,
)
def monitoring_pipeline():
    @task
    def run_check(params=None, data_interval_end=None) -> dict[str, Any]:
        """MonitorService.RunCheck over the window ending at the check time."""
        until = _check_time(params["check_time"], data_interval_end or datetime.now(UTC))
        found = client().call(
            "MonitorService", "RunCheck", {"window": {"to": until}, "allowRetrain": params["allow_retrain"]}
        )
        report = found.get("report")
        alerts = [{"rule": a.get("rule"), "message": a.get("message")} for a in found.get("alerts", [])]
        for alert in alerts:
            log.warning("alert %s: %s", alert["rule"], alert["message"])
        if report:
            log.info(
                "drift report %s on version %s: drifted share %s, dataset drift %s",
                report.get("id"),
                report.get("modelVersion"),
                report.get("driftedShare", 0),
                report.get("datasetDrift", False),
            )
        else:
            log.info("no drift report: too few logged predictions in the window ending %s", until)
        return {
            "check_time": until,
            "report_id": report.get("id") if report else None,
            "alerts": alerts,
            "retrain_job_id": found.get("retrainJobId") or None,
        }

    @task.branch
    def decide(check: dict[str, Any]) -> str:
        return "wait_for_retraining" if check["retrain_job_id"] else "no_retraining"

    @task
    def wait_for_retraining(check: dict[str, Any], params=None) -> dict[str, Any]:
        """Follows the server's retraining job; its version reaches production only through the gate."""
        bikeshare = client()
        job = bikeshare.wait_for_success(check["retrain_job_id"], timeout_s=60 * params["timeout_minutes"])
        promoted = bool(job.get("promoted", False))
        log.info(
            "retraining job %s registered version %s: %s",
            job["id"],
            job["modelVersion"],
            "promoted to production" if promoted else "kept as staging (did not beat production)",
        )
        return {"job_id": job["id"], "model_version": job["modelVersion"], "promoted": promoted}

    @task
    def no_retraining(check: dict[str, Any], params=None) -> str:
        if not check["alerts"]:
            why = "no monitoring rule was violated"
        elif not params["allow_retrain"]:
            why = f"{len(check['alerts'])} alert(s), retraining not allowed by this run"
        else:
            why = (
                f"{len(check['alerts'])} alert(s), but the server started no retraining "
                "(a job is running, the cool-down has not passed, or the rule does not retrain)"
            )
        log.info("check at %s: %s", check["check_time"], why)
        return why

    check = run_check()
    decide(check) >> [wait_for_retraining(check), no_retraining(check)]


monitoring_pipeline()
