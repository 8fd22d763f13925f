"""Give freed heap pages back to the operating system after start-up.

Loading folds the K masked weight copies inside onnxruntime; the temporaries of that folding are
freed but glibc keeps the pages, which would count as resident memory for the life of the
process (about 85 MB for the reference model).
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


def release_free_heap() -> None:
    """Call glibc's malloc_trim(0); a no-op where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        log.debug("malloc_trim is not available; resident memory stays as allocated")
        return
    trim(0)
