# Cython declarations for resources.py (compiled when Cython is present; see setup.py).
cimport cython


@cython.final
cdef class KVBlockPool:
    cdef public long total, free, freed
    cdef public list used_by
    cpdef bint can_allocate(self, long n)
    cpdef bint allocate(self, long llm, long n) except -1
    cpdef release(self, long llm, long n)


@cython.final
cdef class SMUnits:
    cdef public long units, capacity, in_use
    cpdef bint try_acquire(self, long n)
    cpdef release(self, long n)
