"""The base of every DoFn that works through the helper process (PDF rendering, video decoding)."""

from __future__ import annotations

import apache_beam as beam

from vlbeam.transforms.media.helper_process import HelperProcess


class HelperDoFn(beam.DoFn):
    """Starts one `HelperProcess` per DoFn instance in `setup`, stops it in `teardown`.
    `max_memory_mb` is the helper's address-space limit."""

    def __init__(self, max_memory_mb: int) -> None:
        self._max_memory_mb = max_memory_mb
        self._helper: HelperProcess | None = None

    def setup(self) -> None:
        self._helper = HelperProcess(self._max_memory_mb)

    def teardown(self) -> None:
        if self._helper is not None:
            self._helper.close()
