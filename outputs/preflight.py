"""`--output` checked before any work: the folder can be created and written, with the
create-if-absent write the publish lease needs (outputs/store.py). A read-only path, a missing
bucket or missing credentials stop the run here with one line, not in Beam's `InitializeWrite`
after the model loaded."""

from __future__ import annotations

import contextlib
import os

from vlbeam.outputs.layout import attempts_dir, join
from vlbeam.outputs.store import create_if_absent, delete_quietly

_EXTRAS = {"gs": "apache-beam[gcp]", "s3": "apache-beam[aws]"}


class OutputNotWritable(ValueError):
    """The --output folder can't be created or written (a bad invocation: nothing ran)."""


def check_output_writable(output: str, run_id: str, attempt: str) -> None:
    """Create and delete a probe object under `output`; a local folder this made is removed
    again (a refused run leaves nothing behind)."""
    probe = join(attempts_dir(output), run_id, f"{attempt}.probe")
    local = "://" not in output
    existed = local and os.path.exists(output)
    try:
        if local:
            os.makedirs(output, exist_ok=True)
        if not create_if_absent(probe, b"vlbeam write check\n"):
            raise OSError(f"{probe} exists already")
    except ModuleNotFoundError as exc:
        scheme = output.split("://", 1)[0]
        raise OutputNotWritable(
            f"--output {output}: {exc.name} is missing; install {_EXTRAS.get(scheme, exc.name)}"
        ) from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise OutputNotWritable(
            f"--output {output} can't be written: {type(exc).__name__}: {first}"
        ) from None
    delete_quietly([probe])
    if local:
        folders = [os.path.dirname(probe), attempts_dir(output)] + ([] if existed else [output])
        for folder in folders:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if empty
