"""Daily batch scoring: score → check the output.

PredictService.StartScoring queues a job on the server that reads a file from its scoring directory
(SCORING_DIR; Arrow IPC, Parquet or CSV), predicts every valid row with the production model, writes
the forecasts (Arrow IPC or Parquet, by extension) and the rows it could not score, with reasons, to
a CSV beside them. The file paths are relative to that directory; `{ds}` in them becomes the run's
date (YYYY-MM-DD).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from bikeshare_client import DAG_DEFAULTS, client

log = logging.getLogger("bikeshare")


@dag(
    dag_id="batch_scoring",
    schedule="@daily",
    **DAG_DEFAULTS,
    params={
        "input": Param(
            "incoming/{ds}.parquet", type="string", minLength=1, description="Input file, relative to SCORING_DIR."
        ),
        "output": Param(
            "scored/{ds}.parquet", type="string", minLength=1, description="Output file, relative to SCORING_DIR."
        ),
        "max_invalid_share": Param(
            0.01,
            type="number",
            minimum=0,
            maximum=1,
            description="Fail the run when more than this share of the input rows could not be scored.",
        ),
        "timeout_minutes": Param(60, type="integer", minimum=1, description="Longest wait for the scoring job."),
    },
    doc_md=__doc__,
)
def batch_scoring():
    @task
    def score(params=None, ds=None, dag_run=None) -> dict[str, Any]:
        bikeshare = client()
        request = {
            "input": params["input"].replace("{ds}", ds),
            "output": params["output"].replace("{ds}", ds),
            "reason": f"airflow batch_scoring {dag_run.run_id}",
            # A retry of this task finds the job it started instead of scoring the file twice.
            "idempotencyKey": f"airflow/batch_scoring/{dag_run.run_id}",
        }
        job = bikeshare.call("PredictService", "StartScoring", request)["job"]
        if job.get("kind") != "score":
            raise RuntimeError(
                f"StartScoring returned job {job.get('id')} of kind {job.get('kind')!r}, expected 'score'"
            )
        log.info("scoring job %s: %s → %s", job["id"], request["input"], request["output"])
        job = bikeshare.wait_for_success(job["id"], timeout_s=60 * params["timeout_minutes"])
        return {"job_id": job["id"], **job.get("scoring", {})}

    @task
    def check_output(summary: dict[str, Any], params=None) -> dict[str, Any]:
        """Row counts of the job; too many unscorable rows fails the run (the reasons are in the invalid-rows file)."""
        # uint64 fields arrive as JSON strings in proto3 JSON; zero fields are left out.
        read, scored, invalid = (int(summary.get(k, 0)) for k in ("rowsRead", "rowsScored", "rowsInvalid"))
        log.info(
            "job %s, model version %s: %d rows read, %d scored → %s, %d invalid → %s",
            summary["job_id"],
            summary.get("modelVersion"),
            read,
            scored,
            summary.get("output"),
            invalid,
            summary.get("invalidOutput"),
        )
        if read == 0:
            raise AirflowFailException(f"input {summary.get('input')} has no rows")
        if invalid / read > params["max_invalid_share"]:
            raise AirflowFailException(
                f"{invalid} of {read} rows could not be scored ({invalid / read:.1%}, more than "
                f"max_invalid_share {params['max_invalid_share']:.1%}); reasons in {summary.get('invalidOutput')}"
            )
        return {"rows_read": read, "rows_scored": scored, "rows_invalid": invalid}

    check_output(score())


batch_scoring()
