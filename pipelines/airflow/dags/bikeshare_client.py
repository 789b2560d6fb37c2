"""The bikeshare services over Connect, with the Python standard library only.

A Connect unary call is an HTTP POST of the request message as proto3 JSON (lowerCamelCase field
names, enums as their names, 64-bit integers as strings) to {base}/bikeshare.v1.<Service>/<Method>;
a failure comes back with a non-200 status and {"code": "...", "message": "..."}.

The DAGs in this folder share this module; it is listed in .airflowignore so that the DAG processor
does not parse it as a DAG file. Inside Airflow, `client()` takes the base URL and token from the
Connection `bikeshare_default` when it exists (e.g. AIRFLOW_CONN_BIKESHARE_DEFAULT=
'http://:TOKEN@127.0.0.1:8080'), else from BIKESHARE_URL and BIKESHARE_TOKEN, as the CLI does.
The registered model's name is the connection's extra "model_name", else BIKESHARE_MODEL_NAME,
else the server's default.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

CONN_ID = "bikeshare_default"
# What every bikeshare DAG shares: one run at a time, no backfill, a retry for a server that is away.
DAG_DEFAULTS: dict[str, Any] = {
    "start_date": datetime(2026, 1, 1, tzinfo=UTC),
    "catchup": False,
    "max_active_runs": 1,
    "tags": ["bikeshare"],
    "default_args": {"retries": 2, "retry_delay": timedelta(minutes=1)},
}
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_MODEL = "bike-demand"  # the server's BIKESHARE_MODEL_NAME default
TERMINAL_JOB_STATES = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
# Connect codes that a retry cannot fix: the request or the credentials are wrong.
PERMANENT_CODES = frozenset(
    {
        "invalid_argument",
        "unauthenticated",
        "permission_denied",
        "not_found",
        "already_exists",
        "failed_precondition",
        "out_of_range",
        "unimplemented",
    }
)

log = logging.getLogger("bikeshare")


class BikeshareError(Exception):
    """A call the server refused or could not answer; the message names the RPC and the reason."""

    def __init__(self, what: str, code: str, message: str, status: int | None = None):
        where = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{what} failed: {code}: {message}{where}")
        self.code = code
        self.status = status

    @property
    def permanent(self) -> bool:
        return self.code in PERMANENT_CODES


class Client:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        permanent_error: type[Exception] | None = None,
        model_name: str = DEFAULT_MODEL,
    ):
        """`permanent_error`, when set, is raised instead of BikeshareError for errors a retry cannot fix."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token or None
        self.timeout = timeout
        self._permanent_error = permanent_error
        self.model_name = model_name

    def call(self, service: str, method: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """One unary RPC, e.g. call("TrainService", "GetJob", {"jobId": "…"})."""
        answer = self._call(service, method, request, missing_ok=False)
        assert answer is not None
        return answer

    def find(self, service: str, method: str, request: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """call(), but None when the server answers not_found."""
        return self._call(service, method, request, missing_ok=True)

    def model_version(self, version_or_alias: str) -> dict[str, Any] | None:
        """RegistryService.GetModelVersion of this client's model; None when there is no such version or alias."""
        answer = self.find(
            "RegistryService",
            "GetModelVersion",
            {"modelName": self.model_name, "versionOrAlias": version_or_alias},
        )
        return None if answer is None else answer["version"]

    def _call(
        self, service: str, method: str, request: dict[str, Any] | None, missing_ok: bool
    ) -> dict[str, Any] | None:
        what = f"bikeshare.v1.{service}/{method}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        body = json.dumps(request or {}).encode()
        req = urllib.request.Request(f"{self.base_url}/{what}", data=body, headers=headers, method="POST")
        status, payload = self._send(req, what)
        if status != 200:
            error = BikeshareError(
                what,
                str(payload.get("code", "unknown")),
                str(payload.get("message", "no error message")),
                status,
            )
            if missing_ok and error.code == "not_found":
                return None
            if error.permanent and self._permanent_error is not None:
                raise self._permanent_error(str(error))
            raise error
        return payload

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """A plain GET of a JSON route such as /readyz; returns the status with the body."""
        return self._send(urllib.request.Request(f"{self.base_url}{path}", method="GET"), f"GET {path}")

    def wait_for_job(
        self,
        job_id: str,
        timeout_s: float,
        poll_s: float = 2.0,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Polls TrainService.GetJob until the job ends; returns the last Job (any end state)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            job = self.call("TrainService", "GetJob", {"jobId": job_id})["job"]
            seen = (job.get("state"), job.get("stage"))
            if seen != last:
                last = seen
                (on_change or _log_job)(job)
            if job.get("state") in TERMINAL_JOB_STATES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} did not end within {timeout_s:.0f} s "
                    f"(state {job.get('state')}, stage {job.get('stage')}); it keeps running on the server"
                )
            time.sleep(poll_s)

    def wait_for_success(self, job_id: str, timeout_s: float, poll_s: float = 2.0) -> dict[str, Any]:
        """wait_for_job, raising when the job failed or was cancelled (its error in the message)."""
        job = self.wait_for_job(job_id, timeout_s, poll_s)
        if job.get("state") != "JOB_STATE_SUCCEEDED":
            state = str(job.get("state", "JOB_STATE_UNSPECIFIED")).removeprefix("JOB_STATE_").lower()
            message = f"job {job_id} {state} at stage {job.get('stage', '-')}: {job.get('error') or 'no error given'}"
            # The same job comes back on a retry (idempotency key), so retrying cannot help.
            raise (self._permanent_error or RuntimeError)(message)
        return job

    def _send(self, req: urllib.request.Request, what: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as res:
                return res.status, _json(res.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise BikeshareError(what, "unavailable", f"cannot reach {self.base_url}: {reason}") from None


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"code": "unknown", "message": f"not JSON: {raw[:200]!r}"}
    return value if isinstance(value, dict) else {"value": value}


def _log_job(job: dict[str, Any]) -> None:
    log.info(
        "job %s: %s, stage %s (%.0f%%)",
        job.get("id"),
        job.get("state"),
        job.get("stage", "-"),
        100 * float(job.get("progress", 0)),
    )


def client(conn_id: str = CONN_ID) -> Client:
    """The client a task uses: the Airflow Connection `conn_id` if defined, else the environment."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        conn = None
    model_name = os.environ.get("BIKESHARE_MODEL_NAME") or DEFAULT_MODEL
    if conn is not None:
        token = conn.password or None
        base_url = _connection_url(conn, conn_id)
        model_name = conn.extra_dejson.get("model_name") or model_name
        source = f"Airflow connection {conn_id}"
    else:
        token = os.environ.get("BIKESHARE_TOKEN") or None
        base_url = os.environ.get("BIKESHARE_URL") or DEFAULT_URL
        source = "BIKESHARE_URL" if "BIKESHARE_URL" in os.environ else f"default {DEFAULT_URL}"
    if token:
        # Connection passwords are masked by Airflow already; a token from the environment is not.
        mask_secret(token)
    log.info(
        "bikeshare at %s (from %s, %s), model %s", base_url, source, "with a token" if token else "no token", model_name
    )
    try:
        return Client(base_url, token, permanent_error=AirflowFailException, model_name=model_name)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def _connection_url(conn: Any, conn_id: str) -> str:
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ValueError(f"Airflow connection {conn_id}: host is empty; expected e.g. 127.0.0.1 or http://host:8080")
    if "://" in host:
        base = host
    else:
        # Airflow's HTTP connections keep the scheme in conn_type, or in `schema` as HttpHook reads it.
        scheme = next((s for s in (conn.schema, conn.conn_type) if s in ("http", "https")), "http")
        base = f"{scheme}://{host}"
    if conn.port and base.count(":") < 2:
        base = f"{base}:{conn.port}"
    return base
