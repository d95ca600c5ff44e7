"""`figures/` (`--figures crop`): one row per figure block, cropped from the rendered page.

`bbox` in `bbox_unit` (see `blocks`); `caption`: the nearest caption (a block labelled
caption, or a short paragraph right below or above that starts like one, "Figure 3:"), null
if none; `image`: PNG bytes of the crop, `width_px` x `height_px`; `sha256` of `image`.
"""

import pyarrow as pa

from vlbeam.schemas.blocks import BBOX
from vlbeam.schemas.table_meta import table_schema

FIGURES = table_schema(
    "figures",
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("page_number", pa.int32(), nullable=False),
        pa.field("figure_index", pa.int32(), nullable=False),  # 0-based on its page
        pa.field("bbox", BBOX, nullable=False),
        pa.field("bbox_unit", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=True),
        pa.field("image", pa.binary(), nullable=False),  # PNG
        pa.field("width_px", pa.int32(), nullable=False),
        pa.field("height_px", pa.int32(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ],
)
