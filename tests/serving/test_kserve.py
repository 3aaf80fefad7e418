"""KServe's InferenceRESTClient in its default (binary) mode, replayed from golden exchanges.

kserve 0.21 cannot be installed beside this project's pins (it needs pandas<3), and tests download
nothing, so tests/serving/kserve/capture.py ran the real client once, in a venv of its own, against
serve.py serving this suite's model, and kept the bytes it sent and the tensors it decoded from our
answers (tests/serving/kserve/golden.json). Here the same bytes are sent again and our answers must
decode (with tritonclient's decoder of the same binary extension) to the same tensors.
"""

import base64
import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN = json.loads((Path(__file__).parent / "kserve" / "golden.json").read_text())

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("exchange", GOLDEN["exchanges"], ids=[e["case"] for e in GOLDEN["exchanges"]])
def test_kserve_rest_client_default_binary_requests_are_answered_as_it_decoded_them(production, client, exchange):
    from tritonclient.http import InferResult

    headers = {k.lower(): v for k, v in exchange["headers"].items()}
    assert "inference-header-content-length" in headers  # the client did send binary tensors
    response = client.generic(
        "POST",
        exchange["path"],
        base64.b64decode(exchange["body"]),
        content_type=headers.get("content-type", ""),
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=headers["inference-header-content-length"],
    )
    assert response.status_code == exchange["status"] == 200, response.content[:300]
    length = response.headers.get("Inference-Header-Content-Length")
    result = InferResult.from_response_body(response.content, header_length=int(length) if length else None)
    assert result.get_response()["id"] == exchange["client_id"]
    decoded = exchange["client_decoded"]
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
    assert labels == decoded["label"]
    assert np.allclose(result.as_numpy("probabilities"), np.array(decoded["probabilities"]), atol=1e-6)
