/* crdtsync._clineage: the digests of a lineage flush, in C.
 *
 * The reference is crdtsync/inference/digests.py: `input_digests` and `output_digests`
 * there call these functions when the extension is loaded and run their own Python
 * otherwise; tests/inference/test_clineage.py drives both with the same random and
 * hostile inputs and asserts identical digests (or the same exception).
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
 *                                    dtypes (identity) and shapes (==) and export a
 *                                    simple buffer (C-contiguous), the digest of
 *                                    heads[0] + buffer(o[keys[0]]) + heads[1] + ...;
 *                                    anything else is fallback(o)
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
        PyObject *dt = PyObject_GetAttrString(v, "dtype");
        if (dt == NULL) {
            Py_DECREF(v);
            r = -1;
            goto done;
        }
        int same = dt == PyTuple_GET_ITEM(dtypes, j);
        Py_DECREF(dt);
        if (same) {
            PyObject *shape = PyObject_GetAttrString(v, "shape");
            if (shape == NULL) {
                Py_DECREF(v);
                r = -1;
                goto done;
            }
            same = PyObject_RichCompareBool(shape, PyTuple_GET_ITEM(shapes, j), Py_EQ);
            Py_DECREF(shape);
            if (same < 0) {
                Py_DECREF(v);
                r = -1;
                goto done;
            }
        }
        if (!same || PyObject_GetBuffer(v, &views[held], PyBUF_SIMPLE) < 0) {
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
        Py_DECREF(v); /* (the buffer view holds its own reference) */
        held++;
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

static PyObject *output_digests(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    (void)mod;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "output_digests(outputs, keys, heads, types, dtypes, shapes, fallback) takes 7 arguments");
        return NULL;
    }
    PyObject *outputs = args[0], *keys = args[1], *heads = args[2], *types = args[3], *dtypes = args[4],
             *shapes = args[5], *fallback = args[6];
    if (!PyList_CheckExact(outputs) || !PyTuple_CheckExact(keys) || !PyTuple_CheckExact(heads)
        || !PyTuple_CheckExact(types) || !PyTuple_CheckExact(dtypes) || !PyTuple_CheckExact(shapes)) {
        PyErr_SetString(PyExc_TypeError, "output_digests: outputs must be a list and the plan tuples");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    if (n < 1 || n > MAX_OUTPUTS || PyTuple_GET_SIZE(heads) != n || PyTuple_GET_SIZE(types) != n
        || PyTuple_GET_SIZE(dtypes) != n || PyTuple_GET_SIZE(shapes) != n) {
        PyErr_Format(PyExc_ValueError, "output_digests: the plan needs 1 to %d outputs, each with a key, head, "
                     "type, dtype and shape", MAX_OUTPUTS);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(heads, j))) {
            PyErr_SetString(PyExc_TypeError, "output_digests: heads must be bytes");
            return NULL;
        }
    }
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

static PyMethodDef module_methods[] = {
    {"blake16", blake16, METH_O, "blake16(data): hashlib.blake2b(data, digest_size=16).digest()"},
    {"digests", (PyCFunction)(void (*)(void))digests, METH_FASTCALL,
     "digests(blobs, rows, fallback): the 16-byte BLAKE2b of each blob; fallback(rows[i]) where blobs[i] is None"},
    {"output_digests", (PyCFunction)(void (*)(void))output_digests, METH_FASTCALL,
     "output_digests(outputs, keys, heads, types, dtypes, shapes, fallback): per output mapping, the digest of "
     "its planned heads and values' memory, or fallback(o) when it does not fit the plan"},
    {NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "crdtsync._clineage",
    "The digests of a lineage flush in C (reference: crdtsync/inference/digests.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__clineage(void) {
    return PyModule_Create(&moduledef);
}
