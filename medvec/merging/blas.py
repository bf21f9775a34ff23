"""BLAS ``?axpy`` called so that it releases the GIL: ``y += a * x``, one fused multiply-add
per element.

scipy's own wrappers (``scipy.linalg.blas.saxpy``) hold the GIL while they run, so the
engine's reader thread, which needs the GIL between its reads, waited for every
accumulation: the merge ran as if on one thread. ctypes releases the GIL for the length of
a foreign call, and scipy publishes its BLAS functions as C pointers
(``scipy.linalg.cython_blas.__pyx_capi__``), so the same kernel is called through ctypes.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import cython_blas

__all__ = ["axpy"]

_INT = ctypes.POINTER(ctypes.c_int)
_ONE = ctypes.c_int(1)


@cache
def _kernel(name: str, scalar: type[ctypes.c_float] | type[ctypes.c_double]) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    capsule = ctypes.py_object(cython_blas.__pyx_capi__[name])
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    prototype = ctypes.CFUNCTYPE(
        None, _INT, ctypes.POINTER(scalar), ctypes.c_void_p, _INT, ctypes.c_void_p, _INT
    )
    return prototype(address)


def axpy(acc: NDArray[np.floating], row: NDArray[np.floating], coefficient: float) -> None:
    """``acc += coefficient * row`` in place (both contiguous, float32 or float64 alike)."""
    if (
        acc.shape != row.shape
        or acc.dtype != row.dtype
        or not (acc.flags.c_contiguous and row.flags.c_contiguous)
    ):
        raise ValueError("axpy needs two contiguous arrays of one shape and dtype")
    scalar = ctypes.c_double if acc.dtype == np.float64 else ctypes.c_float
    kernel = _kernel("daxpy" if acc.dtype == np.float64 else "saxpy", scalar)
    kernel(
        ctypes.byref(ctypes.c_int(acc.size)),
        ctypes.byref(scalar(coefficient)),
        row.ctypes.data,
        ctypes.byref(_ONE),
        acc.ctypes.data,
        ctypes.byref(_ONE),
    )
