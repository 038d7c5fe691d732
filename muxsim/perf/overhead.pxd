# Cython declarations for overhead.py (compiled when Cython is present; see setup.py).
from muxsim.perf.base cimport LatencyCurve


cdef class OverheadCurve(LatencyCurve):
    cdef public bint _fitted
    cdef public object base
    cdef public double dispatch_s, per_seq_s
