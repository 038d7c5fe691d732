# Cython declarations for itl.py (compiled when Cython is present; see setup.py).
cimport cython


@cython.final
cdef class ITLBuffer:
    cdef public object hist
    cdef public list g, w, jt, jn, ja, ce, cn, cw
    cdef public long n, fold_at
