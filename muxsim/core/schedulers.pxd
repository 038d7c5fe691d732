# Cython declarations for schedulers.py (compiled when Cython is present; see setup.py).
cimport cython
from muxsim.core.llm cimport LLMRuntime, Request
from muxsim.core.resources cimport KVBlockPool, SMUnits


@cython.final
cdef class Job:
    cdef public object kind, reqs
    cdef public LLMRuntime llm
    cdef public double sm_pct
    cdef public long units, n_tokens, n_seqs


cdef class MeshScheduler:
    cdef public list llms
    cdef public KVBlockPool pool
    cdef public SMUnits sm
    cdef public long max_prefill_tokens, max_num_seqs
    cdef public dict _by_index
    @cython.locals(llm=LLMRuntime)
    cpdef bint add(self, Request req) except -1
    cpdef list schedule(self, double now)
    @cython.locals(llm=LLMRuntime)
    cpdef list complete(self, Job job, double now)
    cpdef _on_decode_done(self, LLMRuntime llm, long batch, long times=*)
    cpdef tuple decode_run(self, Job job)
    cpdef decode_runs(self, list jobs)
    cpdef skip_decodes(self, Job job, long k)
    @cython.locals(r=Request)
    cpdef bint _admissible(self, LLMRuntime llm, long max_seqs) except -1
    @cython.locals(tokens=long, r=Request)
    cpdef Job _prefill_job(self, LLMRuntime llm, list batch, double pct, long units)
    cpdef Job _decode_job(self, LLMRuntime llm, long n, double pct, long units)


cdef class ADBSScheduler(MeshScheduler):
    cdef public bint adaptive, overlap_phases
    cdef public double adapt_interval_s, _next_adapt
    cdef public object seq_tokens
    cdef public long _last_prefill, _last_decode, _window_max, n_adaptations
    cdef public list _window, _pf_units, _dec_units, _rotations
    cpdef long _seq_blocks(self, LLMRuntime llm) except? -1
    cpdef _set_quota_seqs(self, LLMRuntime llm)
    @cython.locals(w=list)
    cpdef _on_decode_done(self, LLMRuntime llm, long batch, long times=*)
    @cython.locals(llm=LLMRuntime, x=LLMRuntime, sm=SMUnits, free_units=long, i=long, k=long)
    cpdef tuple decode_run(self, Job job)
    @cython.locals(sm=SMUnits, free=long, min_dec=double, max_pf=long, x=LLMRuntime, i=long, job=Job, f=long,
                   until=double, out=list)
    cpdef decode_runs(self, list jobs)
    cpdef skip_decodes(self, Job job, long k)
    @cython.locals(sm=SMUnits, pool=KVBlockPool, jobs=list, starved=bint, i=long, llm=LLMRuntime, units=long,
                   batch=list, b=long)
    cpdef list schedule(self, double now)


cdef class VLLMScheduler(MeshScheduler):
    cdef public bint _busy
    cdef public long _all_units
    cpdef list complete(self, Job job, double now)
    @cython.locals(llm=LLMRuntime, x=LLMRuntime)
    cpdef tuple decode_run(self, Job job)
    @cython.locals(llm=LLMRuntime, batch=list, b=long)
    cpdef list schedule(self, double now)


cdef class FCFSScheduler(MeshScheduler):
    cdef public long _pf_units, _dec_units
    cdef public bint _prefill_running
    cdef public list _kv_wait
    cpdef list complete(self, Job job, double now)
    @cython.locals(llm=LLMRuntime, x=LLMRuntime, sm=SMUnits, free_units=long, pool=KVBlockPool)
    cpdef tuple decode_run(self, Job job)
    @cython.locals(pick=LLMRuntime, llm=LLMRuntime, cleared=list, freed=long)
    cpdef tuple _prefill_pick(self)
    @cython.locals(sm=SMUnits, pool=KVBlockPool, jobs=list, llm=LLMRuntime, pick=LLMRuntime, batch=list, b=long,
                   ready=list)
    cpdef list schedule(self, double now)
