"""Triton's own clients (tritonclient[http,grpc]) against bikeshare's Open Inference Protocol v2 API.

Reads a JSON job on stdin (address, token, model, version, rows of the 12 raw fields, their ISO-8601
timestamps) and prints one JSON object: for each case, the predictions the client decoded, or the error
it raised. tests/services/oip-v2.test.ts asserts on it. kserve runs in its own process (oip_kserve.py):
both packages register the protocol's messages under the same names, and one process cannot hold both.
"""

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

FIELDS = ["season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp", "hum", "windspeed"]
INTEGER_FIELDS = set(FIELDS[:8])

job = json.load(sys.stdin)
rows = np.array(job["rows"], dtype=np.float64)
stamps = np.array([s.encode() for s in job["timestamps"]], dtype=np.object_)
model, version, n = job["model"], job["version"], len(job["rows"])
token = job["token"]


def auth():
    """A new dict each call: both clients add Inference-Header-Content-Length to the dict they are given."""
    return {"Authorization": f"Bearer {token}"}


# gRPC metadata keys are lower case.
grpc_auth = {"authorization": f"Bearer {token}"}
out = {}


def run(name, fn):
    try:
        out[name] = {"ok": fn()}
    except InferenceServerException as e:
        out[name] = {"error": e.message(), "status": e.status()}
    except grpc.RpcError as e:
        out[name] = {"error": e.details(), "status": e.code().name}


def named(module, datatypes, binary, corrupt=None):
    """The 12 field tensors, shape [N]; `corrupt` = (field, row, value) puts one bad value in."""
    inputs = []
    for i, field in enumerate(FIELDS):
        datatype = datatypes(field)
        column = rows[:, i].copy()
        if corrupt and corrupt[0] == field:
            column[corrupt[1]] = corrupt[2]
        tensor = module.InferInput(field, [n], datatype)
        array = column.astype({"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}[datatype])
        if module is th:
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def matrix(module, datatype, binary, with_stamps=True):
    """One [N, 12] tensor in the documented column order, and the timestamp tensor."""
    tensor = module.InferInput("input", [n, 12], datatype)
    array = rows.astype(np.float32 if datatype == "FP32" else np.float64)
    stamp = module.InferInput("timestamp", [n], "BYTES")
    if module is th:
        tensor.set_data_from_numpy(array, binary_data=binary)
        stamp.set_data_from_numpy(stamps, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)
        stamp.set_data_from_numpy(stamps)
    return [tensor, stamp] if with_stamps else [tensor]


def predictions(result):
    cnt = result.as_numpy("cnt")
    assert cnt.dtype == np.float32 and cnt.shape == (n, 1), (cnt.dtype, cnt.shape)
    return cnt[:, 0].tolist()


fp32 = lambda field: "FP32"  # noqa: E731
mixed = lambda field: "INT32" if field in INTEGER_FIELDS else "FP64"  # noqa: E731

# --- HTTP -----------------------------------------------------------------------------------------
http = th.InferenceServerClient(url=job["address"])
run("http.live", lambda: http.is_server_live())
run("http.ready", lambda: http.is_server_ready())
run("http.model_ready", lambda: http.is_model_ready(model, headers=auth()))
run("http.metadata", lambda: http.get_model_metadata(model, headers=auth()))
run("http.server_metadata", lambda: http.get_server_metadata())
# Binary tensor data both ways (tritonclient's default), and outputs not named: binary_data_output.
run("http.named_binary", lambda: predictions(http.infer(model, named(th, fp32, True), headers=auth(), request_id="oip-http-named-binary")))
run(
    "http.named_json",
    lambda: predictions(
        http.infer(
            model,
            named(th, mixed, False),
            outputs=[th.InferRequestedOutput("cnt", binary_data=False)],
            headers=auth(),
            request_id="oip-http-named-json",
        )
    ),
)
run(
    "http.matrix_binary",
    lambda: predictions(http.infer(model, matrix(th, "FP32", True), model_version=version, headers=auth(), request_id="oip-http-matrix-binary")),
)
run(
    "http.matrix_json",
    lambda: predictions(
        http.infer(
            model,
            matrix(th, "FP64", False),
            outputs=[th.InferRequestedOutput("cnt", binary_data=False)],
            headers=auth(),
            request_id="oip-http-matrix-json",
        )
    ),
)
run("http.bad_row", lambda: predictions(http.infer(model, named(th, mixed, False, ("hr", 2, 24)), headers=auth())))
run("http.bad_version", lambda: predictions(http.infer(model, named(th, fp32, True), model_version="999", headers=auth())))
run("http.unknown_model", lambda: http.get_model_metadata("not-a-model", headers=auth()))
run("http.no_token", lambda: predictions(http.infer(model, named(th, fp32, True))))

# --- gRPC -----------------------------------------------------------------------------------------
client = tg.InferenceServerClient(url=job["address"])
run("grpc.live", lambda: client.is_server_live())
run("grpc.ready", lambda: client.is_server_ready())
run("grpc.model_ready", lambda: client.is_model_ready(model, headers=grpc_auth))
run("grpc.metadata", lambda: client.get_model_metadata(model, headers=grpc_auth, as_json=True))
# tritonclient's gRPC client sends raw_input_contents.
run("grpc.named_raw", lambda: predictions(client.infer(model, named(tg, fp32, True), headers=grpc_auth, request_id="oip-grpc-named-raw")))
run(
    "grpc.matrix_raw",
    lambda: predictions(client.infer(model, matrix(tg, "FP64", True), model_version=version, headers=grpc_auth, request_id="oip-grpc-matrix-raw")),
)
run("grpc.bad_row", lambda: predictions(client.infer(model, named(tg, mixed, True, ("temp", 1, 1.5)), headers=grpc_auth)))
run("grpc.bad_version", lambda: predictions(client.infer(model, named(tg, fp32, True), model_version="999", headers=grpc_auth)))
run("grpc.no_token", lambda: predictions(client.infer(model, named(tg, fp32, True))))


def typed():
    """Typed contents (fp64/int/bytes_contents), through Triton's published stub: the client only sends raw."""
    request = service_pb2.ModelInferRequest(model_name=model, id="oip-grpc-typed")
    for i, field in enumerate(FIELDS):
        tensor = request.inputs.add(name=field, datatype=mixed(field), shape=[n])
        if field in INTEGER_FIELDS:
            tensor.contents.int_contents.extend(int(v) for v in rows[:, i])
        else:
            tensor.contents.fp64_contents.extend(float(v) for v in rows[:, i])
    stamp = request.inputs.add(name="timestamp", datatype="BYTES", shape=[n])
    stamp.contents.bytes_contents.extend(stamps.tolist())
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(job["address"]))
    response = stub.ModelInfer(request, metadata=list(grpc_auth.items()))
    [output] = response.outputs
    assert output.name == "cnt" and output.datatype == "FP32" and list(output.shape) == [n, 1], output
    assert len(response.raw_output_contents) == 0
    return list(output.contents.fp32_contents)


run("grpc.typed", typed)

print(json.dumps(out))
