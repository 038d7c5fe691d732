# Cython declarations for llm.py (compiled when Cython is present; see setup.py). The .py
# stays the source of truth and runs as it is without Cython.
cimport cython
from muxsim.core.itl cimport ITLBuffer
from muxsim.core.resources cimport KVBlockPool

cdef long _MASK, _SHIFT, _BLOCK


@cython.final
cdef class Request:
    cdef public long idx, llm, prompt, output, done, preemptions, kv_join, join_iter, bucket, epoch
    cdef public double arrival, last_tok
    cdef public object prefill_start, first_token, finish
    cpdef long total_steps(self)


@cython.final
cdef class LLMRuntime:
    cdef public long index, tp, slot, bps, n_active, iter, ctx, quota_seqs, quota_blocks, mesh
    cdef public object name, model, waiting, curve, evicted
    cdef public ITLBuffer itl
    cdef public double prefill_pct, decode_pct, rate, tok_end
    cdef public dict running
    cdef public list pending, buckets, _heap, join_tok, chain_ends
    cdef public bint prefill_busy, decode_busy

    cpdef double oldest_arrival(self)
    cpdef double oldest_running_arrival(self)
    cpdef bint has_decode_work(self)
    @cython.locals(r=Request, batch=list, tokens=long, length=long)
    cpdef list admit(self, KVBlockPool pool, long max_tokens, long max_seqs, double now)
    @cython.locals(r=Request, length=long, buf=ITLBuffer, done=list)
    cpdef list complete_prefill(self, list batch, KVBlockPool pool, double now)
    @cython.locals(r=Request, it=long, kv=long, b=long, jt=list, buckets=list)
    cpdef _merge_pending(self)
    @cython.locals(kv=long)
    cpdef long _release_running(self, Request r, KVBlockPool pool) except? -1
    @cython.locals(need_bucket=long, r=Request)
    cpdef long start_decode(self, KVBlockPool pool) except? -1
    @cython.locals(n=long, buf=ITLBuffer, it=long, heap=list, done=list, r=Request, epoch=long)
    cpdef list complete_decode(self, KVBlockPool pool, double now)
    cpdef end_itl(self)
    @cython.locals(ends=list, first=double, jt=list, k=long, stay=long)
    cpdef _record_gaps(self, ITLBuffer buf, long n, double now)
    @cython.locals(heap=list, cap=long, per_cycle=long, free=long, full=long, k=long, used=long, b=list,
                   bps=long, j=long, need=long)
    cpdef long decode_headroom(self, KVBlockPool pool) except? -1
    @cython.locals(need=long)
    cpdef skip_decodes(self, KVBlockPool pool, long k)
    @cython.locals(it=long, b=list, full=long, rest=long, need=long, j=long)
    cpdef long decode_blocks(self, long k) except? -1
    cpdef long blocks_per_seq(self, long seq_tokens)
