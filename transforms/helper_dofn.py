"""The base of every DoFn that works through the helper process."""

from __future__ import annotations

import apache_beam as beam

from vlbeam.transforms.media.helper_process import HelperProcess


class HelperDoFn(beam.DoFn):
    """Starts one `HelperProcess` helper per DoFn instance in `setup`, stops it in `teardown`.
    `cfg` needs a `max_memory_mb` (the helper's address-space limit)."""

    def __init__(self, cfg) -> None:
        self._cfg = cfg
        self._worker: HelperProcess | None = None

    def setup(self) -> None:
        self._worker = HelperProcess(self._cfg.max_memory_mb)

    def teardown(self) -> None:
        if self._worker is not None:
            self._worker.close()
