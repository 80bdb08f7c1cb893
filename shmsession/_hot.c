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
 * covers, and every control word store is a release and a compiler barrier (STORE), so the
 * compiler keeps the journal's order both ways (a record whole before the word that counts
 * it, the bytes it saves overwritten only after). Lock-free reads run only where the
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
/* Copies of the Python side's constants, which stay the one source: the module's LAYOUT
 * dict gives them back, and tests/unit/test_compiled.py holds each equal to its original. */
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
#define SLOT_OWNER 64 /* the owner half: owner digest, prev, next, joined */
#define STATE_OFF 256
#define STATE_SIZE (32 + 8 * NBINS)
#define ENTRIES_OFF 256
#define HEAP_USED_OFF 264
#define BITMAP_OFF 280
#define BINS_OFF 288
#define NBINS 48
#define ALIGN 16
#define HEAP_SCAN 16 /* _heap._SCAN */
#define C_DELETES 3 /* counters, by index (_layout.COUNTER_NAMES) */
#define C_EXPIRATIONS 5
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
/* A control word's store: a release (what came before it in the program is stored before
 * it), then a compiler barrier (what comes after it stays after it: a release alone would
 * let the compiler hoist a later store, a value's bytes over their undo record, above the
 * store that counts the record). A killed writer's stores land in program order on x86,
 * which is what recovery needs; readers without the lock run on x86 only. */
#define STORE(p, v)                                        \
    do {                                                   \
        __atomic_store_n((p), (v), __ATOMIC_RELEASE);      \
        __atomic_signal_fence(__ATOMIC_SEQ_CST);           \
    } while (0)

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
    uint64_t max_entries;
    b2_keyed ids, owners; /* the digests of ids, and of owners (_rules.owner_digest) */
    int lock_free, touch_on_read;
    int64_t default_ttl_ns;
    PyObject *lock;      /* the StoreLock: closed, fd and its thread lock, read per op */
    PyObject *journal;   /* the Journal: its fault hook, and rollback */
    PyObject *repair;    /* Access.repair: under the lock, when anything needs repair */
    PyObject *housekeep; /* Reader.housekeep: every HOUSEKEEPING_EVERY-th read */
    PyObject *sweep;     /* Engine.sweep_next: the engine's next write sweeps */
    PyObject *not_found; /* SessionNotFound */
    uint64_t reads, locks, writes;
    uint64_t done; /* operations finished here under the lock (for the tests) */
    /* pending counts, taken by PendingCounts (take_counts) */
    uint64_t hits, misses, writes_done, waits, wait_ns;
} Hot;

static PyObject *SLOW; /* "take the pure-Python path" */
static PyObject *s_closed, *s_fd, *s_timeout, *s_tlock, *s_acquire, *s_release, *s_fault, *s_rollback;

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

/* Hot(buf, bounds, journal_off, journal_size, max_entries, secret, owner_person, lock, journal,
 *     repair, housekeep,
 *     sweep, not_found, lock_free, touch_on_read, default_ttl_ns) */
static int hot_init(Hot *h, PyObject *args, PyObject *kw) {
    PyObject *buf, *lock, *journal, *repair, *housekeep, *sweep, *not_found;
    unsigned long long table_off, mask, heap_off, heap_end, max_value, journal_off, journal_size,
        max_entries;
    Py_buffer secret, person;
    int lock_free, touch_on_read;
    long long default_ttl_ns;
    if (!PyArg_ParseTuple(args, "O(KKKKK)KKKy*y*OOOOOOppL:Hot", &buf, &table_off, &mask,
                          &heap_off, &heap_end, &max_value, &journal_off, &journal_size,
                          &max_entries, &secret, &person, &lock,
                          &journal, &repair, &housekeep, &sweep, &not_found, &lock_free,
                          &touch_on_read, &default_ttl_ns))
        return -1;
    int ok = secret.len >= 1 && secret.len <= 64 && person.len == 16;
    if (ok) {
        b2_init_keyed(&h->ids, secret.buf, (size_t)secret.len, DIGEST, NULL);
        b2_init_keyed(&h->owners, secret.buf, (size_t)secret.len, DIGEST, person.buf);
    }
    PyBuffer_Release(&secret);
    PyBuffer_Release(&person);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "the secret must be 1 to 64 bytes, the person 16");
        return -1;
    }
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
    h->max_entries = max_entries;
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
static int digest_with(const b2_keyed *key, PyObject *text, uint8_t out[DIGEST]) {
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n < 1 || n > MAX_ID_BYTES) return 0;
    b2_digest(key, PyUnicode_1BYTE_DATA(text), (size_t)n, out);
    return 1;
}

static int digest_of(Hot *h, PyObject *sid, uint8_t out[DIGEST]) {
    return digest_with(&h->ids, sid, out);
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
        /* in fixed width: voff + n of a torn or damaged slot may wrap round */
        if (voff < h->heap_off || voff > h->heap_end || n > h->heap_end - voff ||
            n > h->max_value)
            continue;
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
/* Release the thread lock t and drop the reference to it, keeping a pending exception; -1
 * when the release itself raises (its error then replaces the pending one). */
static int tlock_release(PyObject *t) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallMethodNoArgs(t, s_release);
    Py_DECREF(t);
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

/* Take the handle's lock as StoreLock.acquire does when its thread lock is free: the
 * thread lock, then flock, tried for LOCK_SPIN_NS while watching the holder's dirty word.
 * 1: held (*tlock is the thread lock to release); 0: not taken (closed, another thread of
 * this process in a critical section, still busy after the spin with a lock timeout: the
 * pure path waits); -1: an exception (a signal handler's, raised in the wait). */
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
            if (errno != EWOULDBLOCK) goto give_back;
            if (now_ns() >= deadline) break;
        }
        /* Still busy: the holder was most likely descheduled. Without a lock timeout,
         * sleep in flock as StoreLock does (the GIL let go; the thread lock, which close()
         * waits for, kept); with one, the pure path's timed wait takes over. */
        PyObject *timeout = PyObject_GetAttr(h->lock, s_timeout);
        if (timeout == NULL) goto give_back;
        int untimed = timeout == Py_None;
        Py_DECREF(timeout);
        if (!untimed) goto give_back;
        for (;;) {
            int rc, err;
            Py_BEGIN_ALLOW_THREADS
            rc = flock((int)f, LOCK_EX);
            err = errno;
            Py_END_ALLOW_THREADS
            if (rc == 0) break;
            if (err != EINTR) goto give_back;
            if (PyErr_CheckSignals() < 0) goto fail; /* a handler raised (SystemExit...) */
        }
        h->waits++;
        h->wait_ns += (uint64_t)(now_ns() - t0);
    }
held:
    *tlock = t;
    *fd = (int)f;
    return 1;
give_back:
    PyErr_Clear();
    return tlock_release(t) < 0 ? -1 : 0;
fail:
    tlock_release(t); /* the handler's exception stays, unless the release raises */
    return -1;
}

/* Let go of what lock_take took; keeps a pending exception. -1 if letting go failed. */
static int lock_give(PyObject *tlock, int fd) {
    flock(fd, LOCK_UN);
    return tlock_release(tlock);
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
/* Every step below returns 0 when done, -1 with a Python exception (a fault hook's), or 1 for
 * "not here": something the pure path must see -- damage it reports, a journal that cannot
 * hold the operation. The operation then rolls back what it did and returns SLOW. */
#define TRY(step)                  \
    do {                           \
        int r_ = (step);           \
        if (r_) return r_;         \
    } while (0)

typedef struct {
    Hot *h;
    PyObject *fault; /* Journal.fault, or NULL */
    uint64_t txid, used;
    int state_logged;
    int begun; /* a transaction is open: an abort rolls it back */
} Txn;

static int fault(Txn *x) {
    if (x->fault == NULL) return 0;
    PyObject *r = PyObject_CallNoArgs(x->fault);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static int txn_begin(Txn *x) {
    Hot *h = x->h;
    x->begun = 1; /* from the first fault on: a stop here rolls back (nothing, yet) */
    x->fault = NULL;
    x->state_logged = 0;
    PyObject *f = PyObject_GetAttr(h->journal, s_fault);
    if (f == NULL) return -1;
    if (f != Py_None) x->fault = f;
    else Py_DECREF(f);
    volatile uint64_t *w = h->w;
    uint64_t txid = LOAD(&w[NEXT_TXID_W]) + 1;
    if (!txid) txid = 1;
    if (fault(x) < 0) return -1;
    /* used=0 before dirty=txid: a dirty word never pairs with the last transaction's count */
    STORE(&w[USED_W], 0);
    STORE(&w[NEXT_TXID_W], txid);
    STORE(&w[DIRTY_W], txid);
    x->txid = txid;
    x->used = 0;
    return 0;
}

static void txn_end(Txn *x) { Py_CLEAR(x->fault); }

/* Write the record of the n bytes at off at journal position pos (not counted yet). */
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

static inline uint64_t record_size(uint32_t n) { return 16 + (((uint64_t)n + 7) & ~(uint64_t)7); }

/* Journal.record: save the n bytes at off; they count from the store of the used word. */
static int txn_record(Txn *x, uint64_t off, uint32_t n) {
    uint64_t end = x->used + record_size(n);
    if (end > x->h->journal_size) return 1;
    if (fault(x) < 0) return -1;
    record_at(x, x->used, off, n);
    if (fault(x) < 0) return -1;
    STORE(&x->h->w[USED_W], end);
    x->used = end;
    return 0;
}

/* Journal._expose: before the first store a reader could copy, the read sequence odd. */
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
    TRY(txn_record(x, off, n));
    TRY(expose(x));
    memcpy(x->h->b + off, data, n);
    return 0;
}

/* Journal.raw with nothing guarded: data into space that was free when the transaction
 * began (no block was freed in it before), which needs no record. */
static int txn_raw(Txn *x, uint64_t off, const void *data, uint64_t n) {
    TRY(expose(x));
    memcpy(x->h->b + off, data, n);
    return 0;
}

/* Journal.write2: two records counted by one store, then the two overwrites. */
static int txn_write2(Txn *x, uint64_t a, const void *da, uint32_t na, uint64_t c,
                      const void *dc, uint32_t nc) {
    uint64_t mid = x->used + record_size(na), end = mid + record_size(nc);
    if (end > x->h->journal_size) return 1;
    if (fault(x) < 0) return -1;
    record_at(x, x->used, a, na);
    record_at(x, mid, c, nc);
    if (fault(x) < 0) return -1;
    STORE(&x->h->w[USED_W], end);
    x->used = end;
    TRY(expose(x));
    memcpy(x->h->b + a, da, na);
    if (fault(x) < 0) return -1;
    memcpy(x->h->b + c, dc, nc);
    return 0;
}

/* Journal.log_state: the header's STATE range, recorded once per transaction. */
static int log_state(Txn *x) {
    if (x->state_logged) return 0;
    TRY(txn_record(x, STATE_OFF, STATE_SIZE));
    x->state_logged = 1;
    return 0;
}

static int txn_commit(Txn *x) {
    volatile uint64_t *w = x->h->w;
    if (fault(x) < 0) return -1;
    STORE(&w[DIRTY_W], 0); /* the commit point */
    uint64_t seq = LOAD(&w[SEQ_W]);
    if (seq & 1) STORE(&w[SEQ_W], seq + 1);
    return 0;
}

/* Journal.rollback, after an exception or a "not here" inside a transaction; keeps a
 * pending exception, unless the rollback raises its own (then the store is left for the
 * next holder's repair, and that error goes up). */
static void txn_abort(Txn *x) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallMethodNoArgs(x->h->journal, s_rollback);
    if (r == NULL) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return;
    }
    Py_DECREF(r);
    PyErr_Restore(et, ev, tb);
}

static void bump(Hot *h, int counter) { h->w[COUNTERS_W + counter] += 1; /* advisory */ }

/* ------------------------------------------------------------------ the heap (_heap.py) */
static inline int bin_of(uint64_t size) { return 63 - __builtin_clzll(size); }

/* Whether a block can start at blk: inside the heap, aligned, with room for the smallest
 * block (so that every link and tag of it lies inside the heap). */
static inline int block_start(Hot *h, uint64_t blk) {
    return blk >= h->heap_off && blk <= h->heap_end - MIN_BLOCK && !(blk & (ALIGN - 1));
}

static inline int link_ok(Hot *h, uint64_t link) { return !link || block_start(h, link); }

/* Heap.block: the size and used bit of the block at blk; 0 if no sound block is there. */
static int block_at(Hot *h, uint64_t blk, uint64_t *size, int *used) {
    if (!block_start(h, blk)) return 0;
    uint64_t tag = rd64(h->b + blk), n = tag & ~(uint64_t)1;
    if (n < MIN_BLOCK || n & (ALIGN - 1) || n > h->heap_end - blk) return 0; /* no wrap */
    *size = n;
    *used = (int)(tag & 1);
    return 1;
}

static inline uint64_t block_size_for(uint64_t n) {
    uint64_t size = (n + BLOCK_OVERHEAD + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
    return size < MIN_BLOCK ? MIN_BLOCK : size;
}

/* Heap._find, read only: a free block of at least need bytes, 0 for none, or 1 as an odd
 * offset ("damage": the pure path reports it). */
static uint64_t heap_find(Hot *h, uint64_t need) {
    const char *b = h->b;
    int k = bin_of(need);
    uint64_t node = rd64(b + BINS_OFF + 8 * k);
    for (int scan = 0; scan < HEAP_SCAN && node; scan++) {
        if (!block_start(h, node)) return 1;
        if (rd64(b + node) >= need) return node;
        node = rd64(b + node + 8);
    }
    uint64_t larger = k + 1 < 64 ? rd64(b + BITMAP_OFF) >> (k + 1) : 0;
    if (!larger) return 0;
    k += __builtin_ctzll(larger) + 1;
    if (k >= NBINS) return 1;
    node = rd64(b + BINS_OFF + 8 * k);
    return link_ok(h, node) ? node : 1;
}

/* Heap._unlink: take the free block blk of size bytes off its list. */
static int heap_unlink(Txn *x, uint64_t blk, uint64_t size) {
    Hot *h = x->h;
    char *b = h->b;
    uint64_t nxt = rd64(b + blk + 8), prv = rd64(b + blk + 16);
    if (!link_ok(h, nxt) || !link_ok(h, prv)) return 1;
    if (prv) {
        TRY(txn_write(x, prv + 8, &nxt, 8));
    } else {
        int k = bin_of(size);
        TRY(log_state(x));
        wr64(b + BINS_OFF + 8 * k, nxt);
        if (!nxt) wr64(b + BITMAP_OFF, rd64(b + BITMAP_OFF) & ~((uint64_t)1 << k));
    }
    if (nxt) TRY(txn_write(x, nxt + 16, &prv, 8));
    return 0;
}

/* Heap._link: make blk a free block of size bytes, at the head of its list. */
static int heap_link(Txn *x, uint64_t blk, uint64_t size) {
    Hot *h = x->h;
    char *b = h->b;
    int k = bin_of(size);
    uint64_t head = rd64(b + BINS_OFF + 8 * k);
    if (!link_ok(h, head)) return 1;
    uint64_t free_head[3] = {size, head, 0};
    TRY(txn_write(x, blk, free_head, 24));
    TRY(txn_write(x, blk + size - 8, &size, 8));
    if (head) TRY(txn_write(x, head + 16, &blk, 8));
    TRY(log_state(x));
    wr64(b + BINS_OFF + 8 * k, blk);
    wr64(b + BITMAP_OFF, rd64(b + BITMAP_OFF) | ((uint64_t)1 << k));
    return 0;
}

static int heap_add_used(Txn *x, int64_t by) {
    Hot *h = x->h;
    TRY(log_state(x));
    uint64_t used = rd64(h->b + HEAP_USED_OFF) + (uint64_t)by;
    if (used > h->heap_end - h->heap_off) return 1; /* below 0 wraps above too */
    wr64(h->b + HEAP_USED_OFF, used);
    return 0;
}

/* Heap.alloc, given the block heap_find chose: the payload offset in *payload. */
static int heap_alloc(Txn *x, uint64_t blk, uint64_t n, const uint8_t *owner, uint64_t *payload) {
    uint64_t need = block_size_for(n), size;
    int used;
    if (!block_at(x->h, blk, &size, &used) || used || size < need) return 1;
    TRY(heap_unlink(x, blk, size));
    if (size - need >= MIN_BLOCK) TRY(heap_link(x, blk + need, size - need));
    else need = size;
    uint64_t tag = need | 1;
    /* the header's record covers the old links too: the value is copied over them raw */
    TRY(txn_record(x, blk, 24));
    TRY(txn_raw(x, blk, &tag, 8));
    uint8_t tail[BLOCK_TAIL];
    memcpy(tail, owner, DIGEST);
    memcpy(tail + DIGEST, &tag, 8);
    TRY(txn_write(x, blk + need - BLOCK_TAIL, tail, BLOCK_TAIL));
    TRY(heap_add_used(x, (int64_t)need));
    *payload = blk + 8;
    return 0;
}

/* Heap.free: the block holding payload back to the free lists, merged with free neighbours.
 * (No guard: nothing is copied raw after a free in the operations that come here.) */
static int heap_free(Txn *x, uint64_t payload) {
    Hot *h = x->h;
    uint64_t blk = payload - 8, size, nsize;
    int used, nused;
    if (!block_at(h, blk, &size, &used) || !used) return 1;
    uint64_t freed = size, nxt = blk + size;
    if (nxt < h->heap_end) {
        if (!block_at(h, nxt, &nsize, &nused)) return 1;
        if (!nused) {
            TRY(heap_unlink(x, nxt, nsize));
            size += nsize;
        }
    }
    if (blk > h->heap_off) {
        uint64_t tag = rd64(h->b + blk - 8);
        if (!(tag & 1)) {
            uint64_t start = blk - tag;
            if (tag < MIN_BLOCK || tag & (ALIGN - 1) || tag > blk - h->heap_off) return 1;
            blk = start;
            TRY(heap_unlink(x, blk, tag));
            size += tag;
        }
    }
    TRY(heap_link(x, blk, size));
    return heap_add_used(x, -(int64_t)freed);
}

/* ------------------------------------------------------------------ the table (_table.py) */
/* Table.probe: 1 and the used slot holding digest in *pos, 0 and the empty slot where it
 * would go in *pos, -1 for a whole lap without an empty slot (damage). */
static int probe(Hot *h, const uint8_t *digest, uint64_t *pos) {
    uint64_t mask = h->mask, home = rd64((const char *)digest) & mask, i = home;
    for (;;) {
        uint64_t p = h->table_off + (i << SLOT_SHIFT);
        *pos = p;
        if (!h->b[p + SLOT_STATE]) return 0;
        if (memcmp(h->b + p, digest, DIGEST) == 0) return 1;
        i = (i + 1) & mask;
        if (i == home) return -1;
    }
}

static inline int owned(Hot *h, uint64_t pos) {
    static const uint8_t none[DIGEST];
    return memcmp(h->b + pos + SLOT_OWNER, none, DIGEST) != 0;
}

/* Whether removing the slot at pos touches no owner's list: it is unowned, and so is every
 * slot after it in its probe run, which the backward shift may move (Owners.moved is the
 * pure path's). */
static int removable(Hot *h, uint64_t pos) {
    uint64_t mask = h->mask, i = (pos - h->table_off) >> SLOT_SHIFT, k = i;
    if (owned(h, pos)) return 0;
    for (;;) {
        k = (k + 1) & mask;
        if (k == i) return 0;
        uint64_t p = h->table_off + (k << SLOT_SHIFT);
        if (!h->b[p + SLOT_STATE]) return 1;
        if (owned(h, p)) return 0;
    }
}

/* Table.remove: empty the slot at pos and shift the rest of its probe run back. */
static int table_remove(Txn *x, uint64_t pos) {
    Hot *h = x->h;
    static const char empty[SLOT_SIZE];
    char moved[SLOT_SIZE];
    uint64_t mask = h->mask, i = (pos - h->table_off) >> SLOT_SHIFT, hole = i, k = i;
    for (;;) {
        k = (k + 1) & mask;
        if (k == i) return 1;
        uint64_t p = h->table_off + (k << SLOT_SHIFT);
        if (!h->b[p + SLOT_STATE]) break;
        uint64_t home = rd64(h->b + p) & mask;
        /* move k into the hole unless its home lies cyclically in (hole, k] */
        if (((k - home) & mask) >= ((k - hole) & mask)) {
            memcpy(moved, h->b + p, SLOT_SIZE);
            TRY(txn_write(x, h->table_off + (hole << SLOT_SHIFT), moved, SLOT_SIZE));
            hole = k;
        }
    }
    return txn_write(x, h->table_off + (hole << SLOT_SHIFT), empty, SLOT_SIZE);
}

static int add_entries(Txn *x, int64_t by) {
    TRY(log_state(x));
    wr64(x->h->b + ENTRIES_OFF, rd64(x->h->b + ENTRIES_OFF) + (uint64_t)by);
    return 0;
}

/* Engine.drop of an unowned entry (see removable): its value freed, its slot emptied. */
static int drop(Txn *x, uint64_t pos) {
    TRY(heap_free(x, rd64(x->h->b + pos + SLOT_VOFF)));
    TRY(table_remove(x, pos));
    return add_entries(x, -1);
}

/* ------------------------------------------------------------------ locked operations */
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

/* The overwrite in place of the live entry at pos (Engine.put's first branch): 0 and the
 * new version, 1 when it needs another block (or its block is damaged). The entry keeps
 * its owner: the caller made sure it is the write's, if the write names one. */
static int overwrite(Txn *x, uint64_t pos, const uint8_t *d, const char *data, uint64_t n,
                     int64_t now, uint64_t expires, uint64_t *version) {
    Hot *h = x->h;
    char *b = h->b;
    uint64_t voff = rd64(b + pos + SLOT_VOFF), blk = voff - 8, size;
    int used;
    if (voff < 8 || !block_at(h, blk, &size, &used) || !used) return 1;
    uint64_t end = blk + size;
    if (memcmp(b + end - BLOCK_TAIL, d, DIGEST) != 0)
        return 1; /* a block not its own: the pure path says so */
    uint64_t room = end - blk - BLOCK_OVERHEAD;
    if (!(n <= room && room <= 2 * n + 256 && n <= INPLACE_MAX)) return 1;
    TRY(txn_begin(x));
    *version = LOAD(&h->w[VERSION_W]) + 1;
    STORE(&h->w[VERSION_W], *version); /* not journaled: see _layout */
    char slot[SLOT_HALF];
    memcpy(slot, b + pos, SLOT_HALF); /* digest, state, created stay */
    uint32_t n32 = (uint32_t)n;
    memcpy(slot + SLOT_LEN, &n32, 4);
    wr64(slot + SLOT_EXPIRES, expires);
    wr64(slot + SLOT_ATIME, (uint64_t)now);
    wr64(slot + SLOT_VERSION, *version);
    return txn_write2(x, voff, data, n32, pos, slot, SLOT_HALF);
}

/* A new entry in the empty slot at pos (Engine.put's last branch, when a free block takes
 * the value and the table has room): 0 and its version, 1 when room must be made. */
static int insert(Txn *x, uint64_t pos, const uint8_t *d, const char *data, uint64_t n,
                  int64_t now, uint64_t expires, uint64_t *version) {
    Hot *h = x->h;
    if (rd64(h->b + ENTRIES_OFF) >= h->max_entries) return 1; /* an eviction: Room's */
    uint64_t blk = heap_find(h, block_size_for(n)), p;
    if (blk == 0 || blk & 1) return 1; /* no free block (Room makes one), or damage */
    TRY(txn_begin(x));
    *version = LOAD(&h->w[VERSION_W]) + 1;
    STORE(&h->w[VERSION_W], *version);
    TRY(heap_alloc(x, blk, n, d, &p));
    TRY(txn_raw(x, p, data, n));
    char slot[SLOT_SIZE];
    uint32_t n32 = (uint32_t)n, none = 0xFFFFFFFFU;
    memset(slot, 0, sizeof slot);
    memcpy(slot, d, DIGEST);
    slot[SLOT_STATE] = 1;
    memcpy(slot + SLOT_LEN, &n32, 4);
    wr64(slot + SLOT_VOFF, p);
    wr64(slot + SLOT_CREATED, (uint64_t)now);
    wr64(slot + SLOT_EXPIRES, expires);
    wr64(slot + SLOT_ATIME, (uint64_t)now);
    wr64(slot + SLOT_VERSION, *version);
    memcpy(slot + SLOT_OWNER + DIGEST, &none, 4); /* unowned: no links (L.UNOWNED) */
    memcpy(slot + SLOT_OWNER + DIGEST + 4, &none, 4);
    TRY(txn_write(x, pos, slot, SLOT_SIZE));
    return add_entries(x, 1);
}

#define MODE_WRITE 0
#define MODE_ADD 1     /* only if no live entry (SessionStorage.add) */
#define MODE_REPLACE 2 /* only if a live entry (SessionStorage.replace) */

/* write(sid, value, ttl_ns, expect, mode, owner): the new version, -1 when add found a live
 * entry or replace none, or SLOW. Engine.put, for a live entry whose block takes the value
 * in place (and that is the owner's already, if an owner is named: a user's requests save
 * with the owner they have), or a new entry without an owner that a free block and the
 * table have room for; the rest (an expired entry, a new block, room to make, an owner to
 * link) is the pure path's. */
static PyObject *hot_write(Hot *h, PyObject *const *args, Py_ssize_t nargs) {
    uint8_t d[DIGEST], od[DIGEST];
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "write(sid, value, ttl_ns, expect, mode, owner)");
        return NULL;
    }
    PyObject *value = args[1];
    if (!digest_of(h, args[0], d) || !PyBytes_CheckExact(value) || !PyLong_CheckExact(args[2]))
        return Py_NewRef(SLOW);
    int has_owner = args[5] != Py_None;
    if (has_owner && !digest_with(&h->owners, args[5], od)) return Py_NewRef(SLOW);
    uint64_t n = (uint64_t)PyBytes_GET_SIZE(value);
    long long ttl_ns = PyLong_AsLongLong(args[2]);
    long mode = PyLong_AsLong(args[4]);
    if (ttl_ns < 0 || n > h->max_value || mode < MODE_WRITE || mode > MODE_REPLACE) {
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
    Txn x = {.h = h};
    int r;
    uint64_t version = 0, pos;
    if (after_take(h) < 0) goto out;
    int64_t now = now_ns();
    uint64_t expires = ttl_ns ? (uint64_t)(now + ttl_ns) : 0;
    r = sweep_check(h, now);
    if (r) goto done;
    int found = probe(h, d, &pos);
    if (found < 0) goto slow;
    if (found) {
        int64_t was = (int64_t)rd64(h->b + pos + SLOT_EXPIRES);
        if (was && was <= now) goto slow; /* expired: reclaimed first */
        if (mode == MODE_ADD) goto refused;
        if (has_expect && rd64(h->b + pos + SLOT_VERSION) != expect) goto slow; /* it raises */
        if (has_owner && memcmp(h->b + pos + SLOT_OWNER, od, DIGEST) != 0) goto slow;
        r = overwrite(&x, pos, d, PyBytes_AS_STRING(value), n, now, expires, &version);
    } else {
        if (mode == MODE_REPLACE) goto refused;
        if (has_expect || has_owner) goto slow; /* it raises; it links the owner */
        r = insert(&x, pos, d, PyBytes_AS_STRING(value), n, now, expires, &version);
    }
    if (!r) r = txn_commit(&x);
done:
    if (r < 0) {
        if (x.begun) txn_abort(&x);
        goto out;
    }
    if (r > 0) {
        if (x.begun) txn_abort(&x);
        goto slow;
    }
    h->writes_done++;
    h->done++;
    result = PyLong_FromUnsignedLongLong(version);
    goto out;
refused:
    result = PyLong_FromLong(-1);
    goto out;
slow:
    result = Py_NewRef(SLOW);
out:
    txn_end(&x);
    if (lock_give(tlock, fd) < 0) Py_CLEAR(result);
    return result;
}

/* What touch and invalidate share: the entry of sid under the lock, renewed (TOUCH, to
 * expires) or deleted (DELETE). Py_True/Py_False (whether a live entry was there), or SLOW
 * (an owned entry, or one with owned ones after it, whose removal moves them: the owner
 * index is the pure path's; damage). An expired entry is reclaimed either way. */
#define TOUCH 0
#define DELETE 1

static PyObject *change(Hot *h, PyObject *sid, int what, long long ttl_ns) {
    uint8_t d[DIGEST];
    if (!digest_of(h, sid, d)) return Py_NewRef(SLOW);
    PyObject *tlock;
    int fd;
    int taken = lock_take(h, &tlock, &fd);
    if (taken <= 0) return taken < 0 ? NULL : Py_NewRef(SLOW);
    PyObject *result = NULL;
    Txn x = {.h = h};
    int r, live;
    uint64_t pos;
    if (after_take(h) < 0) goto out;
    int64_t now = now_ns();
    int found = probe(h, d, &pos);
    if (found < 0) goto slow;
    if (!found) {
        result = Py_NewRef(Py_False);
        goto out;
    }
    int64_t was = (int64_t)rd64(h->b + pos + SLOT_EXPIRES);
    live = !(was && was <= now);
    if (what == TOUCH && live) {
        uint64_t expires = ttl_ns ? (uint64_t)(now + ttl_ns) : 0;
        r = txn_begin(&x);
        if (!r) r = txn_write(&x, pos + SLOT_EXPIRES, &expires, 8);
    } else {
        if (!removable(h, pos)) goto slow;
        r = txn_begin(&x);
        if (!r) r = drop(&x, pos);
    }
    if (!r) r = txn_commit(&x);
    if (r) {
        if (x.begun) txn_abort(&x);
        if (r < 0) goto out;
        goto slow;
    }
    h->done++;
    if (what == DELETE || !live) bump(h, live ? C_DELETES : C_EXPIRATIONS);
    result = Py_NewRef(live ? Py_True : Py_False);
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
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "touch(sid, ttl_ns)");
        return NULL;
    }
    if (!PyLong_CheckExact(args[1])) return Py_NewRef(SLOW);
    long long ttl_ns = PyLong_AsLongLong(args[1]);
    if (ttl_ns < 0) {
        PyErr_Clear();
        return Py_NewRef(SLOW);
    }
    return change(h, args[0], TOUCH, ttl_ns);
}

/* invalidate(sid): whether a live entry was deleted, or SLOW (Engine.invalidate). */
static PyObject *hot_invalidate(Hot *h, PyObject *sid) { return change(h, sid, DELETE, 0); }

/* ------------------------------------------------------------------ the rest */
static PyObject *hot_digest(Hot *h, PyObject *sid) {
    uint8_t d[DIGEST];
    if (!digest_of(h, sid, d)) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)d, DIGEST);
}

/* sweep_next(): Engine.sweep_next's twin, for this path's count of writes */
static PyObject *hot_sweep_next(Hot *h, PyObject *unused) {
    h->writes = SWEEP_EVERY - 1;
    Py_RETURN_NONE;
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

static PyObject *hot_get_done(Hot *h, void *c) { return PyLong_FromUnsignedLongLong(h->done); }

static PyGetSetDef hot_getset[] = {
    {"done", (getter)hot_get_done, NULL,
     "operations this handle's compiled path finished under the lock (for the tests)", NULL},
    {"lock_free", (getter)hot_get_lock_free, (setter)hot_set_lock_free,
     "reads take no lock (set false to send every read to the pure path)", NULL},
    {NULL},
};

static PyMethodDef hot_methods[] = {
    {"read", (PyCFunction)hot_read, METH_O, "read(sid) -> value, or SLOW; raises SessionNotFound"},
    {"get", (PyCFunction)(void (*)(void))hot_get, METH_FASTCALL, "get(sid, default)"},
    {"find", (PyCFunction)hot_find, METH_O, "find(sid) -> (value, version), None, or SLOW"},
    {"write", (PyCFunction)(void (*)(void))hot_write, METH_FASTCALL,
     "write(sid, value, ttl_ns, expect, mode, owner) -> version, -1 (add/replace refused), "
     "or SLOW"},
    {"invalidate", (PyCFunction)hot_invalidate, METH_O, "invalidate(sid) -> bool, or SLOW"},
    {"touch", (PyCFunction)(void (*)(void))hot_touch, METH_FASTCALL,
     "touch(sid, ttl_ns) -> bool, or SLOW"},
    {"digest", (PyCFunction)hot_digest, METH_O, "digest(sid) -> 16 bytes, or None"},
    {"sweep_next", (PyCFunction)hot_sweep_next, METH_NOARGS,
     "the next write looks for expired entries to sweep (Engine.sweep_next)"},
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
    INTERN(s_timeout, "timeout");
    INTERN(s_tlock, "_tlock");
    INTERN(s_acquire, "acquire");
    INTERN(s_release, "release");
    INTERN(s_fault, "fault");
    INTERN(s_rollback, "rollback");
#undef INTERN
    PyObject *m = PyModule_Create(&hot_module);
    if (m == NULL) return NULL;
    PyObject *layout = Py_BuildValue(
        "{sisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisi}",
        "USED_W", USED_W, "NEXT_TXID_W", NEXT_TXID_W, "DIRTY_W", DIRTY_W, "FLAGS_W", FLAGS_W,
        "VERSION_W", VERSION_W, "SEQ_W", SEQ_W, "COUNTERS_W", COUNTERS_W,
        "SWEEP_CURSOR_W", SWEEP_CURSOR_W, "SLOT_SHIFT", SLOT_SHIFT, "SLOT_SIZE", SLOT_SIZE,
        "SLOT_STATE", SLOT_STATE, "SLOT_LEN", SLOT_LEN, "SLOT_VOFF", SLOT_VOFF,
        "SLOT_CREATED", SLOT_CREATED, "SLOT_EXPIRES", SLOT_EXPIRES, "SLOT_ATIME", SLOT_ATIME,
        "SLOT_VERSION", SLOT_VERSION, "SLOT_HALF", SLOT_HALF, "SLOT_OWNER", SLOT_OWNER,
        "STATE_OFF", STATE_OFF, "STATE_SIZE", STATE_SIZE, "ENTRIES_OFF", ENTRIES_OFF,
        "HEAP_USED_OFF", HEAP_USED_OFF, "BITMAP_OFF", BITMAP_OFF, "BINS_OFF", BINS_OFF,
        "NBINS", NBINS, "ALIGN", ALIGN, "HEAP_SCAN", HEAP_SCAN, "C_DELETES", C_DELETES,
        "C_EXPIRATIONS", C_EXPIRATIONS, "DIGEST", DIGEST, "BLOCK_TAIL", BLOCK_TAIL,
        "BLOCK_OVERHEAD", BLOCK_OVERHEAD, "MIN_BLOCK", MIN_BLOCK, "INPLACE_MAX", INPLACE_MAX,
        "MAX_ID_BYTES", MAX_ID_BYTES, "SWEEP_EVERY", SWEEP_EVERY, "SWEEP_SLOTS", SWEEP_SLOTS,
        "HOUSEKEEPING_EVERY", HOUSEKEEPING_EVERY, "PEEK_TRIES", PEEK_TRIES, "SPIN", SPIN,
        "LOCK_SPIN_NS", LOCK_SPIN_NS, "LOCK_SPIN_LOADS", LOCK_SPIN_LOADS);
    if (layout == NULL || PyModule_AddObject(m, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(m);
        return NULL;
    }
    SLOW = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (SLOW == NULL || PyModule_AddObjectRef(m, "SLOW", SLOW) < 0 ||
        PyModule_AddObjectRef(m, "Hot", (PyObject *)&HotType) < 0 ||
        PyModule_AddObjectRef(m, "Hasher", (PyObject *)&HasherType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
