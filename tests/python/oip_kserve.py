"""The kserve SDK's REST client (InferenceRESTClient, protocol v2) against bikeshare's OIP v2 API.

Same job on stdin and same output shape as oip_triton.py; a process of its own because kserve and
tritonclient both register the protocol's protobuf messages under the same names.
"""

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

job = json.load(sys.stdin)
rows = np.array(job["rows"], dtype=np.float64)
stamps = np.array([s.encode() for s in job["timestamps"]], dtype=np.object_)
model, version, n = job["model"], job["version"], len(job["rows"])
base = f"http://{job['address']}"
token = job["token"]


def auth():
    """A new dict each call: both clients add Inference-Header-Content-Length to the dict they are given."""
    return {"Authorization": f"Bearer {token}"}


out = {}


async def run(name, coro):
    try:
        out[name] = {"ok": await coro}
    except httpx.HTTPStatusError as e:
        out[name] = {"error": str(e), "status": e.response.status_code}


def request(binary, request_id):
    """The [N, 12] FP32 tensor and the timestamp tensor, as binary data or as JSON."""
    tensor = InferInput("input", [n, 12], "FP32")
    tensor.set_data_from_numpy(rows.astype(np.float32), binary_data=binary)
    stamp = InferInput("timestamp", [n], "BYTES")
    stamp.set_data_from_numpy(stamps, binary_data=binary)
    return InferRequest(model_name=model, infer_inputs=[tensor, stamp], request_id=request_id)


async def predictions(coro):
    response = await coro
    [output] = response.outputs
    assert output.name == "cnt" and output.datatype == "FP32" and list(output.shape) == [n, 1], output
    return np.asarray(output.as_numpy(), dtype=np.float32).reshape(n).tolist()


async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    try:
        await run("kserve.live", client.is_server_live(base))
        await run("kserve.ready", client.is_server_ready(base))
        await run("kserve.model_ready", client.is_model_ready(base, model, headers=auth()))
        await run("kserve.json", predictions(client.infer(base, request(False, "oip-kserve-json"), model, headers=auth())))
        await run("kserve.binary", predictions(client.infer(base, request(True, "oip-kserve-binary"), model, headers=auth())))
        bad = request(False, "oip-kserve-bad")
        corrupt = rows.astype(np.float32)
        corrupt[1, 7] = 9  # row 1's weathersit (column 7) out of range
        bad.inputs[0].set_data_from_numpy(corrupt, binary_data=False)
        await run("kserve.bad_row", predictions(client.infer(base, bad, model, headers=auth())))
    finally:
        await client.close()


asyncio.run(main())
print(json.dumps(out))
