"""TorchServe handler for image classifiers: encoded images in, the top-k labels with scores out.

Images arrive base64-encoded (v1 ``{"instances": [{"b64": "..."}]}`` or plain strings, v2 ``BYTES``) or as the raw
request body; they are decoded with Pillow, converted to grayscale or RGB, resized to ``image_size``
(bilinear), scaled to [0, 1] and normalised with ``mean``/``std`` (torch only, no torchvision). An image that
Pillow cannot read is the caller's fault (400). Archive with ``--handler <path of this file>``; TorchServe
instantiates the module's one class.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from model_handlers.base import EsteiraHandler
from model_handlers.pixels import PixelBudget
from model_handlers.protocol import BadRequest, Instance, Prediction


class ImageClassifierHandler(EsteiraHandler):
    """Decode, resize and normalise each image; top-k over the softmax of the model's logits."""

    def example_input(self) -> torch.Tensor:
        height, width = self._size()
        return torch.zeros(1, self.config.channels, height, width)

    def _size(self) -> tuple[int, int]:
        assert self.config.image_size is not None  # guaranteed for image configs
        return self.config.image_size

    def preprocess_instances(self, instances: Sequence[Instance]) -> torch.Tensor:
        """Decode every image; the request's decoded pixels are counted before each decode, so a request of
        many small files that expand to huge images is refused before it can stall the worker."""
        budget = PixelBudget(self.config.max_request_pixels)
        images = [self.decode(item, index, budget) for index, item in enumerate(instances)]
        return images[0].unsqueeze(0) if len(images) == 1 else torch.stack(images)

    def decode(self, data: Instance, index: int = 0, budget: PixelBudget | None = None) -> torch.Tensor:
        """One encoded image as its [channels, height, width] pixels (uint8), in the model's mode and size.

        An image already in that mode and size is taken as it is (Pillow's convert and resize would copy it).
        Scaling and normalising wait for the batch (:meth:`prepare_batch`): per image, the float conversion,
        division and tensor operations cost more than the whole batch's."""
        if not isinstance(data, bytes):
            raise BadRequest(f"instance {index}: an image model takes encoded images, not numbers")
        height, width = self._size()
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = image.width * image.height
                if pixels > self.config.max_image_pixels:
                    raise BadRequest(
                        f"instance {index}: image has {pixels} pixels; the limit is {self.config.max_image_pixels} "
                        "per image (max_image_pixels)"
                    )
                if budget is not None:
                    budget.spend(pixels, index)
                mode = "L" if self.config.channels == 1 else "RGB"
                fitted = image if image.mode == mode else image.convert(mode)
                if fitted.size != (width, height):
                    fitted = fitted.resize((width, height), Image.Resampling.BILINEAR)
                array = np.array(fitted, dtype=np.uint8)  # a copy: the tensor outlives the image
        except BadRequest:
            raise
        except UnidentifiedImageError:
            raise BadRequest(f"instance {index}: undecodable image: not a format Pillow recognises") from None
        except Exception as error:  # Pillow raises many types for bad input
            raise BadRequest(f"instance {index}: undecodable image: {_reason(error)}") from None
        tensor = torch.from_numpy(array)
        return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)

    def prepare_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Pixels scaled to [0, 1], then normalised with ``mean`` and ``std``: float32, as the model was trained."""
        scaled = batch / 255.0  # float32: a new tensor, so the requests' pixels stay as they were
        if self.config.mean is not None:
            scaled.sub_(torch.tensor(self.config.mean).view(1, -1, 1, 1))
        if self.config.std is not None:
            scaled.div_(torch.tensor(self.config.std).view(1, -1, 1, 1))
        return scaled

    def postprocess_outputs(self, outputs: torch.Tensor) -> list[Prediction]:
        predictions = []
        for row, best in self.classify(outputs, min(self.config.top_k, len(self.labels))):
            top = tuple((self.labels[i], row[i]) for i in best)
            predictions.append(Prediction(label=top[0][0], probabilities=tuple(row), top_k=top))
        return predictions


def _reason(error: Exception) -> str:
    """Pillow's message, first line only and without object reprs (they carry memory addresses)."""
    text = re.sub(r"\s*<[^>]*>", "", str(error)).strip()
    return (text.splitlines()[0][:120] if text else "") or type(error).__name__
