"""Golden exchanges of KServe's own REST client with our server, replayed by tests/serving/test_kserve.py.

KServe's InferenceRESTClient (kserve 0.21) sends tensors in the binary tensor extension by default.
kserve pins pandas<3 and psutil<6, which this project's pins exclude, so it cannot be a dev dependency,
and a test must not download it at run time. So this script runs once, in a venv of its own, against
our server serving the test suite's model (tests/serving/kserve/serve_test_model.py starts one), and
writes what the client sent and what it decoded from our answers; the test replays the requests byte
for byte and checks our answers decode to the same tensors:

    python3 -m venv /tmp/kserve-venv && /tmp/kserve-venv/bin/pip install kserve==0.21.0
    .venv/bin/python tests/serving/kserve/serve_test_model.py 8123 &     # prints "ready" when serving
    /tmp/kserve-venv/bin/python tests/serving/kserve/capture.py http://127.0.0.1:8123 > tests/serving/kserve/golden.json
"""

import asyncio
import base64
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


class Recording(httpx.AsyncBaseTransport):
    def __init__(self):
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges = []

    async def handle_async_request(self, request):
        body = await request.aread()
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        self.exchanges.append(
            {
                "method": request.method,
                "path": request.url.raw_path.decode(),
                "headers": {k.decode(): v.decode() for k, v in request.headers.raw if k.lower() != b"host"},
                "body": base64.b64encode(body).decode(),
                "status": response.status_code,
            }
        )
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)


def _decoded(result):
    return {
        output.name: np.asarray(output.as_numpy()).astype(str if output.datatype == "BYTES" else float).tolist()
        for output in result.outputs
    }


async def main(base):
    recording = Recording()
    client = InferenceRESTClient(RESTConfig(transport=recording, protocol="v2"))
    per_feature = []
    for index, name in enumerate(FEATURES):
        tensor = InferInput(name, [3, 1], "FP32")
        tensor.set_data_from_numpy(ROWS[:, index : index + 1])  # binary_data=True, the default
        per_feature.append(tensor)
    cases = []
    default = await client.infer(base, InferRequest("iris-clf", per_feature, request_id="kserve-1"), "iris-clf")
    cases.append(("per-feature tensors in binary, outputs as the client asks by default", default))
    single = InferInput("input-0", [3, 4], "FP32")
    single.set_data_from_numpy(ROWS)
    binary_out = InferRequest("iris-clf", [single], request_id="kserve-2", parameters={"binary_data_output": True})
    answered = await client.infer(base, binary_out, "iris-clf")
    cases.append(("one [n, 4] tensor in binary, binary_data_output", answered))
    golden = [
        {"case": case, **exchange, "client_decoded": _decoded(result), "client_id": result.id}
        for (case, result), exchange in zip(cases, recording.exchanges, strict=True)
    ]
    json.dump({"kserve": "0.21.0", "exchanges": golden}, sys.stdout, indent=1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
