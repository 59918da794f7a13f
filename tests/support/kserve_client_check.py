"""Talk to a model server with KServe's own Python client, as a user would; print what it saw as one JSON object.

Runs inside .tools/kserve-client-venv (see kserve-client-requirements.txt for why not in the project's
environment): ``python kserve_client_check.py BASE_URL MODEL VECTOR_JSON``. The tests judge the printed
answers, so this script decides nothing and exits non-zero only when the client itself raises unexpectedly.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


async def v2(base: str, model: str, rows: list[list[float]]) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        seen: dict[str, Any] = {
            "server_live": await client.is_server_live(base),
            "server_ready": await client.is_server_ready(base),
            "model_ready": await client.is_model_ready(base, model),
            "unknown_model_ready": await client.is_model_ready(base, model + "-missing"),
        }
        data = np.array(rows, dtype=np.float32)
        for binary in (False, True):
            tensor = InferInput(name="input-0", shape=list(data.shape), datatype="FP32")
            tensor.set_data_from_numpy(data, binary_data=binary)
            request = InferRequest(
                model_name=model,
                infer_inputs=[tensor],
                parameters={"binary_data_output": binary},
                request_outputs=[RequestedOutput("probabilities")],
            )
            response = await client.infer(base, request, model_name=model)
            outputs = {output.name: output.as_numpy().tolist() for output in response.outputs}
            seen[f"infer_binary_{str(binary).lower()}"] = outputs
        return seen
    finally:
        await client.close()


async def v1(base: str, model: str, rows: list[list[float]]) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
    try:
        return {
            "v1_server_live": await client.is_server_live(base),
            "v1_model_ready": await client.is_model_ready(base, model),
            "v1_predict": await client.infer(base, {"instances": rows}, model_name=model),
        }
    finally:
        await client.close()


async def main(base: str, model: str, rows: list[list[float]]) -> dict[str, Any]:
    return {**await v2(base, model, rows), **await v1(base, model, rows)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))))
