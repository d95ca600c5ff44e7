"""`--figures crop`: figure blocks cut out of the rendered page as soon as its answer is back,
in the stage that rendered it (`transforms/inference.py`), into `figures` rows. Only the crops
(bounded per page and in size) leave the stage; the page image never does."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from apache_beam.metrics import Metrics

from vlbeam.schemas.config import LayoutConfig
from vlbeam.schemas.elements import PageRef, Provenance, VLResult
from vlbeam.schemas.meta import meta_column
from vlbeam.transforms.answers.blocks import figure_caption, grid_to_page
from vlbeam.transforms.dead_letter import NAMESPACE
from vlbeam.transforms.layout import page_frame, read_page
from vlbeam.transforms.media.figure_crops import crop_figures
from vlbeam.transforms.media.text_layer import TEXT_SOURCE_MODEL

logger = logging.getLogger(__name__)

FIGURES_TAG = "figures"


@dataclass(frozen=True)
class FigureCropper:
    """What the inference stage needs to crop figures: the layout settings and provenance."""

    layout: LayoutConfig
    prov: Provenance

    def rows(self, ref: PageRef, result: VLResult, image: bytes) -> list[dict]:
        """The `figures` rows of one answered page (none unless the model read it)."""
        if result.text_source != TEXT_SOURCE_MODEL or not result.text:
            return []
        frame = page_frame(ref)
        blocks = read_page(ref, result, self.layout).blocks
        figures = [i for i, b in enumerate(blocks) if b.category == "figure"]
        boxed = [i for i in figures if blocks[i].box is not None]
        if len(boxed) < len(figures):
            Metrics.counter(NAMESPACE, "figures_skipped.no_box").inc(len(figures) - len(boxed))
        if not boxed or frame is None:
            return []
        try:
            crops, skipped = crop_figures(
                image,
                [blocks[i].box for i in boxed],
                max_crops=self.layout.max_figures_per_page,
                max_pixels=self.layout.max_figure_pixels,
            )
        except Exception as exc:  # an undecodable page image: no crops, the page stays
            logger.warning("cannot crop figures of page %d of %s: %s", ref.page_number,
                           ref.source_uri, exc)  # fmt: skip
            Metrics.counter(NAMESPACE, "figures_skipped.undecodable").inc(len(boxed))
            return []
        for reason, n in skipped.items():
            if n:
                Metrics.counter(NAMESPACE, f"figures_skipped.{reason}").inc(n)
        rows = []
        for figure_index, crop in enumerate(crops):
            at = boxed[crop.index]
            rows.append(
                {
                    "doc_id": ref.doc_id,
                    "source_uri": ref.source_uri,
                    "page_number": ref.page_number,
                    "figure_index": figure_index,
                    "bbox": grid_to_page(blocks[at].box, frame),
                    "bbox_unit": frame.unit,
                    "caption": figure_caption(blocks, at),
                    "image": crop.png,
                    "width_px": crop.width_px,
                    "height_px": crop.height_px,
                    "sha256": crop.sha256,
                    "model": self.prov.model,
                    "prompt_id": self.prov.prompt_id,
                    "run_id": self.prov.run_id,
                    "meta": meta_column(ref.meta),
                }
            )
        Metrics.counter(NAMESPACE, "figures_cropped").inc(len(rows))
        return rows
