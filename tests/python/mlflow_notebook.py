"""What a notebook does with MLflow, run by MLflow's own client against bikeshare's MLflow API.

Driven by tests/services/mlflow-api.test.ts: reads a job (tracking URI and tokens) as JSON on stdin and
prints what it saw as JSON on stdout; the test then checks through bikeshare's own RegistryService that
everything landed. Each step that is expected to fail records MLflow's error code instead.
"""

import json
import os
import sys
import tempfile

job = json.load(sys.stdin)
# MLflow prints its own lines ("View run …") on stdout: stdout is kept for the one JSON answer.
answer = sys.stdout
sys.stdout = sys.stderr
os.environ["MLFLOW_TRACKING_URI"] = job["uri"]
# The client sends MLFLOW_TRACKING_TOKEN as a bearer token; it reads the variable on every request.
os.environ["MLFLOW_TRACKING_TOKEN"] = job["tokens"]["trainer"]

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402


def as_token(role):
    os.environ["MLFLOW_TRACKING_TOKEN"] = job["tokens"][role]


def error_of(work):
    try:
        work()
    except MlflowException as e:
        return {"error_code": e.error_code, "message": str(e)}
    return {"error_code": None}


out = {}
client = MlflowClient()

# -- tracking: an experiment, two runs with params, metrics over steps, tags and an artifact --------
experiment = mlflow.set_experiment("notebook")
out["experiment_id"] = experiment.experiment_id
out["experiment_name"] = experiment.name

runs = {}
for name, depth, last in [("nb-a", "6", 50.0), ("nb-b", "8", 45.0)]:
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({"max_depth": depth, "eta": "0.1"})
        mlflow.log_param("objective", "squared_error")
        for step in range(5):
            mlflow.log_metric("rmse", last + (4 - step) * 5.0, step=step)
        mlflow.log_metrics({"mae": last / 2, "r2": 0.8}, step=4)
        mlflow.set_tags({"family": "gbtree", "notebook": "yes"})
        mlflow.set_tag("to_remove", "x")
        client.delete_tag(run.info.run_id, "to_remove")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "notes.txt")
            with open(path, "w") as f:
                f.write(f"run {name}: depth {depth}\n")
            mlflow.log_artifact(path)
            os.makedirs(os.path.join(tmp, "plots"))
            with open(os.path.join(tmp, "plots", "curve.csv"), "w") as f:
                f.write("step,rmse\n0,1\n")
            mlflow.log_artifacts(os.path.join(tmp, "plots"), artifact_path="plots")
        runs[name] = run.info.run_id
out["runs"] = runs

fetched = client.get_run(runs["nb-a"])
out["run"] = {
    "status": fetched.info.status,
    "run_name": fetched.info.run_name,
    "experiment_id": fetched.info.experiment_id,
    "artifact_uri": fetched.info.artifact_uri,
    "params": fetched.data.params,
    "metrics": fetched.data.metrics,
    "tags": {k: v for k, v in fetched.data.tags.items() if not k.startswith("mlflow.source")},
    "user_tag": fetched.data.tags.get("mlflow.user"),
}
out["history"] = [(m.step, m.value) for m in client.get_metric_history(runs["nb-a"], "rmse")]
out["artifacts"] = sorted((a.path, a.is_dir) for a in client.list_artifacts(runs["nb-a"]))
out["artifacts_in_plots"] = sorted(a.path for a in client.list_artifacts(runs["nb-a"], "plots"))
with tempfile.TemporaryDirectory() as tmp:
    local = mlflow.artifacts.download_artifacts(run_id=runs["nb-a"], artifact_path="notes.txt", dst_path=tmp)
    with open(local) as f:
        out["downloaded"] = f.read()

# -- search with MLflow's grammar and order_by --------------------------------------------------
found = mlflow.search_runs(
    experiment_names=["notebook"],
    filter_string="metrics.rmse < 60 and params.`max_depth` != '7' and status = 'FINISHED' and",
    order_by=["metrics.rmse ASC"],
    output_format="list",
)
out["search"] = [r.info.run_name for r in found]
out["search_desc"] = [
    r.info.run_name
    for r in mlflow.search_runs(
        experiment_names=["notebook"], order_by=["params.max_depth DESC"], output_format="list"
    )
]
out["search_null"] = [
    r.info.run_name
    for r in mlflow.search_runs(
        experiment_names=["notebook"],
        filter_string='tags."to_remove" IS NULL and run_name = \'nb-b\'',
        output_format="list",
    )
]
out["search_bad"] = error_of(
    lambda: mlflow.search_runs(experiment_names=["notebook"], filter_string="metrics.rmse == 1")
)

# -- registry: a model, a version from the run, aliases, details --------------------------------
client.create_registered_model("notebook-model", description="from a notebook")
version = client.create_model_version("notebook-model", source=f"runs:/{runs['nb-a']}/notes.txt", run_id=runs["nb-a"])
out["version"] = {"version": version.version, "run_id": version.run_id, "status": version.status}
client.update_model_version("notebook-model", version.version, description="first try")

out["trainer_alias"] = error_of(
    lambda: client.set_registered_model_alias("notebook-model", "champion", version.version)
)
as_token("admin")
client.set_registered_model_alias("notebook-model", "champion", version.version)
details = client.get_model_version("notebook-model", version.version)
out["details"] = {
    "version": details.version,
    "run_id": details.run_id,
    "description": details.description,
    "aliases": list(details.aliases),
    "status": details.status,
}
by_alias = client.get_model_version_by_alias("notebook-model", "champion")
out["by_alias"] = {"version": by_alias.version, "run_id": by_alias.run_id}
model = client.get_registered_model("notebook-model")
out["model"] = {"name": model.name, "description": model.description, "aliases": dict(model.aliases)}
out["versions_of_run"] = [
    v.version for v in client.search_model_versions(f"run_id = '{runs['nb-a']}' and name = 'notebook-model'")
]

# -- production: refused for a reader and a trainer, the audited forced move for an admin ----------
as_token("reader")
out["reader_production"] = error_of(
    lambda: client.set_registered_model_alias("notebook-model", "production", version.version)
)
out["reader_write"] = error_of(lambda: mlflow.set_experiment("reader-made"))
as_token("trainer")
out["trainer_production"] = error_of(
    lambda: client.set_registered_model_alias("notebook-model", "production", version.version)
)
second = client.create_model_version("notebook-model", source=f"runs:/{runs['nb-b']}", run_id=runs["nb-b"])
as_token("admin")
client.set_registered_model_alias("notebook-model", "production", version.version)
# version 2 was never evaluated against version 1: the gate would refuse it, the admin's move forces it.
client.set_registered_model_alias("notebook-model", "production", second.version)
out["production"] = client.get_model_version_by_alias("notebook-model", "production").version

# -- the reverse: runs made by bikeshare's own training job -------------------------------------
as_token("reader")
trained = mlflow.search_runs(experiment_names=[job["trained_experiment"]], output_format="list")
out["trained"] = [
    {"run_id": r.info.run_id, "status": r.info.status, "metrics": r.data.metrics, "params": r.data.params}
    for r in trained
]
out["missing_run"] = error_of(lambda: client.get_run("no-such-run"))

answer.write(json.dumps(out))
answer.flush()
