# Cython declarations for driver.py (compiled when Cython is present; see setup.py). The .py
# stays the source of truth and runs as it is without Cython.
cimport cython
from muxsim.core.llm cimport LLMRuntime, Request
from muxsim.core.resources cimport KVBlockPool
from muxsim.core.schedulers cimport Job, MeshScheduler


@cython.final
cdef class _Meshes:
    cdef public list scheds, local, nxt, job_rows, live, misses, backoff
    cdef public object speed, log
    cdef public bint fuse
    cdef public double stop_at, w0, w1, last_end
    cdef public long seq, n_jobs, n_done
    cpdef long _next_seq(self)
    @cython.locals(h=list, job=Job, d=double, first=tuple, room=double, pool=KVBlockPool)
    cpdef start(self, long m, list jobs, double t)
    @cython.locals(h=list, sched=MeshScheduler, bound=double, e=tuple, job=Job, k=long, until=double, j=long,
                   last=double, end=double, cands=list, chains=list, plans=list, most=long, free=long,
                   need=long, p=list, llm=LLMRuntime, sq=object, ends=list, runs=object)
    cpdef bint extend(self, long m, double t) except -1
    @cython.locals(j=long, n=long, tok=long, pct=double)
    cpdef tuple steps(self, Job job, long k, double last, double end, double bound, list ends)
    @cython.locals(h=list, sched=MeshScheduler, end=double, job=Job, r=Request)
    cpdef complete_until(self, long m, double t)
