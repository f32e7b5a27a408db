/* crdtsync._clineage: the digests and prediction rows of a lineage flush, in C.
 *
 * The references are inference/digests.py (`input_digests`, `output_digests`)
 * and inference/encoder.py (`pack_run`): they call these functions when the
 * extension is loaded and run their own Python otherwise; tests/inference/
 * test_clineage.py drives both with the same random and hostile inputs and asserts
 * identical digests and bytes (or the same exception).
 *
 * A prediction's digests are 16-byte BLAKE2b (RFC 7693, unkeyed, digest_size=16, as
 * hashlib.blake2b(data, digest_size=16)). hashlib's per-call cost (a hash object, keyword
 * parsing, a method call) is about as much as hashing a 300-byte row, so this module
 * hashes whole lists in one C loop:
 *
 *   blake16(data)                    one digest of a bytes-like object (tests, and
 *                                    the check against hashlib at import)
 *   digests(blobs, rows, fallback)   [blake16(b) for b in blobs]; where blobs[i] is
 *                                    None (a row the caller could not pack), the
 *                                    digest is fallback(rows[i])
 *   output_digests(outputs, keys, heads, types, dtypes, shapes, fallback)
 *                                    per output mapping o: when o is a dict of exactly
 *                                    those keys whose values have those exact types,
 *                                    dtypes (identity) and shapes (tuples of ints, ==
 *                                    the buffer's) and export a C-contiguous buffer
 *                                    (what tobytes() copies), the digest of
 *                                    heads[0] + buffer(o[keys[0]]) + heads[1] + ...;
 *                                    anything else is fallback(o)
 *   prediction_digests(...)          both digests of many predictions, in one pass
 *                                    (below)
 *   pack_predictions(...)            the msgpack prediction rows of a run of records
 *                                    (below)
 *   hold(p), track(preds)            queued predictions kept out of the collector's
 *                                    way while they wait (below)
 *
 * Nothing here decides what a digest covers: the heads and the packed rows come from
 * the Python code, which is the definition. An input this code was not written for goes
 * to the fallback, the Python function of the reference, before anything was returned.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- BLAKE2b (RFC 7693), unkeyed ------------------------------------------------- */

typedef struct {
    uint64_t h[8];
    uint64_t t0, t1;   /* bytes hashed so far (128-bit counter) */
    uint8_t b[128];    /* the block being filled */
    size_t c;          /* bytes in b */
    size_t outlen;
} B2;

static const uint64_t B2_IV[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL, 0xA54FF53A5F1D36F1ULL,
    0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL, 0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL,
};

static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t load64(const uint8_t *p) { /* little-endian, whatever the host */
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24)
           | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline uint64_t rotr64(uint64_t x, unsigned n) { return (x >> n) | (x << (64 - n)); }

#define B2_G(a, b, c, d, x, y)            \
    do {                                  \
        a = a + b + (x);                  \
        d = rotr64(d ^ a, 32);            \
        c = c + d;                        \
        b = rotr64(b ^ c, 24);            \
        a = a + b + (y);                  \
        d = rotr64(d ^ a, 16);            \
        c = c + d;                        \
        b = rotr64(b ^ c, 63);            \
    } while (0)

static void b2_compress(B2 *s, const uint8_t *block, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = B2_IV[i];
    }
    v[12] ^= s->t0;
    v[13] ^= s->t1;
    if (last)
        v[14] = ~v[14];
#define B2_ROUND(r)                                                      \
    do {                                                                 \
        B2_G(v[0], v[4], v[8], v[12], m[B2_SIGMA[r][0]], m[B2_SIGMA[r][1]]);   \
        B2_G(v[1], v[5], v[9], v[13], m[B2_SIGMA[r][2]], m[B2_SIGMA[r][3]]);   \
        B2_G(v[2], v[6], v[10], v[14], m[B2_SIGMA[r][4]], m[B2_SIGMA[r][5]]);  \
        B2_G(v[3], v[7], v[11], v[15], m[B2_SIGMA[r][6]], m[B2_SIGMA[r][7]]);  \
        B2_G(v[0], v[5], v[10], v[15], m[B2_SIGMA[r][8]], m[B2_SIGMA[r][9]]);  \
        B2_G(v[1], v[6], v[11], v[12], m[B2_SIGMA[r][10]], m[B2_SIGMA[r][11]]); \
        B2_G(v[2], v[7], v[8], v[13], m[B2_SIGMA[r][12]], m[B2_SIGMA[r][13]]);  \
        B2_G(v[3], v[4], v[9], v[14], m[B2_SIGMA[r][14]], m[B2_SIGMA[r][15]]);  \
    } while (0)
    /* (unrolled: the message indexes are constants, so the words stay in registers) */
    B2_ROUND(0);
    B2_ROUND(1);
    B2_ROUND(2);
    B2_ROUND(3);
    B2_ROUND(4);
    B2_ROUND(5);
    B2_ROUND(6);
    B2_ROUND(7);
    B2_ROUND(8);
    B2_ROUND(9);
    B2_ROUND(10);
    B2_ROUND(11);
#undef B2_ROUND
    for (int i = 0; i < 8; i++)
        s->h[i] ^= v[i] ^ v[i + 8];
}

static void b2_init(B2 *s, size_t outlen) {
    memcpy(s->h, B2_IV, sizeof s->h);
    s->h[0] ^= 0x01010000ULL ^ (uint64_t)outlen; /* depth 1, fanout 1, no key */
    s->t0 = s->t1 = 0;
    s->c = 0;
    s->outlen = outlen;
}

static inline void b2_count(B2 *s, size_t n) {
    s->t0 += n;
    if (s->t0 < n)
        s->t1++;
}

static void b2_update(B2 *s, const uint8_t *in, size_t n) {
    /* a full block is compressed only once more input follows (the last one is final) */
    while (n > 0) {
        if (s->c == 128) {
            b2_count(s, 128);
            b2_compress(s, s->b, 0);
            s->c = 0;
        }
        if (s->c == 0) {
            while (n > 128) { /* whole blocks straight from the input */
                b2_count(s, 128);
                b2_compress(s, in, 0);
                in += 128;
                n -= 128;
            }
        }
        size_t take = 128 - s->c;
        if (take > n)
            take = n;
        memcpy(s->b + s->c, in, take);
        s->c += take;
        in += take;
        n -= take;
    }
}

static void b2_final(B2 *s, uint8_t *out) {
    b2_count(s, s->c);
    memset(s->b + s->c, 0, 128 - s->c);
    b2_compress(s, s->b, 1);
    for (size_t i = 0; i < s->outlen; i++)
        out[i] = (uint8_t)(s->h[i / 8] >> (8 * (i % 8)));
}

#define DIGEST 16

/* new reference: the 16-byte digest of n bytes at p */
static PyObject *digest_of(const void *p, size_t n) {
    B2 s;
    uint8_t out[DIGEST];
    b2_init(&s, DIGEST);
    b2_update(&s, (const uint8_t *)p, n);
    b2_final(&s, out);
    return PyBytes_FromStringAndSize((const char *)out, DIGEST);
}

/* new reference: the digest of a bytes-like object, or NULL with an exception */
static PyObject *digest_obj(PyObject *o) {
    if (PyBytes_Check(o)) /* (bytes and its subclasses, e.g. _chandles.Packed: no buffer call) */
        return digest_of(PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *d = digest_of(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return d;
}

static PyObject *blake16(PyObject *mod, PyObject *data) {
    (void)mod;
    return digest_obj(data);
}

/* new reference: the digest fallback(arg) returned (checked to be bytes) */
static PyObject *call_fallback(PyObject *fallback, PyObject *arg) {
    PyObject *d = PyObject_CallOneArg(fallback, arg);
    if (d != NULL && !PyBytes_Check(d)) {
        PyErr_Format(PyExc_TypeError, "the digest fallback returned %.100s, not bytes", Py_TYPE(d)->tp_name);
        Py_CLEAR(d);
    }
    return d;
}

static PyObject *digests(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    (void)mod;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "digests(blobs, rows, fallback) takes 3 arguments");
        return NULL;
    }
    PyObject *blobs = args[0], *rows = args[1], *fallback = args[2];
    if (!PyList_CheckExact(blobs) || !PyList_CheckExact(rows) || PyList_GET_SIZE(blobs) != PyList_GET_SIZE(rows)) {
        PyErr_SetString(PyExc_TypeError, "digests: blobs and rows must be lists of one length");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(blobs);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* (the fallback may run Python code that changes the lists: take fresh items) */
        if (i >= PyList_GET_SIZE(blobs) || i >= PyList_GET_SIZE(rows)) {
            PyErr_SetString(PyExc_RuntimeError, "digests: the lists changed size");
            Py_DECREF(out);
            return NULL;
        }
        PyObject *b = PyList_GET_ITEM(blobs, i), *d;
        if (b == Py_None) {
            PyObject *row = PyList_GET_ITEM(rows, i);
            Py_INCREF(row);
            d = call_fallback(fallback, row);
            Py_DECREF(row);
        } else {
            d = digest_obj(b);
        }
        if (d == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, d);
    }
    return out;
}

/* ---- output digests ---------------------------------------------------------------- */

#define MAX_OUTPUTS 16

static PyObject *S_DTYPE; /* "dtype", interned at import */

/* 1: hashed into *s; 0: not the planned shape (nothing to undo); -1: an exception */
static int hash_planned(B2 *s, PyObject *o, Py_ssize_t n, PyObject *keys, PyObject *heads, PyObject *types,
                        PyObject *dtypes, PyObject *shapes) {
    if (!PyDict_CheckExact(o) || PyDict_GET_SIZE(o) != n)
        return 0;
    Py_buffer views[MAX_OUTPUTS];
    Py_ssize_t held = 0;
    int r = 1;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *v = PyDict_GetItemWithError(o, PyTuple_GET_ITEM(keys, j)); /* borrowed */
        if (v == NULL) {
            r = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
        if ((PyObject *)Py_TYPE(v) != PyTuple_GET_ITEM(types, j)) {
            r = 0;
            goto done;
        }
        /* (getattr may run Python code; the value is kept alive meanwhile) */
        Py_INCREF(v);
        PyObject *dt = PyObject_GetAttr(v, S_DTYPE);
        if (dt == NULL) {
            Py_DECREF(v);
            r = -1;
            goto done;
        }
        int same = dt == PyTuple_GET_ITEM(dtypes, j);
        Py_DECREF(dt);
        /* PyBUF_ND: the shape too, and only a C-contiguous value (what tobytes() copies) */
        if (!same || PyObject_GetBuffer(v, &views[held], PyBUF_ND) < 0) {
            Py_DECREF(v);
            if (PyErr_Occurred()) { /* (not one flat block: the fallback joins its tobytes()) */
                if (!PyErr_ExceptionMatches(PyExc_BufferError) && !PyErr_ExceptionMatches(PyExc_TypeError)
                    && !PyErr_ExceptionMatches(PyExc_ValueError)) {
                    r = -1;
                    goto done;
                }
                PyErr_Clear();
            }
            r = 0;
            goto done;
        }
        held++;
        Py_buffer *view = &views[held - 1];
        PyObject *shape = PyTuple_GET_ITEM(shapes, j);
        same = view->ndim == PyTuple_GET_SIZE(shape) && (view->ndim == 0 || view->shape != NULL);
        for (Py_ssize_t k = 0; same && k < view->ndim; k++) {
            PyObject *dim = PyTuple_GET_ITEM(shape, k);
            same = PyLong_CheckExact(dim) && PyLong_AsSsize_t(dim) == view->shape[k];
            if (PyErr_Occurred()) { /* (a dimension beyond Py_ssize_t: not this buffer's) */
                PyErr_Clear();
                same = 0;
            }
        }
        if (!same) { /* (another shape: off the plan) */
            Py_DECREF(v);
            r = 0;
            goto done;
        }
        Py_DECREF(v); /* (the buffer view holds its own reference) */
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *head = PyTuple_GET_ITEM(heads, j);
        b2_update(s, (const uint8_t *)PyBytes_AS_STRING(head), (size_t)PyBytes_GET_SIZE(head));
        b2_update(s, (const uint8_t *)views[j].buf, (size_t)views[j].len);
    }
done:
    for (Py_ssize_t j = 0; j < held; j++)
        PyBuffer_Release(&views[j]);
    return r;
}

/* 0, or -1 with an exception: the plan's five tuples, of one length, heads bytes, shapes tuples */
static int check_plan(PyObject *keys, PyObject *heads, PyObject *types, PyObject *dtypes, PyObject *shapes) {
    if (!PyTuple_CheckExact(keys) || !PyTuple_CheckExact(heads) || !PyTuple_CheckExact(types)
        || !PyTuple_CheckExact(dtypes) || !PyTuple_CheckExact(shapes)) {
        PyErr_SetString(PyExc_TypeError, "the output plan must be five tuples");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    if (n < 1 || n > MAX_OUTPUTS || PyTuple_GET_SIZE(heads) != n || PyTuple_GET_SIZE(types) != n
        || PyTuple_GET_SIZE(dtypes) != n || PyTuple_GET_SIZE(shapes) != n) {
        PyErr_Format(PyExc_ValueError, "the output plan needs 1 to %d outputs, each with a key, head, type, dtype "
                     "and shape", MAX_OUTPUTS);
        return -1;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(heads, j)) || !PyTuple_CheckExact(PyTuple_GET_ITEM(shapes, j))) {
            PyErr_SetString(PyExc_TypeError, "the output plan's heads must be bytes and its shapes tuples");
            return -1;
        }
    }
    return 0;
}

static PyObject *output_digests(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    (void)mod;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "output_digests(outputs, keys, heads, types, dtypes, shapes, fallback) takes 7 arguments");
        return NULL;
    }
    PyObject *outputs = args[0], *keys = args[1], *heads = args[2], *types = args[3], *dtypes = args[4],
             *shapes = args[5], *fallback = args[6];
    if (!PyList_CheckExact(outputs)) {
        PyErr_SetString(PyExc_TypeError, "output_digests: outputs must be a list");
        return NULL;
    }
    if (check_plan(keys, heads, types, dtypes, shapes) < 0)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    Py_ssize_t count = PyList_GET_SIZE(outputs);
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i >= PyList_GET_SIZE(outputs)) {
            PyErr_SetString(PyExc_RuntimeError, "output_digests: the list changed size");
            Py_DECREF(out);
            return NULL;
        }
        PyObject *o = PyList_GET_ITEM(outputs, i), *d;
        Py_INCREF(o);
        B2 s;
        b2_init(&s, DIGEST);
        int r = hash_planned(&s, o, n, keys, heads, types, dtypes, shapes);
        if (r > 0) {
            uint8_t digest[DIGEST];
            b2_final(&s, digest);
            d = PyBytes_FromStringAndSize((const char *)digest, DIGEST);
        } else if (r == 0) {
            d = call_fallback(fallback, o);
        } else {
            d = NULL;
        }
        Py_DECREF(o);
        if (d == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, d);
    }
    return out;
}

/* ---- prediction rows ----------------------------------------------------------------
 *
 * pack_predictions(records, start, stop, run, dins, douts) -> (end, bytes): the msgpack
 * rows [1, "P", spec id, base id, time, key, delta, strong, din, dout, stale, batch] of
 * records[start:end], back to back, where end <= stop is the first record that is not of
 * the run (its spec or context object is another) or that this code was not written for
 * (the reference, inference/encoder.py's pack_run, packs that one). run is the
 * tuple (spec, context, head, delta_packed, strong_fields, ...): head is the packed array
 * header and first four items, delta_packed the packed delta rows (items after the
 * fifth are the reference's).
 */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char small[4096];
} Out;

static int out_room(Out *o, Py_ssize_t n) {
    if (o->len + n <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap * 2;
    while (cap < o->len + n)
        cap *= 2;
    char *b = PyMem_Malloc((size_t)cap);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(b, o->buf, (size_t)o->len);
    if (o->buf != o->small)
        PyMem_Free(o->buf);
    o->buf = b;
    o->cap = cap;
    return 0;
}

static inline int out_bytes(Out *o, const void *p, Py_ssize_t n) {
    if (out_room(o, n) < 0)
        return -1;
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
    return 0;
}

/* a tag then v big-endian in width bytes (msgpack's fixed-width forms) */
static inline int out_head(Out *o, unsigned char tag, unsigned long long v, int width) {
    if (out_room(o, 1 + width) < 0)
        return -1;
    unsigned char *p = (unsigned char *)o->buf + o->len;
    p[0] = tag;
    for (int k = 0; k < width; k++)
        p[1 + k] = (unsigned char)(v >> (8 * (width - 1 - k)));
    o->len += 1 + width;
    return 0;
}

static int out_int(Out *o, long long v) { /* msgpack's smallest form, as msgpack-python packs an int */
    if (v >= 0) {
        if (v < 128)
            return out_head(o, (unsigned char)v, 0, 0);
        if (v < 256)
            return out_head(o, 0xcc, (unsigned long long)v, 1);
        if (v < 65536)
            return out_head(o, 0xcd, (unsigned long long)v, 2);
        if (v < 4294967296LL)
            return out_head(o, 0xce, (unsigned long long)v, 4);
        return out_head(o, 0xcf, (unsigned long long)v, 8);
    }
    if (v >= -32)
        return out_head(o, (unsigned char)(0xe0 | (v + 32)), 0, 0);
    if (v >= -128)
        return out_head(o, 0xd0, (unsigned long long)v & 0xff, 1);
    if (v >= -32768)
        return out_head(o, 0xd1, (unsigned long long)v & 0xffff, 2);
    if (v >= -2147483648LL)
        return out_head(o, 0xd2, (unsigned long long)v & 0xffffffffULL, 4);
    return out_head(o, 0xd3, (unsigned long long)v, 8);
}

/* 1: packed; 0: not an exact int within 64 bits (nothing written); -1: error */
static int put_int(Out *o, PyObject *x) {
    if (!PyLong_CheckExact(x))
        return 0;
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
        return out_head(o, 0xcf, u, 8) < 0 ? -1 : 1;
    }
    return out_int(o, v) < 0 ? -1 : 1;
}

static int put_str(Out *o, PyObject *x) {
    if (!PyUnicode_CheckExact(x))
        return 0;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(x, &n);
    if (s == NULL) {
        PyErr_Clear(); /* (a lone surrogate: the reference raises msgpack's error) */
        return 0;
    }
    int r = n < 32 ? out_head(o, (unsigned char)(0xa0 | n), 0, 0)
          : n < 256 ? out_head(o, 0xd9, (unsigned long long)n, 1)
          : n < 65536 ? out_head(o, 0xda, (unsigned long long)n, 2)
          : n <= 0xffffffffLL ? out_head(o, 0xdb, (unsigned long long)n, 4) : -2;
    if (r == -2)
        return 0;
    return r < 0 || out_bytes(o, s, n) < 0 ? -1 : 1;
}

static int put_bin(Out *o, PyObject *x) {
    if (!PyBytes_CheckExact(x))
        return 0;
    Py_ssize_t n = PyBytes_GET_SIZE(x);
    int r = n < 256 ? out_head(o, 0xc4, (unsigned long long)n, 1)
          : n < 65536 ? out_head(o, 0xc5, (unsigned long long)n, 2)
          : n <= 0xffffffffLL ? out_head(o, 0xc6, (unsigned long long)n, 4) : -2;
    if (r == -2)
        return 0;
    return r < 0 || out_bytes(o, PyBytes_AS_STRING(x), n) < 0 ? -1 : 1;
}

/* None or an int (int(stale) of a float within 64 bits, as the reference packs it) */
static int put_stale(Out *o, PyObject *x) {
    if (x == Py_None)
        return out_head(o, 0xc0, 0, 0) < 0 ? -1 : 1;
    if (PyFloat_CheckExact(x)) {
        double d = PyFloat_AS_DOUBLE(x);
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
            return 0; /* (nan, inf, beyond 64 bits) */
        return out_int(o, (long long)d) < 0 ? -1 : 1; /* (truncation toward zero, as int()) */
    }
    return put_int(o, x);
}

static int put_batch(Out *o, PyObject *x) {
    if (x == Py_None)
        return out_head(o, 0xc0, 0, 0) < 0 ? -1 : 1;
    if (!PyTuple_CheckExact(x) || PyTuple_GET_SIZE(x) != 3)
        return 0;
    if (out_head(o, 0x93, 0, 0) < 0)
        return -1;
    for (int k = 0; k < 3; k++) {
        int r = put_int(o, PyTuple_GET_ITEM(x, k));
        if (r <= 0)
            return r;
    }
    return 1;
}

static int put_strong(Out *o, PyObject *positions, PyObject *fields) {
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    if (n == 0)
        return out_head(o, 0x90, 0, 0) < 0 ? -1 : 1;
    if (n > 15 || !PyDict_CheckExact(positions))
        return 0;
    if (out_head(o, (unsigned char)(0x90 | n), 0, 0) < 0)
        return -1;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = PyDict_GetItemWithError(positions, PyTuple_GET_ITEM(fields, k)); /* borrowed */
        if (v == NULL && PyErr_Occurred())
            return -1;
        if (v == NULL || v == Py_None) { /* (.get(): a field without a position is None) */
            if (out_head(o, 0xc0, 0, 0) < 0)
                return -1;
            continue;
        }
        int r = put_int(o, v);
        if (r <= 0)
            return r;
    }
    return 1;
}

static PyObject *S_SPEC, *S_CONTEXT, *S_TIME, *S_KEY, *S_STRONG, *S_STALE, *S_BATCH;

/* 1: the row of rec packed; 0: not of the run, or not a row this code packs (nothing
   kept: the caller cuts o back); -1: an exception */
static int pack_one(Out *o, PyObject *rec, PyObject *spec, PyObject *ctx, PyObject *head, PyObject *delta,
                    PyObject *strong_fields, PyObject *din, PyObject *dout) {
    PyObject *v = PyObject_GetAttr(rec, S_SPEC);
    if (v == NULL)
        return -1;
    int same = v == spec;
    Py_DECREF(v);
    if (!same)
        return 0;
    v = PyObject_GetAttr(rec, S_CONTEXT);
    if (v == NULL)
        return -1;
    same = v == ctx;
    Py_DECREF(v);
    if (!same)
        return 0;
    if (out_bytes(o, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head)) < 0)
        return -1;
    PyObject *attrs[2] = {S_TIME, S_KEY};
    for (int k = 0; k < 2; k++) {
        v = PyObject_GetAttr(rec, attrs[k]);
        if (v == NULL)
            return -1;
        int r = k == 0 ? put_int(o, v) : put_str(o, v);
        Py_DECREF(v);
        if (r <= 0)
            return r;
    }
    if (out_bytes(o, PyBytes_AS_STRING(delta), PyBytes_GET_SIZE(delta)) < 0)
        return -1;
    int r;
    if (PyTuple_GET_SIZE(strong_fields) == 0) {
        r = put_strong(o, NULL, strong_fields);
    } else {
        v = PyObject_GetAttr(rec, S_STRONG);
        if (v == NULL)
            return -1;
        r = put_strong(o, v, strong_fields);
        Py_DECREF(v);
    }
    if (r <= 0)
        return r;
    if ((r = put_bin(o, din)) <= 0 || (r = put_bin(o, dout)) <= 0)
        return r;
    v = PyObject_GetAttr(rec, S_STALE);
    if (v == NULL)
        return -1;
    r = put_stale(o, v);
    Py_DECREF(v);
    if (r <= 0)
        return r;
    v = PyObject_GetAttr(rec, S_BATCH);
    if (v == NULL)
        return -1;
    r = put_batch(o, v);
    Py_DECREF(v);
    return r;
}

static PyObject *pack_predictions(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    (void)mod;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "pack_predictions(records, start, stop, run, dins, douts) takes 6 arguments");
        return NULL;
    }
    PyObject *records = args[0], *run = args[3], *dins = args[4], *douts = args[5];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || stop == -1) && PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(records) || !PyList_CheckExact(dins) || !PyList_CheckExact(douts)
        || PyList_GET_SIZE(dins) != PyList_GET_SIZE(records) || PyList_GET_SIZE(douts) != PyList_GET_SIZE(records)) {
        PyErr_SetString(PyExc_TypeError, "pack_predictions: records, dins and douts must be lists of one length");
        return NULL;
    }
    if (!PyTuple_CheckExact(run) || PyTuple_GET_SIZE(run) < 5 || !PyBytes_CheckExact(PyTuple_GET_ITEM(run, 2))
        || !PyBytes_CheckExact(PyTuple_GET_ITEM(run, 3)) || !PyTuple_CheckExact(PyTuple_GET_ITEM(run, 4))) {
        PyErr_SetString(PyExc_TypeError, "pack_predictions: run must be (spec, context, head bytes, delta bytes, "
                        "strong fields tuple, ...)");
        return NULL;
    }
    if (start < 0 || stop < start || stop > PyList_GET_SIZE(records)) {
        PyErr_SetString(PyExc_ValueError, "pack_predictions: need 0 <= start <= stop <= len(records)");
        return NULL;
    }
    /* (run holds references to everything borrowed below) */
    PyObject *spec = PyTuple_GET_ITEM(run, 0), *ctx = PyTuple_GET_ITEM(run, 1), *head = PyTuple_GET_ITEM(run, 2),
             *delta = PyTuple_GET_ITEM(run, 3), *strong_fields = PyTuple_GET_ITEM(run, 4);
    Out o;
    o.buf = o.small;
    o.len = 0;
    o.cap = sizeof o.small;
    Py_ssize_t i = start;
    PyObject *result = NULL;
    for (; i < stop; i++) {
        if (i >= PyList_GET_SIZE(records) || i >= PyList_GET_SIZE(dins) || i >= PyList_GET_SIZE(douts))
            break; /* (a getattr ran code that shrank a list: stop here, the reference goes on) */
        PyObject *rec = PyList_GET_ITEM(records, i), *din = PyList_GET_ITEM(dins, i), *dout = PyList_GET_ITEM(douts, i);
        Py_INCREF(rec);
        Py_INCREF(din);
        Py_INCREF(dout);
        Py_ssize_t mark = o.len;
        int r = pack_one(&o, rec, spec, ctx, head, delta, strong_fields, din, dout);
        Py_DECREF(rec);
        Py_DECREF(din);
        Py_DECREF(dout);
        if (r < 0)
            goto done;
        if (r == 0) {
            o.len = mark;
            break;
        }
    }
    {
        PyObject *blob = PyBytes_FromStringAndSize(o.buf, o.len);
        if (blob != NULL) {
            result = Py_BuildValue("(nN)", i, blob);
        }
    }
done:
    if (o.buf != o.small)
        PyMem_Free(o.buf);
    return result;
}

/* ---- a flush's digests, from the predictions ------------------------------------------
 *
 * prediction_digests(preds, plan, input_fallback, output_fallback) -> (dins, douts): for
 * each prediction p, p._din, or the digest of p._row packed as msgpack when it is a flat
 * list or tuple of None, bools, floats, ints within 64 bits, str and bytes (exact types;
 * anything else is input_fallback(p._row)); and p._dout, or the digest of p.outputs by
 * plan (keys, heads, types, dtypes, shapes), as output_digests takes it (None, or an
 * output mapping off the plan: output_fallback(p.outputs)). The reference is
 * Prediction.digests_of in inference/predictor.py.
 */

static PyObject *S_ROW, *S_DIN, *S_DOUT, *S_OUTPUTS;

/* 1: packed; 0: not a flat row (o is left as it was); -1: an exception */
static int pack_flat(Out *o, PyObject *row) {
    PyTypeObject *t = Py_TYPE(row);
    if (t != &PyList_Type && t != &PyTuple_Type)
        return 0;
    PyObject *seq = PySequence_Fast(row, ""); /* (a list or tuple: itself) */
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), mark = o->len;
    int r = n < 16 ? out_head(o, (unsigned char)(0x90 | n), 0, 0)
          : n < 65536 ? out_head(o, 0xdc, (unsigned long long)n, 2)
          : out_head(o, 0xdd, (unsigned long long)n, 4);
    r = r < 0 ? -1 : 1;
    /* (packing scalars runs no Python code: the row cannot change meanwhile) */
    for (Py_ssize_t k = 0; r > 0 && k < n; k++) {
        PyObject *x = PySequence_Fast_GET_ITEM(seq, k);
        PyTypeObject *xt = Py_TYPE(x);
        if (xt == &PyFloat_Type) {
            double d = PyFloat_AS_DOUBLE(x);
            unsigned long long u;
            memcpy(&u, &d, 8);
            r = out_head(o, 0xcb, u, 8) < 0 ? -1 : 1;
        } else if (x == Py_None) {
            r = out_head(o, 0xc0, 0, 0) < 0 ? -1 : 1;
        } else if (xt == &PyBool_Type) {
            r = out_head(o, x == Py_True ? 0xc3 : 0xc2, 0, 0) < 0 ? -1 : 1;
        } else if (xt == &PyLong_Type) {
            r = put_int(o, x);
        } else if (xt == &PyUnicode_Type) {
            r = put_str(o, x);
        } else if (xt == &PyBytes_Type) {
            r = put_bin(o, x);
        } else {
            r = 0;
        }
    }
    Py_DECREF(seq);
    if (r == 0)
        o->len = mark;
    return r;
}

/* new reference: the input digest of prediction p */
static PyObject *input_digest_of(PyObject *p, Out *o, PyObject *fallback) {
    PyObject *d = PyObject_GetAttr(p, S_DIN);
    if (d == NULL || d != Py_None)
        return d;
    Py_DECREF(d);
    PyObject *row = PyObject_GetAttr(p, S_ROW);
    if (row == NULL)
        return NULL;
    o->len = 0;
    int r = pack_flat(o, row);
    if (r > 0)
        d = digest_of(o->buf, (size_t)o->len);
    else if (r == 0)
        d = call_fallback(fallback, row);
    else
        d = NULL;
    Py_DECREF(row);
    return d;
}

/* new reference: the output digest of prediction p */
static PyObject *output_digest_of(PyObject *p, PyObject *plan, PyObject *fallback) {
    PyObject *d = PyObject_GetAttr(p, S_DOUT);
    if (d == NULL || d != Py_None)
        return d;
    Py_DECREF(d);
    PyObject *outs = PyObject_GetAttr(p, S_OUTPUTS);
    if (outs == NULL)
        return NULL;
    int r = 0;
    B2 s;
    if (plan != Py_None) {
        b2_init(&s, DIGEST);
        r = hash_planned(&s, outs, PyTuple_GET_SIZE(PyTuple_GET_ITEM(plan, 0)), PyTuple_GET_ITEM(plan, 0),
                         PyTuple_GET_ITEM(plan, 1), PyTuple_GET_ITEM(plan, 2), PyTuple_GET_ITEM(plan, 3),
                         PyTuple_GET_ITEM(plan, 4));
    }
    if (r > 0) {
        uint8_t digest[DIGEST];
        b2_final(&s, digest);
        d = PyBytes_FromStringAndSize((const char *)digest, DIGEST);
    } else if (r == 0) {
        d = call_fallback(fallback, outs);
    } else {
        d = NULL;
    }
    Py_DECREF(outs);
    return d;
}

static PyObject *prediction_digests(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    (void)mod;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "prediction_digests(preds, plan, input_fallback, output_fallback) takes 4 arguments");
        return NULL;
    }
    PyObject *preds = args[0], *plan = args[1], *in_fb = args[2], *out_fb = args[3];
    if (!PyList_CheckExact(preds)) {
        PyErr_SetString(PyExc_TypeError, "prediction_digests: preds must be a list");
        return NULL;
    }
    if (plan != Py_None) {
        if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != 5) {
            PyErr_SetString(PyExc_TypeError, "prediction_digests: plan must be None or (keys, heads, types, dtypes, "
                            "shapes)");
            return NULL;
        }
        if (check_plan(PyTuple_GET_ITEM(plan, 0), PyTuple_GET_ITEM(plan, 1), PyTuple_GET_ITEM(plan, 2),
                       PyTuple_GET_ITEM(plan, 3), PyTuple_GET_ITEM(plan, 4)) < 0)
            return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(preds);
    PyObject *dins = PyList_New(n), *douts = PyList_New(n);
    Out o;
    o.buf = o.small;
    o.len = 0;
    o.cap = sizeof o.small;
    if (dins == NULL || douts == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i >= PyList_GET_SIZE(preds)) {
            PyErr_SetString(PyExc_RuntimeError, "prediction_digests: the list changed size");
            goto error;
        }
        PyObject *p = PyList_GET_ITEM(preds, i);
        Py_INCREF(p);
        PyObject *din = input_digest_of(p, &o, in_fb);
        PyObject *dout = din == NULL ? NULL : output_digest_of(p, plan, out_fb);
        Py_DECREF(p);
        if (din == NULL || dout == NULL) {
            Py_XDECREF(din);
            goto error;
        }
        PyList_SET_ITEM(dins, i, din);
        PyList_SET_ITEM(douts, i, dout);
    }
    if (o.buf != o.small)
        PyMem_Free(o.buf);
    return Py_BuildValue("(NN)", dins, douts);
error:
    if (o.buf != o.small)
        PyMem_Free(o.buf);
    Py_XDECREF(dins);
    Py_XDECREF(douts);
    return NULL;
}

/* ---- queued predictions and the garbage collector ---------------------------------------
 *
 * A prediction waiting in a lineage log's queue is alive (the queue holds it), so the
 * cyclic garbage collector has nothing to find in it; yet thousands of them, each with
 * its row, make every collection traverse them and promote them into the old
 * generation, whose growth then triggers full collections (the replica's whole state).
 * hold(p) untracks a prediction and its row list while it waits; track(preds) tracks
 * the predictions again when a flush takes them (inference/predictor.py). The
 * row list stays untracked: only the prediction refers to it, it is never changed, and
 * its items are values read from the replica, so it can never be part of a cycle.
 */

static PyObject *hold(PyObject *mod, PyObject *p) {
    (void)mod;
    if (PyObject_IS_GC(p) && PyObject_GC_IsTracked(p)) {
        PyObject *row = PyObject_GetAttr(p, S_ROW);
        if (row == NULL)
            return NULL;
        if (PyList_CheckExact(row) && PyObject_GC_IsTracked(row))
            PyObject_GC_UnTrack(row);
        Py_DECREF(row);
        PyObject_GC_UnTrack(p);
    }
    Py_RETURN_NONE;
}

static PyObject *track(PyObject *mod, PyObject *preds) {
    (void)mod;
    if (!PyList_CheckExact(preds)) {
        PyErr_SetString(PyExc_TypeError, "track: preds must be a list");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(preds); i++) {
        PyObject *p = PyList_GET_ITEM(preds, i);
        if (PyObject_IS_GC(p) && !PyObject_GC_IsTracked(p))
            PyObject_GC_Track(p);
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"blake16", blake16, METH_O, "blake16(data): hashlib.blake2b(data, digest_size=16).digest()"},
    {"digests", (PyCFunction)(void (*)(void))digests, METH_FASTCALL,
     "digests(blobs, rows, fallback): the 16-byte BLAKE2b of each blob; fallback(rows[i]) where blobs[i] is None"},
    {"output_digests", (PyCFunction)(void (*)(void))output_digests, METH_FASTCALL,
     "output_digests(outputs, keys, heads, types, dtypes, shapes, fallback): per output mapping, the digest of "
     "its planned heads and values' memory, or fallback(o) when it does not fit the plan"},
    {"prediction_digests", (PyCFunction)(void (*)(void))prediction_digests, METH_FASTCALL,
     "prediction_digests(preds, plan, input_fallback, output_fallback): (input digests, output digests) of "
     "predictions (their _din/_dout when taken, else from their _row and outputs)"},
    {"hold", hold, METH_O, "hold(prediction): untrack a queued prediction and its row list (see track)"},
    {"track", track, METH_O, "track(predictions): track held predictions again (their rows stay untracked)"},
    {"pack_predictions", (PyCFunction)(void (*)(void))pack_predictions, METH_FASTCALL,
     "pack_predictions(records, start, stop, run, dins, douts): (end, the packed prediction rows of "
     "records[start:end]), end being where the run ends or a record this code does not pack"},
    {NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "crdtsync._clineage",
    "The digests of a lineage flush in C (reference: inference/digests.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__clineage(void) {
    S_DTYPE = PyUnicode_InternFromString("dtype");
    S_ROW = PyUnicode_InternFromString("_row");
    S_DIN = PyUnicode_InternFromString("_din");
    S_DOUT = PyUnicode_InternFromString("_dout");
    S_OUTPUTS = PyUnicode_InternFromString("outputs");
    S_SPEC = PyUnicode_InternFromString("spec");
    S_CONTEXT = PyUnicode_InternFromString("context");
    S_TIME = PyUnicode_InternFromString("time");
    S_KEY = PyUnicode_InternFromString("key");
    S_STRONG = PyUnicode_InternFromString("strong_positions");
    S_STALE = PyUnicode_InternFromString("staleness_ms");
    S_BATCH = PyUnicode_InternFromString("batch");
    if (!S_DTYPE || !S_ROW || !S_DIN || !S_DOUT || !S_OUTPUTS || !S_SPEC || !S_CONTEXT || !S_TIME || !S_KEY || !S_STRONG || !S_STALE || !S_BATCH)
        return NULL;
    return PyModule_Create(&moduledef);
}
