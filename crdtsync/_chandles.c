/* crdtsync._chandles: the fast paths of the two specialised write handles, in C.
 *
 * The reference is the pure-Python handles of crdtsync/replica/handles.py (the closures
 * `_lww_set` and `_increment` make); tests/replica/test_chandles.py drives both with the
 * same random and hostile calls and asserts identical results, errors, states, queues
 * and log records. Everything that is not the fast path is the Python code's: planning
 * (`refresh(handle)`, which calls `handle.plan(...)`), and the general path
 * (`general(key, value_or_n, ts)`), which every unusual call takes. The clock's fast
 * path is the one of HLC.now() (crdtsync/clock.py), inlined; whenever anything differs
 * from the common case this calls HLC.now() itself, which starts with the same test.
 *
 * Attributes of the objects a call touches (the clock's slots, the table's `max_ts`, the
 * writer's `generation`, the stats' `events_local`) are read the way the interpreter's
 * specialised attribute access reads them: a slot at its offset, an instance-dict entry
 * from the instance dict; anything else (a property, an unexpected layout) through the
 * generic getattr/setattr.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* ---- attribute access ------------------------------------------------------------ */

typedef struct {
    PyObject *obj;   /* borrowed: the handle holds a reference */
    PyObject *name;  /* interned, owned */
    Py_ssize_t off;  /* >= 0: slot offset */
    PyObject *dict;  /* owned: the instance dict, when the attribute lives there */
} Attr;

static void attr_clear(Attr *a) {
    Py_CLEAR(a->dict);
    Py_CLEAR(a->name);
    a->obj = NULL;
    a->off = -1;
}

static int attr_init(Attr *a, PyObject *obj, const char *name) {
    attr_clear(a);
    a->obj = obj;
    a->name = PyUnicode_InternFromString(name);
    if (a->name == NULL)
        return -1;
    if (obj == NULL || obj == Py_None)
        return 0;
    PyObject *d = _PyType_Lookup(Py_TYPE(obj), a->name); /* borrowed */
    if (d != NULL) {
        if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
                a->off = m->offset;
            return 0;
        }
        if (Py_TYPE(d)->tp_descr_set != NULL)
            return 0; /* a data descriptor (property): generic access */
    }
    if (Py_TYPE(obj)->tp_dictoffset != 0) {
        PyObject *dict = PyObject_GenericGetDict(obj, NULL);
        if (dict == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (PyDict_CheckExact(dict))
            a->dict = dict;
        else
            Py_DECREF(dict);
    }
    return 0;
}

/* new reference, or NULL with an exception */
static inline PyObject *attr_get(Attr *a) {
    if (a->off >= 0) {
        PyObject *v = *(PyObject **)((char *)a->obj + a->off);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    } else if (a->dict != NULL) {
        PyObject *v = PyDict_GetItemWithError(a->dict, a->name);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
        if (PyErr_Occurred())
            return NULL;
    }
    return PyObject_GetAttr(a->obj, a->name);
}

/* borrowed reference or NULL (no exception): only for slots that are set */
static inline PyObject *attr_peek(Attr *a) {
    if (a->off >= 0)
        return *(PyObject **)((char *)a->obj + a->off);
    return NULL;
}

static inline int attr_set(Attr *a, PyObject *v) {
    if (a->off >= 0) {
        PyObject **p = (PyObject **)((char *)a->obj + a->off);
        PyObject *old = *p;
        Py_INCREF(v);
        *p = v;
        Py_XDECREF(old);
        return 0;
    }
    if (a->dict != NULL)
        return PyDict_SetItem(a->dict, a->name, v);
    return PyObject_SetAttr(a->obj, a->name, v);
}

/* ---- the handle ------------------------------------------------------------------ */

static PyObject *ONE, *ZERO, *I64_LIMIT, *STR_NOW, *STR_REISSUE;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int lww; /* 1: LWW set, 0: GCounter increment */
    /* given at construction */
    PyObject *w, *schema, *clk, *stats, *actor;
    PyObject *keys, *stamps, *fix, *items; /* the queue's column lists */
    PyObject *refresh, *general, *flat, *pack;
    /* planned by refresh (handle.plan) */
    PyObject *gen, *schema_gen;
    PyObject *rows;    /* increment: the table's rows (None: no table yet) */
    PyObject *objects; /* increment: the table's objects */
    PyObject *tbl;     /* LWW: the table (None: no table) */
    PyObject *own;     /* LWW: the table's own overlay (None: general path) */
    PyObject *entry, *packed_entry;
    int listening;
    /* attribute access */
    Attr a_gen, a_schema_gen, a_events_local, a_max_ts;
    Attr c_last, c_from, c_to, c_owner, c_shared;
    int clock_slots; /* the five clock attributes are slots */
} Handle;

static PyObject *stamp(Handle *h) {
    if (h->clock_slots) {
        PyObject *from = attr_peek(&h->c_from), *to = attr_peek(&h->c_to), *owner = attr_peek(&h->c_owner);
        PyObject *last = attr_peek(&h->c_last);
        if (from && to && owner && last && PyLong_CheckExact(from) && PyLong_CheckExact(to)
            && PyLong_CheckExact(owner)) {
            struct timespec tsp;
            if (clock_gettime(CLOCK_REALTIME, &tsp) == 0) { /* time.time_ns() */
                long long t = (long long)tsp.tv_sec * 1000000000LL + tsp.tv_nsec;
                int of1 = 0, of2 = 0;
                long long f = PyLong_AsLongLongAndOverflow(from, &of1);
                long long e = PyLong_AsLongLongAndOverflow(to, &of2);
                if (!of1 && !of2 && !PyErr_Occurred() && f <= t && t < e) {
                    unsigned long o = PyLong_AsUnsignedLong(owner);
                    if (o == (unsigned long)-1 && PyErr_Occurred()) {
                        PyErr_Clear();
                    } else if (o == PyThread_get_thread_ident()) {
                        PyObject *ts = PyNumber_Add(last, ONE);
                        if (ts == NULL)
                            return NULL;
                        attr_set(&h->c_last, ts);
                        PyObject *shared = attr_peek(&h->c_shared);
                        if (shared == Py_False)
                            return ts;
                        int yes = shared == NULL ? 1 : PyObject_IsTrue(shared);
                        if (yes < 0) {
                            Py_DECREF(ts);
                            return NULL;
                        }
                        if (!yes)
                            return ts;
                        PyObject *r = PyObject_CallMethodOneArg(h->clk, STR_REISSUE, ts);
                        Py_DECREF(ts);
                        return r;
                    }
                }
                PyErr_Clear();
            }
        }
    }
    return PyObject_CallMethodNoArgs(h->clk, STR_NOW);
}

/* re-plan when the writer's generation or the schema's moved; 0 or -1 */
static inline int check_plan(Handle *h) {
    PyObject *g = attr_get(&h->a_gen);
    if (g == NULL)
        return -1;
    int stale = g != h->gen;
    Py_DECREF(g);
    if (!stale) {
        PyObject *sg = attr_get(&h->a_schema_gen);
        if (sg == NULL)
            return -1;
        int ne = sg == h->schema_gen ? 0 : PyObject_RichCompareBool(sg, h->schema_gen, Py_NE);
        Py_DECREF(sg);
        if (ne < 0)
            return -1;
        stale = ne;
    }
    if (!stale)
        return 0;
    PyObject *r = PyObject_CallOneArg(h->refresh, (PyObject *)h);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static inline int count_local(Handle *h) {
    PyObject *n = attr_get(&h->a_events_local);
    if (n == NULL)
        return -1;
    PyObject *n1 = PyNumber_Add(n, ONE);
    Py_DECREF(n);
    if (n1 == NULL)
        return -1;
    int r = attr_set(&h->a_events_local, n1);
    Py_DECREF(n1);
    return r;
}

/* (key, second) from positional or keyword arguments; second optional when dflt */
static int parse2(PyObject *const *args, size_t nargsf, PyObject *kwnames, const char *n1, const char *n2,
                  PyObject *dflt, PyObject **a1, PyObject **a2) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    *a1 = nargs > 0 ? args[0] : NULL;
    *a2 = nargs > 1 ? args[1] : NULL;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "write handle takes at most 2 arguments (%zd given)", nargs + nkw);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot = NULL;
        if (PyUnicode_CompareWithASCIIString(k, n1) == 0)
            slot = a1;
        else if (PyUnicode_CompareWithASCIIString(k, n2) == 0)
            slot = a2;
        if (slot == NULL) {
            PyErr_Format(PyExc_TypeError, "write handle got an unexpected keyword argument '%U'", k);
            return -1;
        }
        if (*slot != NULL) {
            PyErr_Format(PyExc_TypeError, "write handle got multiple values for argument '%U'", k);
            return -1;
        }
        *slot = args[nargs + i];
    }
    if (*a2 == NULL)
        *a2 = dflt;
    if (*a1 == NULL || *a2 == NULL) {
        PyErr_Format(PyExc_TypeError, "write handle missing a required argument: '%s'", *a1 == NULL ? n1 : n2);
        return -1;
    }
    return 0;
}

static PyObject *increment_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Handle *h = (Handle *)self;
    PyObject *key, *n;
    if (parse2(args, nargsf, kwnames, "key", "n", ONE, &key, &n) < 0)
        return NULL;
    if (check_plan(h) < 0)
        return NULL;
    if (h->rows == Py_None || !PyDict_CheckExact(h->rows) || !PyUnicode_CheckExact(key) || !PyLong_CheckExact(n)
        || h->listening)
        goto general;
    {
        int of = 0;
        long long nv = PyLong_AsLongLongAndOverflow(n, &of);
        if (of < 0 || (of == 0 && nv < 1))
            goto general;
    }
    PyObject *row = PyDict_GetItemWithError(h->rows, key); /* borrowed */
    if (row == NULL) {
        if (PyErr_Occurred())
            return NULL;
        int has = PyDict_Check(h->objects) ? PyDict_Contains(h->objects, key) : PySequence_Contains(h->objects, key);
        if (has < 0)
            return NULL;
        if (has)
            goto general;
    } else if (!PyDict_CheckExact(row)) {
        goto general;
    }
    Py_XINCREF(row);
    PyObject *cur = ZERO;
    if (row != NULL) {
        cur = PyDict_GetItemWithError(row, h->actor);
        if (cur == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(row);
                return NULL;
            }
            cur = ZERO;
        }
    }
    PyObject *total = PyNumber_Add(cur, n);
    if (total == NULL) {
        Py_XDECREF(row);
        return NULL;
    }
    int big = PyObject_RichCompareBool(total, I64_LIMIT, Py_GE);
    if (big != 0) {
        Py_XDECREF(row);
        Py_DECREF(total);
        if (big < 0)
            return NULL;
        goto general; /* (it raises the general path's error) */
    }
    PyObject *ts = stamp(h);
    if (ts == NULL) {
        Py_XDECREF(row);
        Py_DECREF(total);
        return NULL;
    }
    int err;
    if (row == NULL) {
        PyObject *nrow = PyDict_New();
        err = nrow == NULL || PyDict_SetItem(nrow, h->actor, total) < 0 || PyDict_SetItem(h->rows, key, nrow) < 0;
        Py_XDECREF(nrow);
    } else {
        err = PyDict_SetItem(row, h->actor, total) < 0;
        Py_DECREF(row);
    }
    if (!err)
        err = PyList_Append(h->keys, key) < 0 || PyList_Append(h->stamps, ts) < 0 || PyList_Append(h->fix, h->entry) < 0
              || PyList_Append(h->items, total) < 0 || count_local(h) < 0;
    Py_DECREF(ts);
    Py_DECREF(total);
    if (err)
        return NULL;
    Py_RETURN_NONE;
general: {
    PyObject *a[2] = {key, n};
    return PyObject_Vectorcall(h->general, a, 2, NULL);
}
}

static int fits_value_int(PyObject *v) { /* -2**63 <= v < 2**64 */
    int of = 0;
    PyLong_AsLongLongAndOverflow(v, &of);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (of == 0)
        return 1;
    if (of < 0)
        return 0;
    PyLong_AsUnsignedLongLong(v);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* ---- flat lists packed: msgpack bytes of a list or tuple of scalars ---------------- */
static PyTypeObject PackedType; /* below */

/* a new Packed holding buf[:n] (allocated as bytes allocates its instances) */
static PyObject *new_packed(const char *buf, Py_ssize_t n) {
    PyObject *o = PackedType.tp_alloc(&PackedType, n); /* zeroed, n + 1 bytes of room */
    if (o == NULL)
        return NULL;
    memcpy(PyBytes_AS_STRING(o), buf, n);
    ((PyBytesObject *)o)->ob_shash = -1; /* not hashed yet */
    return o;
}
/* The reference is crdtsync.types.registers._flat + crdtsync._encoding.pack_small (msgpack
 * with use_bin_type=True, use_single_float=False): the same bytes for every flat value,
 * None for anything else (nested, another type or a subclass, an int outside
 * [-2**63, 2**64), a str that does not encode as UTF-8). */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char small[256];
} Buf;

static int buf_grow(Buf *b, Py_ssize_t need) {
    if (b->len + need <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + need)
        cap *= 2;
    char *n = PyMem_Malloc(cap);
    if (n == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(n, b->buf, b->len);
    if (b->buf != b->small)
        PyMem_Free(b->buf);
    b->buf = n;
    b->cap = cap;
    return 0;
}

static inline int put_head(Buf *b, unsigned char tag, unsigned long long v, int width) {
    if (buf_grow(b, 1 + width) < 0)
        return -1;
    unsigned char *p = (unsigned char *)b->buf + b->len;
    *p++ = tag;
    for (int k = width - 1; k >= 0; k--)
        *p++ = (unsigned char)(v >> (8 * k));
    b->len += 1 + width;
    return 0;
}

static int put_bytes(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, n) < 0)
        return -1;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    return 0;
}

/* 1 packed, 0 not flat, -1 error */
static int pack_scalar(Buf *b, PyObject *x) {
    PyTypeObject *t = Py_TYPE(x);
    if (x == Py_None)
        return put_head(b, 0xc0, 0, 0) < 0 ? -1 : 1;
    if (t == &PyBool_Type)
        return put_head(b, x == Py_True ? 0xc3 : 0xc2, 0, 0) < 0 ? -1 : 1;
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(x);
        unsigned long long u;
        memcpy(&u, &d, 8);
        return put_head(b, 0xcb, u, 8) < 0 ? -1 : 1;
    }
    if (t == &PyLong_Type) {
        int of = 0;
        long long v = PyLong_AsLongLongAndOverflow(x, &of);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (of < 0)
            return 0;
        if (of > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(x);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            return put_head(b, 0xcf, u, 8) < 0 ? -1 : 1;
        }
        int r;
        if (v >= 0) {
            if (v < 128)
                r = put_head(b, (unsigned char)v, 0, 0);
            else if (v < 256)
                r = put_head(b, 0xcc, (unsigned long long)v, 1);
            else if (v < 65536)
                r = put_head(b, 0xcd, (unsigned long long)v, 2);
            else if (v < 4294967296LL)
                r = put_head(b, 0xce, (unsigned long long)v, 4);
            else
                r = put_head(b, 0xcf, (unsigned long long)v, 8);
        } else if (v >= -32) {
            r = put_head(b, (unsigned char)(0xe0 | (v + 32)), 0, 0);
        } else if (v >= -128) {
            r = put_head(b, 0xd0, (unsigned long long)v & 0xff, 1);
        } else if (v >= -32768) {
            r = put_head(b, 0xd1, (unsigned long long)v & 0xffff, 2);
        } else if (v >= -2147483648LL) {
            r = put_head(b, 0xd2, (unsigned long long)v & 0xffffffffULL, 4);
        } else {
            r = put_head(b, 0xd3, (unsigned long long)v, 8);
        }
        return r < 0 ? -1 : 1;
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(x, &n);
        if (s == NULL) {
            PyErr_Clear(); /* (a lone surrogate) the Python path raises the right error */
            return 0;
        }
        int r;
        if (n < 32)
            r = put_head(b, (unsigned char)(0xa0 | n), 0, 0);
        else if (n < 256)
            r = put_head(b, 0xd9, (unsigned long long)n, 1);
        else if (n < 65536)
            r = put_head(b, 0xda, (unsigned long long)n, 2);
        else if (n <= 0xffffffffLL)
            r = put_head(b, 0xdb, (unsigned long long)n, 4);
        else
            return 0;
        return (r < 0 || put_bytes(b, s, n) < 0) ? -1 : 1;
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(x);
        int r;
        if (n < 256)
            r = put_head(b, 0xc4, (unsigned long long)n, 1);
        else if (n < 65536)
            r = put_head(b, 0xc5, (unsigned long long)n, 2);
        else if (n <= 0xffffffffLL)
            r = put_head(b, 0xc6, (unsigned long long)n, 4);
        else
            return 0;
        return (r < 0 || put_bytes(b, PyBytes_AS_STRING(x), n) < 0) ? -1 : 1;
    }
    return 0;
}

/* new reference: a Packed of the bytes, Py_None (not flat), or NULL with an exception */
static PyObject *flat_packb_impl(PyObject *value) {
    PyTypeObject *t = Py_TYPE(value);
    if (t != &PyList_Type && t != &PyTuple_Type)
        Py_RETURN_NONE;
    Buf b;
    b.buf = b.small;
    b.len = 0;
    b.cap = sizeof(b.small);
    PyObject *out = NULL;
    PyObject *seq = PySequence_Fast(value, "");  /* (a list or tuple: itself) */
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int r = n < 16 ? put_head(&b, (unsigned char)(0x90 | n), 0, 0)
          : n < 65536 ? put_head(&b, 0xdc, (unsigned long long)n, 2)
          : put_head(&b, 0xdd, (unsigned long long)n, 4);
    if (r < 0)
        goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        /* (the list cannot change under us: packing a scalar runs no Python code) */
        r = pack_scalar(&b, PySequence_Fast_GET_ITEM(seq, k));
        if (r < 0)
            goto done;
        if (r == 0) {
            out = Py_NewRef(Py_None);
            goto done;
        }
    }
    out = new_packed(b.buf, b.len);
done:
    Py_DECREF(seq);
    if (b.buf != b.small)
        PyMem_Free(b.buf);
    return out;
}

static PyObject *flat_packb(PyObject *mod, PyObject *value) {
    (void)mod;
    return flat_packb_impl(value);
}

static PyObject *lww_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Handle *h = (Handle *)self;
    PyObject *key, *value;
    if (parse2(args, nargsf, kwnames, "key", "value", NULL, &key, &value) < 0)
        return NULL;
    if (check_plan(h) < 0)
        return NULL;
    PyObject *stored = value, *entry = h->entry, *ts = NULL;
    Py_INCREF(stored);
    if (h->own == Py_None || !PyDict_CheckExact(h->own) || !PyUnicode_CheckExact(key) || h->listening)
        goto general;
    PyTypeObject *t = Py_TYPE(value);
    if (t == &PyLong_Type) {
        if (!fits_value_int(value))
            goto general;
    } else if (!(t == &PyFloat_Type || t == &PyUnicode_Type || t == &PyBool_Type || value == Py_None
                 || t == &PyBytes_Type)) {
        if (t != &PyList_Type && t != &PyTuple_Type)
            goto general;
        if (h->flat == Py_None) { /* the C packer: its Packed is the stored form */
            PyObject *packed = flat_packb_impl(value);
            if (packed == NULL)
                goto error;
            if (packed == Py_None) {
                Py_DECREF(packed);
                goto general;
            }
            Py_DECREF(stored);
            stored = packed;
        } else {
            PyObject *r = PyObject_CallOneArg(h->flat, value);
            if (r == NULL)
                goto error;
            int yes = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (yes < 0)
                goto error;
            if (!yes)
                goto general;
            Py_DECREF(stored);
            stored = PyObject_CallOneArg(h->pack, value);
            if (stored == NULL)
                return NULL;
        }
        entry = h->packed_entry;
    }
    ts = stamp(h);
    if (ts == NULL)
        goto error;
    {
        PyObject *top = attr_get(&h->a_max_ts);
        if (top == NULL)
            goto error;
        int behind = PyObject_RichCompareBool(ts, top, Py_LE);
        Py_DECREF(top);
        if (behind < 0)
            goto error;
        if (behind) /* the table holds a stamp from beyond this clock */
            goto general; /* (with this stamp: the event write() would have made) */
    }
    {
        PyObject *pair = PyTuple_Pack(2, ts, stored);
        /* a pair of an int and an untracked value (a scalar, or the Packed bytes of a
         * list) can be in no cycle: untracked now, the collector never scans the overlay's
         * pairs (60k writes made ~85 young collections, each scanning what had survived) */
        if (pair != NULL && !(PyObject_IS_GC(stored) && PyObject_GC_IsTracked(stored)))
            PyObject_GC_UnTrack(pair);
        int err = pair == NULL || PyDict_SetItem(h->own, key, pair) < 0 || attr_set(&h->a_max_ts, ts) < 0
                  || PyList_Append(h->keys, key) < 0 || PyList_Append(h->stamps, ts) < 0
                  || PyList_Append(h->fix, entry) < 0 || PyList_Append(h->items, stored) < 0 || count_local(h) < 0;
        Py_XDECREF(pair);
        if (err)
            goto error;
    }
    Py_DECREF(ts);
    Py_DECREF(stored);
    Py_RETURN_NONE;
general: {
    PyObject *a[3] = {key, value, ts == NULL ? Py_None : ts};
    PyObject *r = PyObject_Vectorcall(h->general, a, 3, NULL);
    Py_XDECREF(ts);
    Py_DECREF(stored);
    return r;
}
error:
    Py_XDECREF(ts);
    Py_XDECREF(stored);
    return NULL;
}

/* ---- construction, planning, GC -------------------------------------------------- */

static int handle_init_common(Handle *h, PyObject *w, PyObject *schema, PyObject *clk, PyObject *stats,
                              PyObject *queue, PyObject *refresh, PyObject *general) {
    h->w = Py_NewRef(w);
    h->schema = Py_NewRef(schema);
    h->clk = Py_NewRef(clk);
    h->stats = Py_NewRef(stats);
    h->refresh = Py_NewRef(refresh);
    h->general = Py_NewRef(general);
    const char *cols[4] = {"keys", "stamps", "fix", "items"};
    PyObject **dst[4] = {&h->keys, &h->stamps, &h->fix, &h->items};
    for (int i = 0; i < 4; i++) {
        PyObject *c = PyObject_GetAttrString(queue, cols[i]);
        if (c == NULL)
            return -1;
        if (!PyList_CheckExact(c)) {
            Py_DECREF(c);
            PyErr_Format(PyExc_TypeError, "queue.%s is not a list", cols[i]);
            return -1;
        }
        *dst[i] = c;
    }
    h->gen = Py_NewRef(Py_None);
    h->schema_gen = PyLong_FromLong(-1);
    h->rows = Py_NewRef(Py_None);
    h->objects = PyDict_New();
    h->tbl = Py_NewRef(Py_None);
    h->own = Py_NewRef(Py_None);
    h->entry = Py_NewRef(ZERO);
    h->packed_entry = Py_NewRef(ZERO);
    if (h->schema_gen == NULL || h->objects == NULL)
        return -1;
    if (attr_init(&h->a_gen, w, "generation") < 0 || attr_init(&h->a_schema_gen, schema, "_generation") < 0
        || attr_init(&h->a_events_local, stats, "events_local") < 0 || attr_init(&h->a_max_ts, NULL, "max_ts") < 0
        || attr_init(&h->c_last, clk, "_last") < 0 || attr_init(&h->c_from, clk, "_fast_from") < 0
        || attr_init(&h->c_to, clk, "_fast_to") < 0 || attr_init(&h->c_owner, clk, "_owner") < 0
        || attr_init(&h->c_shared, clk, "_shared") < 0)
        return -1;
    h->clock_slots = h->c_last.off >= 0 && h->c_from.off >= 0 && h->c_to.off >= 0 && h->c_owner.off >= 0
                     && h->c_shared.off >= 0;
    return 0;
}

static PyTypeObject IncrementHandleType, LWWSetHandleType;
static PyObject *guarded_increment(PyObject *, PyObject *const *, size_t, PyObject *);
static PyObject *guarded_lww(PyObject *, PyObject *const *, size_t, PyObject *);

static PyObject *increment_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *w, *schema, *clk, *stats, *actor, *queue, *refresh, *general;
    static char *kw[] = {"w", "schema", "clk", "stats", "actor", "queue", "refresh", "general", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOUOOO", kw, &w, &schema, &clk, &stats, &actor, &queue,
                                     &refresh, &general))
        return NULL;
    Handle *h = (Handle *)type->tp_alloc(type, 0);
    if (h == NULL)
        return NULL;
    h->vectorcall = guarded_increment;
    h->lww = 0;
    h->actor = Py_NewRef(actor);
    h->flat = Py_NewRef(Py_None);
    h->pack = Py_NewRef(Py_None);
    if (handle_init_common(h, w, schema, clk, stats, queue, refresh, general) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

static PyObject *lww_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *w, *schema, *clk, *stats, *queue, *refresh, *general, *flat, *pack;
    static char *kw[] = {"w", "schema", "clk", "stats", "queue", "refresh", "general", "flat", "pack", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOO", kw, &w, &schema, &clk, &stats, &queue, &refresh,
                                     &general, &flat, &pack))
        return NULL;
    Handle *h = (Handle *)type->tp_alloc(type, 0);
    if (h == NULL)
        return NULL;
    h->vectorcall = guarded_lww;
    h->lww = 1;
    h->actor = Py_NewRef(Py_None);
    h->flat = Py_NewRef(flat);
    h->pack = Py_NewRef(pack);
    if (handle_init_common(h, w, schema, clk, stats, queue, refresh, general) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

#define SET(field, v) do { PyObject *_old = h->field; h->field = Py_NewRef(v); Py_XDECREF(_old); } while (0)

static PyObject *increment_plan(PyObject *self, PyObject *args) {
    Handle *h = (Handle *)self;
    PyObject *gen, *sg, *rows, *objects, *entry;
    int listening;
    if (!PyArg_ParseTuple(args, "OOOOOp", &gen, &sg, &rows, &objects, &entry, &listening))
        return NULL;
    SET(gen, gen);
    SET(schema_gen, sg);
    SET(rows, rows);
    SET(objects, objects);
    SET(entry, entry);
    h->listening = listening;
    Py_RETURN_NONE;
}

static PyObject *lww_plan(PyObject *self, PyObject *args) {
    Handle *h = (Handle *)self;
    PyObject *gen, *sg, *tbl, *own, *entry, *packed_entry;
    int listening;
    if (!PyArg_ParseTuple(args, "OOOOOOp", &gen, &sg, &tbl, &own, &entry, &packed_entry, &listening))
        return NULL;
    SET(gen, gen);
    SET(schema_gen, sg);
    SET(tbl, tbl);
    SET(own, own);
    SET(entry, entry);
    SET(packed_entry, packed_entry);
    h->listening = listening;
    if (attr_init(&h->a_max_ts, tbl, "max_ts") < 0)
        return NULL;
    Py_RETURN_NONE;
}

#define VISIT_ALL(V)                                                                                         \
    V(w) V(schema) V(clk) V(stats) V(actor) V(keys) V(stamps) V(fix) V(items) V(refresh) V(general) V(flat)   \
    V(pack) V(gen) V(schema_gen) V(rows) V(objects) V(tbl) V(own) V(entry) V(packed_entry)

static int handle_traverse(PyObject *self, visitproc visit, void *arg) {
    Handle *h = (Handle *)self;
#define V(f) Py_VISIT(h->f);
    VISIT_ALL(V)
#undef V
    Py_VISIT(h->a_gen.dict);
    Py_VISIT(h->a_schema_gen.dict);
    Py_VISIT(h->a_events_local.dict);
    Py_VISIT(h->a_max_ts.dict);
    return 0;
}

static int handle_clear(PyObject *self) {
    Handle *h = (Handle *)self;
    Attr *attrs[9] = {&h->a_gen, &h->a_schema_gen, &h->a_events_local, &h->a_max_ts,
                      &h->c_last, &h->c_from, &h->c_to, &h->c_owner, &h->c_shared};
    for (int i = 0; i < 9; i++)
        attr_clear(attrs[i]);
    h->clock_slots = 0;
#define V(f) Py_CLEAR(h->f);
    VISIT_ALL(V)
#undef V
    return 0;
}

static void handle_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    handle_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* a handle cleared by the GC (a cycle being collected) must not crash when called */
static PyObject *guarded_increment(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (((Handle *)self)->w == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "write handle was cleared");
        return NULL;
    }
    return increment_call(self, args, nargsf, kwnames);
}

static PyObject *guarded_lww(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (((Handle *)self)->w == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "write handle was cleared");
        return NULL;
    }
    return lww_call(self, args, nargsf, kwnames);
}

static PyMemberDef handle_members[] = {
    {"gen", T_OBJECT, offsetof(Handle, gen), READONLY, "the writer generation planned for"},
    {"schema_gen", T_OBJECT, offsetof(Handle, schema_gen), READONLY, "the schema generation planned for"},
    {"rows", T_OBJECT, offsetof(Handle, rows), READONLY, "increment: the counter table's rows, or None"},
    {"own", T_OBJECT, offsetof(Handle, own), READONLY, "LWW: the table's own overlay, or None"},
    {"tbl", T_OBJECT, offsetof(Handle, tbl), READONLY, "LWW: the table, or None"},
    {"entry", T_OBJECT, offsetof(Handle, entry), READONLY, "the queue entry of a fast-path write"},
    {"listening", T_INT, offsetof(Handle, listening), READONLY, "whether subscribers listen (general path)"},
    {NULL},
};

static PyMethodDef increment_methods[] = {
    {"plan", increment_plan, METH_VARARGS, "plan(gen, schema_gen, rows, objects, entry, listening)"},
    {NULL},
};

static PyMethodDef lww_methods[] = {
    {"plan", lww_plan, METH_VARARGS, "plan(gen, schema_gen, tbl, own, entry, packed_entry, listening)"},
    {NULL},
};

static PyTypeObject IncrementHandleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "crdtsync._chandles.IncrementHandle",
    .tp_basicsize = sizeof(Handle),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The fast path of a GCounter increment write handle (see crdtsync.replica.handles).",
    .tp_new = increment_new,
    .tp_dealloc = handle_dealloc,
    .tp_traverse = handle_traverse,
    .tp_clear = handle_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Handle, vectorcall),
    .tp_members = handle_members,
    .tp_methods = increment_methods,
};

static PyTypeObject LWWSetHandleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "crdtsync._chandles.LWWSetHandle",
    .tp_basicsize = sizeof(Handle),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The fast path of an LWW set write handle (see crdtsync.replica.handles).",
    .tp_new = lww_new,
    .tp_dealloc = handle_dealloc,
    .tp_traverse = handle_traverse,
    .tp_clear = handle_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Handle, vectorcall),
    .tp_members = handle_members,
    .tp_methods = lww_methods,
};

/* ---- Packed: the stored form of a list or dict value --------------------------------- */
/* A bytes subclass like the pure-Python crdtsync.types.registers._PyPacked, defined here so
 * that its instances are not tracked by the cyclic garbage collector (a subclass defined in
 * Python always is): a replica holds one per queued or overlaid list value, and tracked
 * ones made every full collection walk them. */
static PyTypeObject PackedType = { /* (declared above the flat packer) */
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "crdtsync._chandles.Packed",
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The canonical msgpack bytes of a list or dict value (a bytes subclass the garbage "
              "collector does not track).",
};

static PyMethodDef module_methods[] = {
    {"flat_packb", flat_packb, METH_O,
     "flat_packb(value): the msgpack bytes of a flat list or tuple of scalars (as pack_small packs it) "
     "as a Packed, or None if value is not one"},
    {NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "crdtsync._chandles",
    "The fast paths of the write handles in C (reference: crdtsync/replica/handles.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__chandles(void) {
    ONE = PyLong_FromLong(1);
    ZERO = PyLong_FromLong(0);
    I64_LIMIT = PyLong_FromUnsignedLongLong(1ULL << 63);
    STR_NOW = PyUnicode_InternFromString("now");
    STR_REISSUE = PyUnicode_InternFromString("_reissue");
    if (!ONE || !ZERO || !I64_LIMIT || !STR_NOW || !STR_REISSUE)
        return NULL;
    PackedType.tp_base = &PyBytes_Type;
    if (PyType_Ready(&IncrementHandleType) < 0 || PyType_Ready(&LWWSetHandleType) < 0
        || PyType_Ready(&PackedType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "IncrementHandle", (PyObject *)&IncrementHandleType) < 0
        || PyModule_AddObjectRef(m, "LWWSetHandle", (PyObject *)&LWWSetHandleType) < 0
        || PyModule_AddObjectRef(m, "Packed", (PyObject *)&PackedType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
