/* shmsession._hot: the compiled hot path (see _build.py).
 *
 * One call does one whole operation of the commonest kinds -- digest the id, probe the table,
 * copy the value out, or journal and overwrite it in place -- on the same segment layout
 * (_layout.py), with the same undo journal (_journal.py) and the same seqlock (_reader.py)
 * as the pure-Python path, so processes of either kind share a store and repair each
 * other's crashes. Anything else returns SLOW and the caller takes the pure-Python path,
 * which is the reference: a miss of the fast read's conditions, a new entry, a value that
 * needs a new block, an expired entry, an owner, a busy lock after the spin, an id that is
 * not plain ASCII, a closed handle. Every store a transaction makes here is preceded by the
 * undo record that puts it back, in the Python journal's order, and the journal's fault hook
 * (Journal.fault, for the crash tests) is called at the same points.
 *
 * Memory order: the segment's control words are loaded and stored whole (8-byte aligned,
 * __atomic); a writer's store that opens the read sequence is fenced before the stores it
 * covers, and every control word store is a release, so the compiler keeps the journal's
 * order (a record whole before the word that counts it). Lock-free reads run only where the
 * Python side allows them (x86, see _reader.LOCK_FREE_READS).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#include "_blake2b.h"

/* ------------------------------------------------------------------ the layout (_layout.py) */
#define USED_W (128 >> 3)
#define NEXT_TXID_W (136 >> 3)
#define DIRTY_W (144 >> 3)
#define FLAGS_W (152 >> 3)
#define VERSION_W (160 >> 3)
#define SEQ_W (168 >> 3)
#define COUNTERS_W (1024 >> 3)
#define SWEEP_CURSOR_W (COUNTERS_W + 8)
#define SLOT_SHIFT 7
#define SLOT_SIZE 128
#define SLOT_STATE 16
#define SLOT_LEN 20
#define SLOT_VOFF 24
#define SLOT_CREATED 32
#define SLOT_EXPIRES 40
#define SLOT_ATIME 48
#define SLOT_VERSION 56
#define SLOT_HALF 64 /* the part of a slot every operation writes (SLOT) */
#define DIGEST 16
#define BLOCK_TAIL 24
#define BLOCK_OVERHEAD 32
#define MIN_BLOCK 32
#define INPLACE_MAX (64 << 10)
#define MAX_ID_BYTES 1024
#define SWEEP_EVERY 32 /* _engine._SWEEP_EVERY */
#define SWEEP_SLOTS 64 /* _engine._SWEEP_SLOTS */
#define HOUSEKEEPING_EVERY 64 /* _reader.HOUSEKEEPING_EVERY */
#define PEEK_TRIES 3 /* _reader._PEEK_TRIES */
#define SPIN 200 /* _reader._SPIN */
#define LOCK_SPIN_NS 50000 /* _lock._SPIN_NS */
#define LOCK_SPIN_LOADS 100 /* _lock._SPIN_LOADS */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static inline uint64_t rd64(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t rd32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void wr64(char *p, uint64_t v) { memcpy(p, &v, 8); }

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.monotonic_ns's clock */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* zlib's crc32, for the journal's record checks (_journal._entry_crc) */
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320U ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffU;
    while (n--) c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffU;
}

/* ------------------------------------------------------------------ the handle's hot path */
typedef struct {
    PyObject_HEAD
    Py_buffer view; /* the segment's mapping, pinned until close() */
    int open;
    char *b;
    volatile uint64_t *w; /* the segment as 8-byte words */
    uint64_t table_off, mask, heap_off, heap_end, max_value, journal_off, journal_size;
    b2_keyed ids;
    int lock_free, touch_on_read;
    int64_t default_ttl_ns;
    PyObject *lock;      /* the StoreLock: closed, fd and its thread lock, read per op */
    PyObject *journal;   /* the Journal: its fault hook, and rollback */
    PyObject *repair;    /* Access.repair: under the lock, when anything needs repair */
    PyObject *housekeep; /* Reader.housekeep: every HOUSEKEEPING_EVERY-th read */
    PyObject *sweep;     /* Engine.sweep_next: the engine's next write sweeps */
    PyObject *not_found; /* SessionNotFound */
    uint64_t reads, locks, writes;
    /* pending counts, taken by PendingCounts (take_counts) */
    uint64_t hits, misses, writes_done, waits, wait_ns;
} Hot;

static PyObject *SLOW; /* "take the pure-Python path" */
static PyObject *s_closed, *s_fd, *s_tlock, *s_acquire, *s_release, *s_fault, *s_rollback;

static void hot_release_view(Hot *h) {
    if (h->open) {
        h->open = 0;
        PyBuffer_Release(&h->view);
    }
}

static int hot_traverse(Hot *h, visitproc visit, void *arg) {
    Py_VISIT(h->lock);
    Py_VISIT(h->journal);
    Py_VISIT(h->repair);
    Py_VISIT(h->housekeep);
    Py_VISIT(h->sweep);
    Py_VISIT(h->not_found);
    return 0;
}

static int hot_clear(Hot *h) {
    Py_CLEAR(h->lock);
    Py_CLEAR(h->journal);
    Py_CLEAR(h->repair);
    Py_CLEAR(h->housekeep);
    Py_CLEAR(h->sweep);
    Py_CLEAR(h->not_found);
    return 0;
}

static void hot_dealloc(Hot *h) {
    PyObject_GC_UnTrack(h);
    hot_release_view(h);
    hot_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

/* Hot(buf, bounds, journal_off, journal_size, secret, lock, journal, repair, housekeep,
 *     sweep, not_found, lock_free, touch_on_read, default_ttl_ns) */
static int hot_init(Hot *h, PyObject *args, PyObject *kw) {
    PyObject *buf, *lock, *journal, *repair, *housekeep, *sweep, *not_found;
    unsigned long long table_off, mask, heap_off, heap_end, max_value, journal_off, journal_size;
    Py_buffer secret;
    int lock_free, touch_on_read;
    long long default_ttl_ns;
    if (!PyArg_ParseTuple(args, "O(KKKKK)KKy*OOOOOOppL:Hot", &buf, &table_off, &mask, &heap_off,
                          &heap_end, &max_value, &journal_off, &journal_size, &secret, &lock,
                          &journal, &repair, &housekeep, &sweep, &not_found, &lock_free,
                          &touch_on_read, &default_ttl_ns))
        return -1;
    if (secret.len < 1 || secret.len > 64) {
        PyBuffer_Release(&secret);
        PyErr_SetString(PyExc_ValueError, "the secret must be 1 to 64 bytes");
        return -1;
    }
    b2_init_keyed(&h->ids, secret.buf, (size_t)secret.len, DIGEST, NULL);
    PyBuffer_Release(&secret);
    if (h->open) hot_release_view(h);
    if (PyObject_GetBuffer(buf, &h->view, PyBUF_WRITABLE) < 0) return -1;
    h->open = 1;
    if ((uintptr_t)h->view.buf & 7 || (uint64_t)h->view.len < heap_end) {
        hot_release_view(h);
        PyErr_SetString(PyExc_ValueError, "the buffer is not the segment these bounds describe");
        return -1;
    }
    h->b = h->view.buf;
    h->w = (volatile uint64_t *)h->view.buf;
    h->table_off = table_off;
    h->mask = mask;
    h->heap_off = heap_off;
    h->heap_end = heap_end;
    h->max_value = max_value;
    h->journal_off = journal_off;
    h->journal_size = journal_size;
    h->lock_free = lock_free;
    h->touch_on_read = touch_on_read;
    h->default_ttl_ns = default_ttl_ns;
#define SET(field, value) Py_XSETREF(h->field, Py_NewRef(value))
    SET(lock, lock);
    SET(journal, journal);
    SET(repair, repair);
    SET(housekeep, housekeep);
    SET(sweep, sweep);
    SET(not_found, not_found);
#undef SET
    return 0;
}

/* The keyed digest of a plain id: a str of 1 to MAX_ID_BYTES ASCII characters (what the
 * pure path's Digests.of computes for it). 0 when the id is something else: the caller
 * returns SLOW, and the pure path validates it (and raises, or digests its UTF-8). */
static int digest_of(Hot *h, PyObject *sid, uint8_t out[DIGEST]) {
    if (!PyUnicode_CheckExact(sid) || !PyUnicode_IS_ASCII(sid)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(sid);
    if (n < 1 || n > MAX_ID_BYTES) return 0;
    b2_digest(&h->ids, PyUnicode_1BYTE_DATA(sid), (size_t)n, out);
    return 1;
}

#define ST_HIT 1
#define ST_MISS 2
#define ST_SLOW 3

/* A read that takes no lock (_reader.Reader._peek): ST_HIT with *value (a new bytes) and
 * *version, ST_MISS, ST_SLOW (an expired entry, sliding expiry, a writer at work too long,
 * a torn view three times: the locked path settles it), or -1 with an exception (the
 * housekeeping's). */
static int peek(Hot *h, const uint8_t digest[DIGEST], PyObject **value, uint64_t *version) {
    if (!h->lock_free || !h->open) return ST_SLOW;
    if (!(++h->reads % HOUSEKEEPING_EVERY)) {
        PyObject *r = PyObject_CallNoArgs(h->housekeep);
        if (r == NULL) return -1;
        Py_DECREF(r);
        if (!h->open) return ST_SLOW; /* the housekeeping may have closed it (unlinked) */
    }
    const char *b = h->b;
    volatile uint64_t *w = h->w;
    uint64_t mask = h->mask, home = rd64((const char *)digest) & mask;
    for (int tries = 0; tries < PEEK_TRIES; tries++) {
        uint64_t seq = LOAD(&w[SEQ_W]);
        if (seq & 1) {
            int spins = 0;
            while (spins < SPIN && (seq = LOAD(&w[SEQ_W])) & 1) spins++;
            if (seq & 1) return ST_SLOW;
        }
        uint64_t i = home, pos;
        uint8_t used;
        int same;
        for (;;) {
            pos = h->table_off + (i << SLOT_SHIFT);
            used = (uint8_t)b[pos + SLOT_STATE];
            same = memcmp(b + pos, digest, DIGEST) == 0;
            if (!used || same) break;
            i = (i + 1) & mask;
            if (i == home) break; /* a whole lap without an empty slot: a torn view */
        }
        if (!used) {
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (LOAD(&w[SEQ_W]) != seq) continue;
            h->misses++;
            return ST_MISS;
        }
        if (!same) continue;
        uint64_t n = rd32(b + pos + SLOT_LEN), voff = rd64(b + pos + SLOT_VOFF);
        int64_t expires = (int64_t)rd64(b + pos + SLOT_EXPIRES);
        uint64_t ver = rd64(b + pos + SLOT_VERSION);
        int64_t now = now_ns();
        if (expires && (expires <= now || (h->touch_on_read && h->default_ttl_ns)))
            return ST_SLOW; /* reclaim it, or slide its expiry: both write */
        if (voff < h->heap_off || voff + n > h->heap_end || n > h->max_value) continue;
        /* Allocate first, copy after: the allocation may run the collector, and with it
         * code that closes this handle (then the mapping is gone: take the slow path). */
        PyObject *v = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (v == NULL) return -1;
        if (!h->open) {
            Py_DECREF(v);
            return ST_SLOW;
        }
        memcpy(PyBytes_AS_STRING(v), b + voff, n);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (LOAD(&w[SEQ_W]) != seq) {
            Py_DECREF(v);
            continue;
        }
        /* advisory, like the pure path's: steers eviction only */
        __atomic_store_n(&w[(pos + SLOT_ATIME) >> 3], (uint64_t)now, __ATOMIC_RELAXED);
        h->hits++;
        *value = v;
        *version = ver;
        return ST_HIT;
    }
    return ST_SLOW;
}

static PyObject *hot_read(Hot *h, PyObject *sid) {
    uint8_t d[DIGEST];
    PyObject *value;
    uint64_t version;
    if (!digest_of(h, sid, d)) return Py_NewRef(SLOW);
    switch (peek(h, d, &value, &version)) {
    case ST_HIT:
        return value;
    case ST_MISS:
        PyErr_SetString(h->not_found, "no session with this id (absent or expired)");
        return NULL;
    case ST_SLOW:
        return Py_NewRef(SLOW);
    default:
        return NULL;
    }
}

static PyObject *hot_get(Hot *h, PyObject *const *args, Py_ssize_t nargs) {
    uint8_t d[DIGEST];
    PyObject *value;
    uint64_t version;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "get(sid, default)");
        return NULL;
    }
    if (!digest_of(h, args[0], d)) return Py_NewRef(SLOW);
    switch (peek(h, d, &value, &version)) {
    case ST_HIT:
        return value;
    case ST_MISS:
        return Py_NewRef(args[1]);
    case ST_SLOW:
        return Py_NewRef(SLOW);
    default:
        return NULL;
    }
}

/* (value, version), None for a miss, or SLOW */
static PyObject *hot_find(Hot *h, PyObject *sid) {
    uint8_t d[DIGEST];
    PyObject *value;
    uint64_t version;
    if (!digest_of(h, sid, d)) return Py_NewRef(SLOW);
    switch (peek(h, d, &value, &version)) {
    case ST_HIT: {
        PyObject *v = PyLong_FromUnsignedLongLong(version);
        if (v == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        PyObject *t = PyTuple_Pack(2, value, v);
        Py_DECREF(value);
        Py_DECREF(v);
        return t;
    }
    case ST_MISS:
        Py_RETURN_NONE;
    case ST_SLOW:
        return Py_NewRef(SLOW);
    default:
        return NULL;
    }
}

/* ------------------------------------------------------------------ the lock (_lock.py) */
/* Take the handle's lock as StoreLock.acquire does when its thread lock is free: the
 * thread lock, then flock, tried for LOCK_SPIN_NS while watching the holder's dirty word.
 * 1: held (*tlock is the thread lock to release); 0: not taken (closed, another thread of
 * this process in a critical section, still busy after the spin: the pure path waits); -1:
 * an exception. */
static int lock_take(Hot *h, PyObject **tlock, int *fd) {
    PyObject *closed = PyObject_GetAttr(h->lock, s_closed);
    if (closed == NULL) return -1;
    int is_closed = closed != Py_False;
    Py_DECREF(closed);
    if (is_closed) return 0;
    PyObject *t = PyObject_GetAttr(h->lock, s_tlock);
    if (t == NULL) return -1;
    PyObject *args[2] = {t, Py_False};
    PyObject *got = PyObject_VectorcallMethod(s_acquire, args, 2, NULL);
    if (got == NULL) {
        Py_DECREF(t);
        return -1;
    }
    int taken = got == Py_True;
    Py_DECREF(got);
    if (!taken) {
        Py_DECREF(t);
        return 0;
    }
    PyObject *fdo = PyObject_GetAttr(h->lock, s_fd);
    long f = fdo == NULL ? -1 : PyLong_AsLong(fdo);
    Py_XDECREF(fdo);
    if (f < 0 || !h->open) goto give_back; /* closed meanwhile, or no descriptor */
    if (flock((int)f, LOCK_EX | LOCK_NB) == 0) goto held;
    if (errno != EWOULDBLOCK) goto give_back;
    {
        volatile uint64_t *w = h->w;
        int64_t t0 = now_ns(), deadline = t0 + LOCK_SPIN_NS;
        for (;;) {
            for (int k = 0; k < LOCK_SPIN_LOADS && LOAD(&w[DIRTY_W]); k++) {
            }
            if (flock((int)f, LOCK_EX | LOCK_NB) == 0) {
                h->waits++;
                h->wait_ns += (uint64_t)(now_ns() - t0);
                goto held;
            }
            if (errno != EWOULDBLOCK || now_ns() >= deadline) goto give_back;
        }
    }
held:
    *tlock = t;
    *fd = (int)f;
    return 1;
give_back:
    PyErr_Clear();
    {
        PyObject *r = PyObject_CallMethodNoArgs(t, s_release);
        Py_DECREF(t);
        if (r == NULL) return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Let go of what lock_take took; keeps a pending exception. -1 if letting go failed. */
static int lock_give(PyObject *tlock, int fd) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    flock(fd, LOCK_UN);
    PyObject *r = PyObject_CallMethodNoArgs(tlock, s_release);
    Py_DECREF(tlock);
    if (r == NULL) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return -1;
    }
    Py_DECREF(r);
    PyErr_Restore(et, ev, tb);
    return 0;
}

/* With the lock taken: what Access.acquire does after flock -- a repair if a dead writer
 * left anything, or every HOUSEKEEPING_EVERY-th time. 0, or -1 with an exception. */
static int after_take(Hot *h) {
    volatile uint64_t *w = h->w;
    if (LOAD(&w[DIRTY_W]) || LOAD(&w[FLAGS_W]) || LOAD(&w[SEQ_W]) & 1 ||
        !(++h->locks % HOUSEKEEPING_EVERY)) {
        PyObject *r = PyObject_CallNoArgs(h->repair);
        if (r == NULL) return -1;
        Py_DECREF(r);
        if (!h->open) {
            PyErr_SetString(PyExc_RuntimeError, "the handle closed during its repair");
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ the journal (_journal.py) */
typedef struct {
    Hot *h;
    PyObject *fault; /* Journal.fault, or NULL */
    uint64_t txid, used;
} Txn;

static int fault(Txn *x) {
    if (x->fault == NULL) return 0;
    PyObject *r = PyObject_CallNoArgs(x->fault);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static int txn_begin(Txn *x, Hot *h) {
    x->h = h;
    x->fault = NULL;
    PyObject *f = PyObject_GetAttr(h->journal, s_fault);
    if (f == NULL) return -1;
    if (f != Py_None) x->fault = f;
    else Py_DECREF(f);
    volatile uint64_t *w = h->w;
    uint64_t txid = LOAD(&w[NEXT_TXID_W]) + 1;
    if (!txid) txid = 1;
    if (fault(x) < 0) return -1;
    STORE(&w[USED_W], 0);
    STORE(&w[NEXT_TXID_W], txid);
    STORE(&w[DIRTY_W], txid);
    x->txid = txid;
    x->used = 0;
    return 0;
}

static void txn_end(Txn *x) { Py_CLEAR(x->fault); }

/* Write the record of the n bytes at off at journal position pos (no count yet). */
static void record_at(Txn *x, uint64_t pos, uint64_t off, uint32_t n) {
    char *b = x->h->b;
    uint8_t in[20];
    memcpy(in, &x->txid, 8);
    memcpy(in + 8, &off, 8);
    memcpy(in + 16, &n, 4);
    uint32_t crc = crc32_of(in, 20);
    char *p = b + x->h->journal_off + pos;
    memcpy(p, &off, 8);
    memcpy(p + 8, &n, 4);
    memcpy(p + 12, &crc, 4);
    memcpy(p + 16, b + off, n);
}

/* The first store a reader could copy: the read sequence odd (Journal._expose). */
static int expose(Txn *x) {
    volatile uint64_t *w = x->h->w;
    uint64_t seq = LOAD(&w[SEQ_W]);
    if (!(seq & 1)) {
        if (fault(x) < 0) return -1;
        STORE(&w[SEQ_W], seq + 1);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
    return fault(x);
}

/* Journal.write: record the old bytes at off, then store data over them. */
static int txn_write(Txn *x, uint64_t off, const void *data, uint32_t n) {
    uint64_t end = x->used + 16 + (((uint64_t)n + 7) & ~(uint64_t)7);
    if (end > x->h->journal_size) return 1; /* cannot happen on these paths: the caller's check */
    if (fault(x) < 0) return -1;
    record_at(x, x->used, off, n); /* the entry; Journal.record faults between its parts */
    if (fault(x) < 0) return -1;
    STORE(&x->h->w[USED_W], end);
    x->used = end;
    if (expose(x) < 0) return -1;
    memcpy(x->h->b + off, data, n);
    return 0;
}

/* Journal.write2: two records counted by one store, then the two overwrites. */
static int txn_write2(Txn *x, uint64_t a, const void *da, uint32_t na, uint64_t c,
                      const void *dc, uint32_t nc) {
    uint64_t mid = x->used + 16 + (((uint64_t)na + 7) & ~(uint64_t)7);
    uint64_t end = mid + 16 + (((uint64_t)nc + 7) & ~(uint64_t)7);
    if (end > x->h->journal_size) return 1;
    if (fault(x) < 0) return -1;
    record_at(x, x->used, a, na);
    record_at(x, mid, c, nc);
    if (fault(x) < 0) return -1;
    STORE(&x->h->w[USED_W], end);
    x->used = end;
    if (expose(x) < 0) return -1;
    memcpy(x->h->b + a, da, na);
    if (fault(x) < 0) return -1;
    memcpy(x->h->b + c, dc, nc);
    return 0;
}

static int txn_commit(Txn *x) {
    volatile uint64_t *w = x->h->w;
    if (fault(x) < 0) return -1;
    STORE(&w[DIRTY_W], 0);
    uint64_t seq = LOAD(&w[SEQ_W]);
    if (seq & 1) STORE(&w[SEQ_W], seq + 1);
    return 0;
}

/* After an exception inside a transaction: Journal.rollback (the pure path's recovery). */
static void txn_abort(Txn *x) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallMethodNoArgs(x->h->journal, s_rollback);
    if (r == NULL) {
        /* the rollback's own error wins: the store is left for the next holder to repair */
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return;
    }
    Py_DECREF(r);
    PyErr_Restore(et, ev, tb);
}

/* ------------------------------------------------------------------ locked operations */
/* The used slot holding digest (its offset in *pos), 0 when there is none, -1 for a whole
 * lap without an empty slot (damage: the pure path reports it). */
static int probe(Hot *h, const uint8_t *digest, uint64_t *pos) {
    uint64_t mask = h->mask, home = rd64((const char *)digest) & mask, i = home;
    for (;;) {
        uint64_t p = h->table_off + (i << SLOT_SHIFT);
        if (!h->b[p + SLOT_STATE]) return 0;
        if (memcmp(h->b + p, digest, DIGEST) == 0) {
            *pos = p;
            return 1;
        }
        i = (i + 1) & mask;
        if (i == home) return -1;
    }
}

/* Every SWEEP_EVERY-th write looks at SWEEP_SLOTS slots from the shared cursor, as
 * Engine.sweep does. Nothing due (the common case): the cursor moves on, 0. An expired
 * entry due: Engine.sweep_next has the pure path's write that follows sweep inside its
 * transaction, as every sweep is, and 1 sends this write there. -1: an exception. */
static int sweep_check(Hot *h, int64_t now) {
    if (++h->writes % SWEEP_EVERY) return 0;
    volatile uint64_t *w = h->w;
    uint64_t mask = h->mask, i = LOAD(&w[SWEEP_CURSOR_W]) & mask;
    for (int k = 0; k < SWEEP_SLOTS && (uint64_t)k <= mask; k++, i = (i + 1) & mask) {
        int64_t e = (int64_t)rd64(h->b + h->table_off + (i << SLOT_SHIFT) + SLOT_EXPIRES);
        if (e > 0 && e <= now) {
            PyObject *r = PyObject_CallNoArgs(h->sweep);
            if (r == NULL) return -1;
            Py_DECREF(r);
            return 1;
        }
    }
    STORE(&w[SWEEP_CURSOR_W], i); /* advisory */
    return 0;
}

/* write(sid, value, ttl_ns, expect): the new version, or SLOW. The overwrite in place of a
 * live entry's value (Engine.put's first branch); the rest is the pure path's. */
static PyObject *hot_write(Hot *h, PyObject *const *args, Py_ssize_t nargs) {
    uint8_t d[DIGEST];
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "write(sid, value, ttl_ns, expect)");
        return NULL;
    }
    PyObject *value = args[1];
    if (!digest_of(h, args[0], d) || !PyBytes_CheckExact(value) || !PyLong_CheckExact(args[2]))
        return Py_NewRef(SLOW);
    uint64_t n = (uint64_t)PyBytes_GET_SIZE(value);
    long long ttl_ns = PyLong_AsLongLong(args[2]);
    if (ttl_ns < 0 || n > h->max_value || n > INPLACE_MAX) {
        PyErr_Clear();
        return Py_NewRef(SLOW);
    }
    int has_expect = args[3] != Py_None;
    unsigned long long expect = 0;
    if (has_expect) {
        if (!PyLong_CheckExact(args[3])) return Py_NewRef(SLOW);
        expect = PyLong_AsUnsignedLongLong(args[3]);
        if (expect == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return Py_NewRef(SLOW);
        }
    }
    PyObject *tlock;
    int fd;
    int taken = lock_take(h, &tlock, &fd);
    if (taken <= 0) return taken < 0 ? NULL : Py_NewRef(SLOW);
    PyObject *result = NULL;
    Txn x = {0};
    if (after_take(h) < 0) goto out;
    int64_t now = now_ns();
    int due = sweep_check(h, now);
    if (due < 0) goto out;
    if (due) goto slow;
    char *b = h->b;
    uint64_t pos;
    if (probe(h, d, &pos) <= 0) goto slow; /* a new entry, or damage */
    int64_t expires_was = (int64_t)rd64(b + pos + SLOT_EXPIRES);
    if (expires_was && expires_was <= now) goto slow; /* expired: reclaimed first */
    uint64_t version_was = rd64(b + pos + SLOT_VERSION);
    if (has_expect && version_was != expect) goto slow; /* the pure path raises */
    uint64_t voff = rd64(b + pos + SLOT_VOFF), blk = voff - 8;
    if (voff < 8 || blk < h->heap_off || blk >= h->heap_end - MIN_BLOCK) goto slow;
    uint64_t tag = rd64(b + blk), end = blk + (tag & ~(uint64_t)1);
    if (!(tag & 1) || end > h->heap_end || end < blk + MIN_BLOCK ||
        memcmp(b + end - BLOCK_TAIL, d, DIGEST) != 0)
        goto slow; /* damage: the pure path says so */
    uint64_t room = end - blk - BLOCK_OVERHEAD;
    if (!(n <= room && room <= 2 * n + 256)) goto slow; /* needs another block */
    if (txn_begin(&x, h) < 0) goto abort;
    uint64_t version = LOAD(&h->w[VERSION_W]) + 1;
    STORE(&h->w[VERSION_W], version); /* not journaled: see _layout */
    char slot[SLOT_HALF];
    memcpy(slot, b + pos, SLOT_HALF); /* digest, state, created stay */
    uint32_t n32 = (uint32_t)n;
    uint64_t expires = ttl_ns ? (uint64_t)(now + ttl_ns) : 0;
    memcpy(slot + SLOT_LEN, &n32, 4);
    wr64(slot + SLOT_VOFF, voff);
    wr64(slot + SLOT_EXPIRES, expires);
    wr64(slot + SLOT_ATIME, (uint64_t)now);
    wr64(slot + SLOT_VERSION, version);
    int r = txn_write2(&x, voff, PyBytes_AS_STRING(value), n32, pos, slot, SLOT_HALF);
    if (r < 0) goto abort;
    if (r > 0) {
        txn_abort(&x); /* the journal cannot hold it: the pure path says what to do */
        goto slow;
    }
    if (txn_commit(&x) < 0) goto abort;
    h->writes_done++;
    result = PyLong_FromUnsignedLongLong(version);
    goto out;
abort:
    if (x.h != NULL) txn_abort(&x);
    goto out;
slow:
    result = Py_NewRef(SLOW);
out:
    txn_end(&x);
    if (lock_give(tlock, fd) < 0) Py_CLEAR(result);
    return result;
}

/* touch(sid, ttl_ns): whether a live entry was renewed, or SLOW (Engine.touch). */
static PyObject *hot_touch(Hot *h, PyObject *const *args, Py_ssize_t nargs) {
    uint8_t d[DIGEST];
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "touch(sid, ttl_ns)");
        return NULL;
    }
    if (!digest_of(h, args[0], d) || !PyLong_CheckExact(args[1])) return Py_NewRef(SLOW);
    long long ttl_ns = PyLong_AsLongLong(args[1]);
    if (ttl_ns < 0) {
        PyErr_Clear();
        return Py_NewRef(SLOW);
    }
    PyObject *tlock;
    int fd;
    int taken = lock_take(h, &tlock, &fd);
    if (taken <= 0) return taken < 0 ? NULL : Py_NewRef(SLOW);
    PyObject *result = NULL;
    Txn x = {0};
    if (after_take(h) < 0) goto out;
    int64_t now = now_ns();
    uint64_t pos;
    int found = probe(h, d, &pos);
    if (found < 0) goto slow;
    if (!found) {
        result = Py_NewRef(Py_False);
        goto out;
    }
    int64_t expires_was = (int64_t)rd64(h->b + pos + SLOT_EXPIRES);
    if (expires_was && expires_was <= now) goto slow; /* expired: reclaimed */
    uint64_t expires = ttl_ns ? (uint64_t)(now + ttl_ns) : 0;
    if (txn_begin(&x, h) < 0 || txn_write(&x, pos + SLOT_EXPIRES, &expires, 8) < 0) goto abort;
    if (txn_commit(&x) < 0) goto abort;
    result = Py_NewRef(Py_True);
    goto out;
abort:
    if (x.h != NULL) txn_abort(&x);
    goto out;
slow:
    result = Py_NewRef(SLOW);
out:
    txn_end(&x);
    if (lock_give(tlock, fd) < 0) Py_CLEAR(result);
    return result;
}

/* ------------------------------------------------------------------ the rest */
static PyObject *hot_digest(Hot *h, PyObject *sid) {
    uint8_t d[DIGEST];
    if (!digest_of(h, sid, d)) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)d, DIGEST);
}

/* take_counts() -> (hits, misses, writes_done, waits, wait_ns), zeroing them */
static PyObject *hot_take_counts(Hot *h, PyObject *unused) {
    PyObject *t = Py_BuildValue("(KKKKK)", h->hits, h->misses, h->writes_done, h->waits,
                                h->wait_ns);
    if (t != NULL) h->hits = h->misses = h->writes_done = h->waits = h->wait_ns = 0;
    return t;
}

static PyObject *hot_pending(Hot *h, PyObject *unused) {
    return PyBool_FromLong(h->hits || h->misses || h->writes_done || h->waits);
}

static PyObject *hot_zero(Hot *h, PyObject *unused) {
    h->hits = h->misses = h->writes_done = h->waits = h->wait_ns = 0;
    Py_RETURN_NONE;
}

/* close(): let go of the mapping (an mmap cannot close while a buffer pins it); every
 * operation after it returns SLOW, and the pure path says the handle is closed. */
static PyObject *hot_close(Hot *h, PyObject *unused) {
    hot_release_view(h);
    Py_RETURN_NONE;
}

static PyObject *hot_get_lock_free(Hot *h, void *c) { return PyBool_FromLong(h->lock_free); }

static int hot_set_lock_free(Hot *h, PyObject *v, void *c) {
    int t = v == NULL ? 0 : PyObject_IsTrue(v);
    if (t < 0) return -1;
    h->lock_free = t;
    return 0;
}

static PyGetSetDef hot_getset[] = {
    {"lock_free", (getter)hot_get_lock_free, (setter)hot_set_lock_free,
     "reads take no lock (set false to send every read to the pure path)", NULL},
    {NULL},
};

static PyMethodDef hot_methods[] = {
    {"read", (PyCFunction)hot_read, METH_O, "read(sid) -> value, or SLOW; raises SessionNotFound"},
    {"get", (PyCFunction)(void (*)(void))hot_get, METH_FASTCALL, "get(sid, default)"},
    {"find", (PyCFunction)hot_find, METH_O, "find(sid) -> (value, version), None, or SLOW"},
    {"write", (PyCFunction)(void (*)(void))hot_write, METH_FASTCALL,
     "write(sid, value, ttl_ns, expect) -> version, or SLOW"},
    {"touch", (PyCFunction)(void (*)(void))hot_touch, METH_FASTCALL,
     "touch(sid, ttl_ns) -> bool, or SLOW"},
    {"digest", (PyCFunction)hot_digest, METH_O, "digest(sid) -> 16 bytes, or None"},
    {"take_counts", (PyCFunction)hot_take_counts, METH_NOARGS, NULL},
    {"pending", (PyCFunction)hot_pending, METH_NOARGS, NULL},
    {"zero", (PyCFunction)hot_zero, METH_NOARGS, NULL},
    {"close", (PyCFunction)hot_close, METH_NOARGS, NULL},
    {NULL},
};

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmsession._hot.Hot",
    .tp_basicsize = sizeof(Hot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled hot path of one handle (see _access).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)hot_init,
    .tp_dealloc = (destructor)hot_dealloc,
    .tp_traverse = (traverseproc)hot_traverse,
    .tp_clear = (inquiry)hot_clear,
    .tp_methods = hot_methods,
    .tp_getset = hot_getset,
};

/* Hasher(key, person=b"").digest(data) -> 16 bytes: the keyed digest, for the tests to hold
 * against hashlib.blake2b. */
typedef struct {
    PyObject_HEAD
    b2_keyed s;
} Hasher;

static int hasher_init(Hasher *self, PyObject *args, PyObject *kw) {
    Py_buffer key, person = {0};
    if (!PyArg_ParseTuple(args, "y*|y*:Hasher", &key, &person)) return -1;
    int ok = key.len >= 1 && key.len <= 64 && (person.buf == NULL || person.len == 16);
    if (ok)
        b2_init_keyed(&self->s, key.buf, (size_t)key.len, DIGEST,
                      person.buf == NULL ? NULL : person.buf);
    PyBuffer_Release(&key);
    if (person.buf != NULL) PyBuffer_Release(&person);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "key: 1 to 64 bytes; person: 16 bytes");
        return -1;
    }
    return 0;
}

static PyObject *hasher_digest(Hasher *self, PyObject *arg) {
    Py_buffer data;
    uint8_t out[DIGEST];
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0) return NULL;
    if (data.len < 1) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "nothing to digest");
        return NULL;
    }
    b2_digest(&self->s, data.buf, (size_t)data.len, out);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, DIGEST);
}

static PyMethodDef hasher_methods[] = {
    {"digest", (PyCFunction)hasher_digest, METH_O, "digest(data) -> 16 bytes"},
    {NULL},
};

static PyTypeObject HasherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmsession._hot.Hasher",
    .tp_basicsize = sizeof(Hasher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Keyed BLAKE2b with 16-byte digests (_blake2b.h).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)hasher_init,
    .tp_methods = hasher_methods,
};

static struct PyModuleDef hot_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shmsession._hot",
    .m_doc = "The compiled hot path (see _build.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__hot(void) {
    crc_init();
    if (PyType_Ready(&HotType) < 0 || PyType_Ready(&HasherType) < 0) return NULL;
#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_closed, "closed");
    INTERN(s_fd, "fd");
    INTERN(s_tlock, "_tlock");
    INTERN(s_acquire, "acquire");
    INTERN(s_release, "release");
    INTERN(s_fault, "fault");
    INTERN(s_rollback, "rollback");
#undef INTERN
    PyObject *m = PyModule_Create(&hot_module);
    if (m == NULL) return NULL;
    SLOW = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (SLOW == NULL || PyModule_AddObjectRef(m, "SLOW", SLOW) < 0 ||
        PyModule_AddObjectRef(m, "Hot", (PyObject *)&HotType) < 0 ||
        PyModule_AddObjectRef(m, "Hasher", (PyObject *)&HasherType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
