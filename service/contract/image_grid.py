"""PNG grids of binary or grey-level images, so a person can look at samples and completions
(served by /v1 and drawn by the study)."""

import io

import numpy as np
from PIL import Image

SCALE = 4  # screen pixels per model pixel
GAP = 1  # model pixels between tiles


def grid_png(
    images: np.ndarray,
    image_shape: tuple[int, int],
    columns: int | None = None,
    max_level: int = 1,
) -> bytes:
    """images: [N, D] levels 0..max_level (0/1 by default) -> one PNG with the N images tiled,
    the top level white."""
    height, width = image_shape
    count = len(images)
    columns = columns or max(1, min(count, int(np.ceil(np.sqrt(count)))))
    rows = int(np.ceil(count / columns))
    canvas = np.full(
        (rows * (height + GAP) + GAP, columns * (width + GAP) + GAP), 96, dtype=np.uint8
    )
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = GAP + r * (height + GAP), GAP + c * (width + GAP)
        grey = np.rint(image.reshape(height, width) * (255 / max_level))
        canvas[top : top + height, left : left + width] = grey
    picture = Image.fromarray(canvas).resize(
        (canvas.shape[1] * SCALE, canvas.shape[0] * SCALE), Image.Resampling.NEAREST
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
