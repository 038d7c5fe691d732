# Cython declarations for base.py (compiled when Cython is present; see setup.py).

cdef class LatencyCurve:
    cdef public object model, n_gpus, gpu, source
