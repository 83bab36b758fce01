"""The C allocator during surfaces and Hessian products: freed activations stay in the heap instead of going back to the kernel."""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

HEAP_TOP_PAD_BYTES = 64 * 2**20
_GLIBC_DEFAULT_TOP_PAD = 128 * 1024  # man mallopt(3): M_TOP_PAD's default
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling for it on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TUNE_HEAP = True  # set False to leave the C allocator alone


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def roomy_heap(pad_bytes: int = HEAP_TOP_PAD_BYTES) -> Iterator[None]:
    """Keep `pad_bytes` of slack at the top of glibc's heap while a surface is evaluated (no-op elsewhere).

    A forward of a small conv net at batch 128 allocates and frees ~16 MB of activations; glibc hands
    that memory back to the kernel on every free (trim) and the next forward takes a page fault per
    4 KiB page (~4,000 faults per forward, measured), which cost more than the convolutions themselves
    on the team's CPU. With M_TOP_PAD the freed memory stays in the heap (0 faults), and with
    M_MMAP_THRESHOLD at glibc's 32 MiB ceiling activations up to that size come from the heap, not
    from fresh mmaps (the threshold glibc would otherwise freeze at its current value, as low as
    128 KiB in a fresh process). The pad is put back to glibc's default on exit; the threshold stays
    at 32 MiB, the value glibc's own adaptation reaches in a process that frees large blocks.
    `TUNE_HEAP = False` switches this off.
    """
    libc = _glibc() if TUNE_HEAP else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    libc.mallopt(_M_TOP_PAD, int(pad_bytes))
    try:
        yield
    finally:
        libc.mallopt(_M_TOP_PAD, _GLIBC_DEFAULT_TOP_PAD)
