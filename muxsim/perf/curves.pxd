# Cython declarations for curves.py (compiled when Cython is present; see setup.py). The .py
# stays the source of truth and runs as it is without Cython.
cimport cython
from muxsim.perf.base cimport LatencyCurve

cdef long _VECTOR_STEPS, _CACHE_LIMIT


cdef class FittedCurve(LatencyCurve):
    cdef public object derived_from, prefill_params, decode_params
    cdef public object _p_go, _p_gw, _d_go, _d_gc, _d_ga
    cdef public double _p_O, _p_w0, _p_a, _p_r, _p_invN, _p_p, _p_nmax, _p_k, _p_invk
    cdef public double _d_O, _d_c, _d_k, _d_invk, _d_al, _d_be, _d_k2, _d_invk2
    cdef public dict _pc, _smax, _dc
    cpdef tuple _prefill_sm(self, double sm_pct)
    cpdef tuple _decode_sm(self, double sm_pct)
    @cython.locals(e=tuple, o=double, n=double, m=double, w=double)
    cpdef double prefill_s(self, long n_tokens, long n_seqs, double sm_pct) except? -1
    @cython.locals(e=tuple, b=double, t=double, g=double, x=double, y=double, r=double, f=double, fo=object)
    cpdef double decode_s(self, long batch, long ctx_tokens, double sm_pct) except? -1
    @cython.locals(o=double, c=double, k=double)
    cpdef double _decode_fixed_ms(self, tuple e, double b) except? -1
    @cython.locals(f=double)
    cpdef double _smax_of(self, double r) except? -1
    @cython.locals(e=tuple, b=double, tc=double, al=double, be=double, g=double, memo=dict, extra=double,
                   plain=bint, disp=double, j=long, nxt=long, x=double, y=double, t=double, d=double, n=long,
                   r=double, pr=double, pf=double, fo=object)
    cpdef tuple _steps(self, long batch, long ctx_tokens, double sm_pct, long k, double last, double end,
                       double bound, object dispatch_s, double per_seq_s, list ends)
