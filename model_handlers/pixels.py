"""A request's budget of decoded pixels (``max_request_pixels``), kept out of the handler modules: TorchServe
loads a handler file by instantiating its one class, so those files define exactly one."""

from __future__ import annotations

from model_handlers.protocol import BadRequest


class PixelBudget:
    """Decoded pixels left for one request (``max_request_pixels``)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def spend(self, pixels: int, index: int) -> None:
        self.used += pixels
        if self.used > self.limit:
            raise BadRequest(
                f"instance {index}: this request's images decode to more than {self.limit} pixels in all "
                f"({self.used} up to this one); the limit is per request (max_request_pixels): send fewer or "
                "smaller images"
            )
