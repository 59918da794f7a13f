"""KServe's Python model server with a minimal ``kserve.Model`` for the same TorchScript model (v1, no batching).

Runs in .tools/kserve-runtime-venv. The baseline for what KServe's server costs before Esteira's handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv when imported
    import kserve

    class StockModel(kserve.Model):  # type: ignore[misc]
        def load(self) -> bool:
            self.module = torch.jit.load(args.model_file).eval()
            self.ready = True
            return True

        async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            with torch.inference_mode():
                outputs = self.module(torch.tensor(payload["instances"], dtype=torch.float32)).softmax(dim=1)
            return {"predictions": outputs.tolist()}

    model = StockModel(args.name)
    model.load()
    kserve.ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
