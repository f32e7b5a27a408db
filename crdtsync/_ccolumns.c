/* crdtsync._ccolumns: the column loops of crdtsync/_hot.py, in C.
 *
 * The reference is crdtsync/_hot.py itself: every function here has the same name,
 * arguments and result as the one there, and tests/test_speedups.py drives both with
 * random and hostile inputs (bools where ints go, ints at and beyond the 64-bit bounds,
 * floats, None, str subclasses, long keys, empty columns) and asserts the same results,
 * errors and effects. Each function runs in C only the common case it was written for
 * (exact lists and dicts, exact ints within the 64-bit range where a loop does
 * arithmetic); any other input is handed, before anything was changed, to the function
 * of the same name in the reference module, which crdtsync.speedups binds at import
 * (`bind(module)`). So an unusual argument can never make the two disagree: it runs the
 * reference.
 *
 * Rules: no private CPython API; a comparison that is not between two ints of 64 bits
 * goes through PyObject_RichCompareBool (so it raises what the interpreter raises); a
 * loop re-reads list sizes each step and holds references to what it uses, so that code
 * run by a hostile key's __hash__ or __eq__ cannot make it read freed memory.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *REF;      /* the reference module (crdtsync/_hot.py), bound by bind() */
static PyObject *ZERO;     /* 0 */
static PyObject *SIXTY4;   /* 64 */

/* ---- fallback to the reference --------------------------------------------------- */

static PyObject *reference(const char *name, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames) {
    if (REF == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "crdtsync._ccolumns: no reference module bound (crdtsync.speedups binds crdtsync/_hot.py)");
        return NULL;
    }
    PyObject *f = PyObject_GetAttrString(REF, name);
    if (f == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(f, args, nargsf, kwnames);
    Py_DECREF(f);
    return r;
}

#define REFERENCE(name) return reference(name, args, nargs, kwnames)
#define WANT_ARGS(name, n)                       \
    do {                                         \
        if (nargs != (n) || kwnames != NULL)     \
            REFERENCE(name);                     \
    } while (0)

/* ---- ints ------------------------------------------------------------------------ */

/* an exact int in [0, 2**64): 1 and *out; else 0 (no exception set) */
static inline int as_u64(PyObject *o, uint64_t *out) {
    if (!PyLong_CheckExact(o))
        return 0;
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(o, &overflow); /* (the fast conversion) */
    if (!overflow) {
        if (small < 0) {
            PyErr_Clear(); /* (-1 may be an error: an exact int raises none) */
            return 0;
        }
        *out = (uint64_t)small;
        return 1;
    }
    if (overflow < 0)
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(o); /* in [2**63, ...) */
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = (uint64_t)v;
    return 1;
}

/* an exact int within int64: 1 and *out; else 0 (no exception set) */
static inline int as_i64(PyObject *o, long long *out) {
    if (!PyLong_CheckExact(o))
        return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow)
        return 0;
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

/* an exact int >= 0 that fits a Py_ssize_t: 1 and *out; else 0 (no exception set) */
static inline int as_index(PyObject *o, Py_ssize_t *out) {
    long long v;
    if (!as_i64(o, &v) || v < 0 || v > PY_SSIZE_T_MAX)
        return 0;
    *out = (Py_ssize_t)v;
    return 1;
}

/* op(a, b) for two objects: natively for two ints of 64 bits, else as Python does;
 * 1, 0, or -1 with an exception */
static inline int compare(PyObject *a, PyObject *b, int op) {
    long long x, y;
    if (as_i64(a, &x) && as_i64(b, &y)) {
        switch (op) {
        case Py_GT: return x > y;
        case Py_LE: return x <= y;
        default: break;
        }
    }
    return PyObject_RichCompareBool(a, b, op);
}

#ifdef __SIZEOF_INT128__
/* an exact int within int128: 1 and *out; else 0 (no exception set) */
static int as_i128(PyObject *o, __int128 *out) {
    long long small;
    if (as_i64(o, &small)) {
        *out = small;
        return 1;
    }
    if (!PyLong_CheckExact(o))
        return 0;
    PyObject *high = PyNumber_Rshift(o, SIXTY4);
    if (high == NULL) {
        PyErr_Clear();
        return 0;
    }
    long long h;
    int ok = as_i64(high, &h);
    Py_DECREF(high);
    if (!ok)
        return 0;
    unsigned long long low = PyLong_AsUnsignedLongLongMask(o);
    if (low == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = (__int128)((((unsigned __int128)(uint64_t)h) << 64) | (unsigned __int128)low);
    return 1;
}
#endif

/* ---- the functions of _hot.py ------------------------------------------------------ */

static PyObject *hlc_steps(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("hlc_steps", 1);
    PyObject *h = args[0];
    if (!PyList_CheckExact(h) && !PyTuple_CheckExact(h))
        REFERENCE("hlc_steps");
    Py_ssize_t n = PySequence_Fast_GET_SIZE(h);
    PyObject **items = PySequence_Fast_ITEMS(h);
    if (n < 2)
        return PyList_New(0);
    uint64_t prev, cur;
    for (Py_ssize_t i = 0; i < n; i++)  /* (no Python code runs in this loop) */
        if (!as_u64(items[i], &cur))
            REFERENCE("hlc_steps");
    PyObject *out = PyList_New(n - 1);
    if (out == NULL)
        return NULL;
    as_u64(items[0], &prev);
    for (Py_ssize_t i = 1; i < n; i++) {
        as_u64(items[i], &cur);
        PyObject *d = PyLong_FromUnsignedLongLong((unsigned long long)(cur - prev)); /* mod 2**64 */
        if (d == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i - 1, d);
        prev = cur;
    }
    return out;
}

static PyObject *keys_ok(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("keys_ok", 2);
    PyObject *keys = args[0];
    long long limit;
    if (!PyList_CheckExact(keys) || !as_i64(args[1], &limit))
        REFERENCE("keys_ok");
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        if (!PyUnicode_CheckExact(k) || (long long)PyUnicode_GET_LENGTH(k) > limit)
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* one stamp step of a format-2 record, as hlc_column and hlc_check judge it: 1 and *v (an
 * int in [0, 2**64)); 0 when it makes the column None (not an exact int, or negative); 2
 * when it is the reference's to add (an int beyond 64 bits); -1 with an exception */
static int step_of(PyObject *s, uint64_t *v) {
    if (!PyLong_CheckExact(s))
        return 0;
    if (as_u64(s, v))
        return 1;
    int neg = PyObject_RichCompareBool(s, ZERO, Py_LT);
    if (neg < 0)
        return -1;
    return neg ? 0 : 2;
}

static PyObject *hlc_column(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("hlc_column", 2);
    uint64_t h;
    PyObject *steps = args[1];
    if (!as_u64(args[0], &h) || !PyList_CheckExact(steps))
        REFERENCE("hlc_column");
    Py_ssize_t m = PyList_GET_SIZE(steps);
    /* first the checks, in the reference's order: the first step that is not an int >= 0
     * gives None; a step beyond 64 bits (before any such) is the reference's to add */
    for (Py_ssize_t i = 0; i < m; i++) {
        uint64_t v;
        int kind = step_of(PyList_GET_ITEM(steps, i), &v);
        if (kind < 0)
            return NULL;
        if (kind == 0)
            Py_RETURN_NONE;
        if (kind == 2)
            REFERENCE("hlc_column");
    }
    PyObject *hlcs = PyList_New(m + 1);
    if (hlcs == NULL)
        return NULL;
    Py_INCREF(args[0]);
    PyList_SET_ITEM(hlcs, 0, args[0]);
    int wrapped = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        uint64_t v;
        as_u64(PyList_GET_ITEM(steps, i), &v);
        uint64_t next = h + v;
        if (next < h)
            wrapped = 1;
        h = next;
        PyObject *x = PyLong_FromUnsignedLongLong((unsigned long long)h);
        if (x == NULL) {
            Py_DECREF(hlcs);
            return NULL;
        }
        PyList_SET_ITEM(hlcs, i + 1, x);
    }
    PyObject *out = PyTuple_New(2);
    if (out == NULL) {
        Py_DECREF(hlcs);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, hlcs);
    PyObject *rising = wrapped ? Py_False : Py_True;
    Py_INCREF(rising);
    PyTuple_SET_ITEM(out, 1, rising);
    return out;
}

static PyObject *hlc_check(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("hlc_check", 2);
    uint64_t h;
    PyObject *steps = args[1];
    if (!as_u64(args[0], &h) || !PyList_CheckExact(steps))
        REFERENCE("hlc_check");
    int wrapped = 0;
    Py_ssize_t m = PyList_GET_SIZE(steps);
    for (Py_ssize_t i = 0; i < m; i++) {  /* (the checks and their order of hlc_column) */
        uint64_t v;
        int kind = step_of(PyList_GET_ITEM(steps, i), &v);
        if (kind < 0)
            return NULL;
        if (kind == 0)
            Py_RETURN_NONE;
        if (kind == 2)
            REFERENCE("hlc_check");
        uint64_t next = h + v;
        if (next < h)
            wrapped = 1;
        h = next;
    }
    PyObject *last = PyLong_FromUnsignedLongLong((unsigned long long)h);
    if (last == NULL)
        return NULL;
    return Py_BuildValue("(NO)", last, wrapped ? Py_False : Py_True);
}

static PyObject *stamped_totals_ok(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("stamped_totals_ok", 2);
    PyObject *payloads = args[0];
    long long limit;
    if (!PyList_CheckExact(payloads) || !as_i64(args[1], &limit))
        REFERENCE("stamped_totals_ok");
    Py_ssize_t n = PyList_GET_SIZE(payloads);
    if (n == 0)
        Py_RETURN_FALSE;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v;
        /* (an int beyond int64 is above a limit within it, or below 1) */
        if (!as_i64(PyList_GET_ITEM(payloads, i), &v) || v < 1 || v > limit)
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyObject *scalar_column(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("scalar_column", 3);
    PyObject *values = args[0], *lo = args[1], *hi = args[2];
#ifdef __SIZEOF_INT128__
    __int128 lo128, hi128;
    if (!PyList_CheckExact(values) || !as_i128(lo, &lo128) || !as_i128(hi, &hi128))
        REFERENCE("scalar_column");
    int out_of_range = 0;
    Py_ssize_t n = PyList_GET_SIZE(values);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        if (PyLong_CheckExact(v)) {
            if (out_of_range)
                continue;
            long long x;
            if (as_i64(v, &x)) {
                if ((__int128)x < lo128 || (__int128)x >= hi128)
                    out_of_range = 1;
            } else {
                int below = PyObject_RichCompareBool(v, lo, Py_LT);
                int above = below ? 0 : PyObject_RichCompareBool(v, hi, Py_GE);
                if (below < 0 || above < 0)
                    return NULL;
                if (below || above)
                    out_of_range = 1;
            }
        } else if (!(PyFloat_CheckExact(v) || PyUnicode_CheckExact(v) || v == Py_None || PyBool_Check(v)
                     || PyBytes_CheckExact(v))) {
            return PyLong_FromLong(0);
        }
    }
    return PyLong_FromLong(out_of_range ? -1 : 1);
#else
    REFERENCE("scalar_column");
#endif
}

/* raise one row: row[actor] = max(row[actor], total) as the reference does it; *generic is
 * set when Python code may have run (a row that is not a dict, a comparison of objects
 * that are not two ints of 64 bits) */
static int raise_row(PyObject *row, PyObject *actor, PyObject *total, int *generic) {
    PyObject *cur;
    int exact = PyDict_CheckExact(row);
    if (exact) {
        cur = PyDict_GetItemWithError(row, actor);
        Py_XINCREF(cur);
    } else {
        *generic = 1;
        cur = PyObject_CallMethod(row, "get", "O", actor);
    }
    if (cur == NULL && PyErr_Occurred())
        return -1;
    int raise = 1;
    if (cur != NULL && cur != Py_None) {
        long long x, y;
        if (as_i64(total, &x) && as_i64(cur, &y)) {
            raise = x > y;
        } else {
            *generic = 1;
            raise = PyObject_RichCompareBool(total, cur, Py_GT);
        }
    }
    Py_XDECREF(cur);
    if (raise <= 0)
        return raise;
    return (exact ? PyDict_SetItem(row, actor, total) : PyObject_SetItem(row, actor, total)) < 0 ? -1 : 0;
}

#define LOOKAHEAD 32

static PyObject *raise_totals(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("raise_totals", 5);
    PyObject *rows = args[0], *keys = args[1], *totals = args[2], *actor = args[4];
    Py_ssize_t start;
    if (!PyDict_CheckExact(rows) || !PyList_CheckExact(keys) || !PyList_CheckExact(totals)
        || !as_index(args[3], &start))
        REFERENCE("raise_totals");
    /* Rows are looked up LOOKAHEAD events ahead (independent lookups overlap in the CPU),
     * while nothing can change them: str keys (their hash and == run no Python code), and
     * no Python code run since (see raise_row); a row missing then is looked up again. */
    int ahead_ok = PyUnicode_CheckExact(actor);
    PyObject *found[LOOKAHEAD];
    Py_ssize_t i = start;
    while (i < PyList_GET_SIZE(keys) && i < PyList_GET_SIZE(totals)) {
        Py_ssize_t end = i + LOOKAHEAD;
        if (end > PyList_GET_SIZE(keys))
            end = PyList_GET_SIZE(keys);
        if (end > PyList_GET_SIZE(totals))
            end = PyList_GET_SIZE(totals);
        Py_ssize_t m = end - i;
        for (Py_ssize_t j = 0; j < m; j++) {
            PyObject *key = PyList_GET_ITEM(keys, i + j);
            found[j] = NULL;
            if (ahead_ok && PyUnicode_CheckExact(key)) {
                found[j] = PyDict_GetItemWithError(rows, key); /* (no error for a str key) */
                Py_XINCREF(found[j]);
            }
        }
        int generic = 0, err = 0;
        Py_ssize_t j = 0;
        for (; j < m && !err; j++) {
            PyObject *key = PyList_GET_ITEM(keys, i + j), *total = PyList_GET_ITEM(totals, i + j);
            Py_INCREF(key);
            Py_INCREF(total);
            if (!PyUnicode_CheckExact(key))
                generic = 1; /* (its hash or == may run Python code) */
            PyObject *row = generic ? NULL : found[j];
            Py_XINCREF(row);
            if (row == NULL) {
                row = PyDict_GetItemWithError(rows, key);
                Py_XINCREF(row);
            }
            if (row == NULL) {
                if (PyErr_Occurred()) {
                    err = 1;
                } else { /* rows[key] = {actor: total} */
                    PyObject *fresh = PyDict_New();
                    err = fresh == NULL || PyDict_SetItem(fresh, actor, total) < 0 || PyDict_SetItem(rows, key, fresh) < 0;
                    Py_XDECREF(fresh);
                }
            } else {
                err = raise_row(row, actor, total, &generic) < 0;
                Py_DECREF(row);
            }
            Py_DECREF(key);
            Py_DECREF(total);
        }
        for (Py_ssize_t q = 0; q < m; q++)
            Py_XDECREF(found[q]);
        if (err)
            return NULL;
        i = end;
        if (generic)
            ahead_ok = 0; /* (from here on, one lookup at a time) */
    }
    Py_RETURN_NONE;
}

static PyObject *strictly_rising(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("strictly_rising", 2);
    PyObject *ts = args[0];
    Py_ssize_t start;
    if (!PyList_CheckExact(ts) || !as_index(args[1], &start))
        REFERENCE("strictly_rising");
    if (start >= PyList_GET_SIZE(ts))
        Py_RETURN_TRUE;
    PyObject *prev = PyList_GET_ITEM(ts, start);
    Py_INCREF(prev);
    for (Py_ssize_t i = start + 1; i < PyList_GET_SIZE(ts); i++) {
        PyObject *cur = PyList_GET_ITEM(ts, i);
        Py_INCREF(cur);
        int le = compare(cur, prev, Py_LE);
        Py_DECREF(prev);
        prev = cur;
        if (le != 0) {
            Py_DECREF(prev);
            if (le < 0)
                return NULL;
            Py_RETURN_FALSE;
        }
    }
    Py_DECREF(prev);
    Py_RETURN_TRUE;
}

static PyObject *overlay_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("overlay_put", 6);
    PyObject *own = args[0], *keys = args[1], *ts = args[2], *values = args[3], *ai = args[5];
    Py_ssize_t start;
    if (!PyDict_CheckExact(own) || !PyList_CheckExact(keys) || !PyList_CheckExact(ts) || !PyList_CheckExact(values)
        || !as_index(args[4], &start))
        REFERENCE("overlay_put");
    for (Py_ssize_t i = start;
         i < PyList_GET_SIZE(keys) && i < PyList_GET_SIZE(ts) && i < PyList_GET_SIZE(values); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        PyObject *entry = PyTuple_Pack(3, PyList_GET_ITEM(ts, i), PyList_GET_ITEM(values, i), ai);
        if (entry == NULL)
            return NULL;
        Py_INCREF(key);
        int err = PyDict_SetItem(own, key, entry);
        Py_DECREF(key);
        Py_DECREF(entry);
        if (err < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}


/* overlay_join(own, rows, names, own_ai, keys, ts, values, start, ai): see crdtsync/_hot.py.
 * Stops (returns its index) wherever the reference stops; any input not of the shapes
 * it reads (not a dict, list or int where one goes) goes to the reference whole. */
static inline int small_stamp(PyObject *o, long long *out) {
    long long v;
    if (!as_i64(o, &v) || v < 0)
        return 0;
    *out = v;
    return 1;
}

static inline int leaf(PyObject *o); /* (below, with the changes' loops) */

static PyObject *overlay_join(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("overlay_join", 9);
    PyObject *own = args[0], *rows = args[1], *names = args[2], *keys = args[4], *ts = args[5], *values = args[6];
    long long own_ai, ai;
    Py_ssize_t start;
    if (!PyDict_CheckExact(own) || !PyDict_CheckExact(rows) || !PyList_CheckExact(names) || !PyList_CheckExact(keys)
        || !PyList_CheckExact(ts) || !PyList_CheckExact(values) || !as_index(args[7], &start)
        || !as_i64(args[3], &own_ai) || !as_i64(args[8], &ai))
        REFERENCE("overlay_join");
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(ts) < n)
        n = PyList_GET_SIZE(ts);
    if (PyList_GET_SIZE(values) < n)
        n = PyList_GET_SIZE(values);
    long long top = -1;
    Py_ssize_t i = start;
    if (ai < 0 || ai >= PyList_GET_SIZE(names) || !PyUnicode_CheckExact(PyList_GET_ITEM(names, ai)))
        goto done;
    PyObject *actor = PyList_GET_ITEM(names, ai);
    Py_INCREF(actor); /* (names may change under a key's __eq__: hold what is compared) */
    PyObject *ai_obj = args[8];
    for (; i < n; i++) {
        /* the list items read may be replaced by a callback of a key comparison: take
         * references to what this iteration uses */
        PyObject *key = PyList_GET_ITEM(keys, i);
        PyObject *t_obj = PyList_GET_ITEM(ts, i);
        long long t, cur_t = -1, cur_ai = ai;
        if (!PyUnicode_CheckExact(key) || !small_stamp(t_obj, &t))
            break;
        Py_INCREF(key);
        Py_INCREF(t_obj);
        PyObject *cur = PyDict_GetItemWithError(own, key); /* (borrowed) */
        int stop = 0, lose = 0;
        if (cur != NULL) {
            Py_INCREF(cur);
            Py_ssize_t len = PyTuple_CheckExact(cur) ? PyTuple_GET_SIZE(cur) : -1;
            if ((len != 2 && len != 3) || !small_stamp(PyTuple_GET_ITEM(cur, 0), &cur_t))
                stop = 1;
            else if (len == 3) {
                if (!as_i64(PyTuple_GET_ITEM(cur, 2), &cur_ai))
                    cur_ai = -1; /* (judged only on a tie, where it stops) */
            } else
                cur_ai = own_ai;
            Py_DECREF(cur);
        } else if (PyErr_Occurred()) {
            Py_DECREF(key);
            Py_DECREF(t_obj);
            Py_DECREF(actor);
            return NULL;
        } else {
            PyObject *row = PyDict_GetItemWithError(rows, key);
            if (row == NULL && PyErr_Occurred()) {
                Py_DECREF(key);
                Py_DECREF(t_obj);
                Py_DECREF(actor);
                return NULL;
            }
            if (row != NULL) {
                if (!PyBytes_CheckExact(row) || PyBytes_GET_SIZE(row) < 11)
                    stop = 1;
                else {
                    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(row);
                    uint64_t u = 0;
                    for (int k = 7; k >= 0; k--)
                        u = (u << 8) | b[k];
                    cur_t = (long long)u;
                    cur_ai = (long long)(b[8] | (b[9] << 8));
                }
            }
        }
        if (!stop && cur_t >= 0) {
            if (t < cur_t)
                lose = 1;
            else if (t == cur_t) {
                if (cur_ai < 0 || cur_ai >= PyList_GET_SIZE(names) || !PyUnicode_CheckExact(PyList_GET_ITEM(names, cur_ai)))
                    stop = 1;
                else {
                    PyObject *cur_a = PyList_GET_ITEM(names, cur_ai);
                    Py_INCREF(cur_a);
                    int lt = PyUnicode_Compare(actor, cur_a);
                    Py_DECREF(cur_a);
                    if (lt == -1 && PyErr_Occurred()) {
                        Py_DECREF(key);
                        Py_DECREF(t_obj);
                        Py_DECREF(actor);
                        return NULL;
                    }
                    if (lt < 0)
                        lose = 1;
                    else if (lt == 0)
                        stop = 1; /* a tie: the values' bytes decide, the general way */
                }
            }
        }
        if (stop) {
            Py_DECREF(key);
            Py_DECREF(t_obj);
            break;
        }
        if (!lose) {
            if (i >= PyList_GET_SIZE(values)) { /* (the list shrank under a comparison) */
                Py_DECREF(key);
                Py_DECREF(t_obj);
                break;
            }
            PyObject *v = PyList_GET_ITEM(values, i);
            PyObject *entry = PyTuple_Pack(3, t_obj, v, ai_obj);
            if (entry != NULL && leaf(v))
                PyObject_GC_UnTrack(entry); /* (a stamp, a leaf and an index: in no cycle; see leaf) */
            int err = entry == NULL || PyDict_SetItem(own, key, entry) < 0;
            Py_XDECREF(entry);
            if (err) {
                Py_DECREF(key);
                Py_DECREF(t_obj);
                Py_DECREF(actor);
                return NULL;
            }
            if (t > top)
                top = t;
        }
        Py_DECREF(key);
        Py_DECREF(t_obj);
        if (n > PyList_GET_SIZE(keys) || n > PyList_GET_SIZE(ts) || n > PyList_GET_SIZE(values))
            n = i + 1; /* (a column shrank under a comparison: stop after this event) */
    }
    Py_DECREF(actor);
done:
    return Py_BuildValue("(nL)", i, top);
}


/* ---- unpack_record: msgpack of the common shapes, with a cache of short keys ------- */

/* What msgpack.unpackb(data, raw=False, use_list=True) returns for a record made only of
 * arrays, ints, nil, bools, floats, str and bin, or None for anything else (a map, an
 * ext type, bad UTF-8, a truncated or over-long record, a nesting deeper than 8): the
 * caller then unpacks it with msgpack, which returns what it returns or raises what it
 * raises. Short ASCII strings come from a cache of str objects (the entity keys of one
 * writer repeat from record to record): equal values, and their hashes are computed once. */

#define KEY_CACHE 4096
#define KEY_CACHE_MAX_LEN 64
static PyObject *key_cache[KEY_CACHE];

typedef struct {
    const unsigned char *p, *end;
} Reader;

static inline int need(Reader *r, Py_ssize_t n) {
    return r->end - r->p >= n;
}

static inline uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static PyObject *short_ascii(const unsigned char *s, Py_ssize_t n) {
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] & 0x80)
            return NULL; /* (not ASCII: the caller decodes it) */
        h = (h ^ s[i]) * 16777619u;
    }
    h ^= (uint32_t)n;
    PyObject **slot = &key_cache[h & (KEY_CACHE - 1)];
    PyObject *c = *slot;
    if (c != NULL && PyUnicode_GET_LENGTH(c) == n && memcmp(PyUnicode_DATA(c), s, (size_t)n) == 0) {
        Py_INCREF(c);
        return c;
    }
    PyObject *u = PyUnicode_New(n, 127);
    if (u == NULL)
        return NULL;
    memcpy(PyUnicode_DATA(u), s, (size_t)n);
    Py_INCREF(u);
    Py_XSETREF(*slot, u);
    return u;
}

static PyObject *read_obj(Reader *r, int depth);

static PyObject *read_array(Reader *r, Py_ssize_t n, int depth) {
    if (depth > 8 || n > r->end - r->p) /* (each element takes a byte at least) */
        return NULL;
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = read_obj(r, depth + 1);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, x);
    }
    return list;
}

static PyObject *read_str(Reader *r, Py_ssize_t n) {
    if (!need(r, n))
        return NULL;
    const unsigned char *s = r->p;
    r->p += n;
    if (n <= KEY_CACHE_MAX_LEN) {
        PyObject *u = short_ascii(s, n);
        if (u != NULL || PyErr_Occurred())
            return u;
    }
    return PyUnicode_DecodeUTF8((const char *)s, n, "strict");
}

static PyObject *read_bin(Reader *r, Py_ssize_t n) {
    if (!need(r, n))
        return NULL;
    PyObject *b = PyBytes_FromStringAndSize((const char *)r->p, n);
    r->p += n;
    return b;
}

static PyObject *read_obj(Reader *r, int depth) {
    if (!need(r, 1))
        return NULL;
    unsigned char t = *r->p++;
    if (t <= 0x7f)
        return PyLong_FromLong(t);
    if (t >= 0xe0)
        return PyLong_FromLong((long)(signed char)t);
    if ((t & 0xe0) == 0xa0)
        return read_str(r, t & 0x1f);
    if ((t & 0xf0) == 0x90)
        return read_array(r, t & 0x0f, depth);
    int size;
    switch (t) {
    case 0xc0: Py_RETURN_NONE;
    case 0xc2: Py_RETURN_FALSE;
    case 0xc3: Py_RETURN_TRUE;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        size = 1 << (t - 0xcc);
        if (!need(r, size))
            return NULL;
        r->p += size;
        return PyLong_FromUnsignedLongLong((unsigned long long)be(r->p - size, size));
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        size = 1 << (t - 0xd0);
        if (!need(r, size))
            return NULL;
        r->p += size;
        uint64_t u = be(r->p - size, size);
        int shift = 64 - 8 * size;
        long long v = shift ? ((long long)(u << shift)) >> shift : (long long)u;
        return PyLong_FromLongLong(v);
    }
    case 0xca: {
        if (!need(r, 4))
            return NULL;
        uint32_t u = (uint32_t)be(r->p, 4);
        r->p += 4;
        float f;
        memcpy(&f, &u, 4);
        return PyFloat_FromDouble((double)f);
    }
    case 0xcb: {
        if (!need(r, 8))
            return NULL;
        uint64_t u = be(r->p, 8);
        r->p += 8;
        double d;
        memcpy(&d, &u, 8);
        return PyFloat_FromDouble(d);
    }
    case 0xd9: case 0xda: case 0xdb:
        size = 1 << (t - 0xd9);
        if (!need(r, size))
            return NULL;
        r->p += size;
        return read_str(r, (Py_ssize_t)be(r->p - size, size));
    case 0xc4: case 0xc5: case 0xc6:
        size = 1 << (t - 0xc4);
        if (!need(r, size))
            return NULL;
        r->p += size;
        return read_bin(r, (Py_ssize_t)be(r->p - size, size));
    case 0xdc: case 0xdd:
        size = t == 0xdc ? 2 : 4;
        if (!need(r, size))
            return NULL;
        r->p += size;
        return read_array(r, (Py_ssize_t)be(r->p - size, size), depth);
    default:
        return NULL; /* a map, an ext type, 0xc1: msgpack's to say */
    }
}

static PyObject *unpack_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("unpack_record", 1);
    if (!PyBytes_CheckExact(args[0]))
        REFERENCE("unpack_record");
    Reader r = {(const unsigned char *)PyBytes_AS_STRING(args[0]),
                (const unsigned char *)PyBytes_AS_STRING(args[0]) + PyBytes_GET_SIZE(args[0])};
    if (!need(&r, 1) || !((*r.p & 0xf0) == 0x90 || *r.p == 0xdc || *r.p == 0xdd))
        Py_RETURN_NONE; /* (a record is an array) */
    PyObject *obj = read_obj(&r, 0);
    if (obj != NULL && r.p == r.end)
        return obj;
    Py_XDECREF(obj); /* (trailing bytes, or something this reader does not take) */
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* ---- what a subscriber of a record is handed: registers, events, changes ----------- */

/* lww_column and one_field_changes build, per event, the objects the reference builds
 * with cls.__new__(cls) plus three attribute sets, and with tuple.__new__: the same
 * allocation (the type's tp_alloc, which zero-fills and tracks the object for the
 * collector) and the same contents, without going through the attribute and argument
 * machinery. Only for classes whose instances that makes exactly; any other class goes
 * to the reference.
 *
 * Ownership: each new object gets the references it holds when it is filled in, right
 * after its tp_alloc and before anything else is allocated (tp_alloc may run a
 * collection, and with it finalizers, i.e. Python code: no half-filled object is ever
 * reachable). The result list is untracked by the collector while it is filled (a
 * finalizer calling gc.get_objects() cannot see its empty items) and tracked at the end.
 * The loops go over the columns as the reference's zip does (each step reads item i of
 * each column as it is then, and stops at the first column that has no item i), and take
 * a reference to what they read before the next tp_alloc: code run by a finalizer that
 * shortens or extends a column gets what it gets from the reference, never a read of
 * freed memory. The result is allocated at the columns' length first (put_at extends or
 * trims it when a column changed). */

#ifdef Py_T_OBJECT_EX /* (3.12+: descrobject.h) */
#define SLOT_OBJECT_EX Py_T_OBJECT_EX
#define SLOT_READONLY Py_READONLY
#else
#include <structmember.h>
#define SLOT_OBJECT_EX T_OBJECT_EX
#define SLOT_READONLY READONLY
#endif

static PyObject *S_TS, *S_ACTOR, *S_VALUE, *S_NEW; /* "_ts", "_actor", "_value", "__new__" */

/* Whether an object is a leaf for the cyclic garbage collector: of a type it does not
 * manage (ints, str, floats, bytes, None, bools, _chandles.Packed), or one it does not
 * track and that does not start being tracked of itself (CPython re-tracks an exact dict
 * it had untracked once a container goes in; a tuple, the other type it untracks, cannot
 * change, and nothing else is untracked but by the code that made it, as the objects
 * below are). An object holding only leaves, and never changed after it is made, can be
 * in no reference cycle: the registers, events and changes made here are untracked when
 * all they hold are leaves, which CPython does itself for tuples at their first
 * collection. Not scanning them is what it saves: a subscriber's changes of a record are
 * 3 objects per event, and when they outlive a collection (kept by the subscriber, or
 * because the collector runs mid-record) each collection walks them. Registers and
 * events are immutable values (nothing in crdtsync sets an attribute of one after it is
 * made); one changed by force to hold a container that refers back to it would make a
 * cycle the collector cannot free: a leak, never a crash (untracked objects are freed
 * by their reference counts as any other). */
static inline int leaf(PyObject *o) {
    if (!PyType_IS_GC(Py_TYPE(o))) /* (the common case, inline: str, int, float, ...) */
        return 1;
    return !PyObject_IS_GC(o) || (!PyObject_GC_IsTracked(o) && !PyDict_Check(o));
}

/* out[j] = x, stealing x: into the slot allocated for it, or appended past the length
 * allocated (a column grew meanwhile); 0, or -1 with an exception */
static inline int put_at(PyObject *out, Py_ssize_t j, Py_ssize_t allocated, PyObject *x) {
    if (j < allocated) {
        PyList_SET_ITEM(out, j, x);
        return 0;
    }
    int err = PyList_Append(out, x);
    Py_DECREF(x);
    return err;
}

/* the list of the first `made` items of `out` (allocated at `allocated` items, the rest
 * NULL: a column shrank meanwhile), tracked by the collector again */
static PyObject *finish(PyObject *out, Py_ssize_t made, Py_ssize_t allocated) {
    if (made < allocated)
        Py_SET_SIZE(out, made); /* (the slots past it were never filled) */
    PyObject_GC_Track(out);
    return out;
}

/* Where `r._<name> = x` stores x for an instance of cls, as object.__setattr__ finds it
 * (the first class of the MRO whose dict has the name): 1 and *off when that is a
 * writable object slot (Py_T_OBJECT_EX) of a base of cls; 0 for anything else (no
 * exception); -1 with an exception. */
static int slot_offset(PyTypeObject *cls, PyObject *name, Py_ssize_t *off) {
    PyObject *mro = cls->tp_mro;
    if (mro == NULL || !PyTuple_CheckExact(mro))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *base = PyTuple_GET_ITEM(mro, i);
        if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_dict == NULL)
            return 0; /* (3.12+: a static builtin type's dict is not there; never ours) */
        PyObject *d = PyDict_GetItemWithError(((PyTypeObject *)base)->tp_dict, name); /* borrowed */
        if (d == NULL) {
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type))
            return 0; /* (a property, a method, a plain attribute: the reference's) */
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
#ifdef Py_RELATIVE_OFFSET
        if (m->flags & Py_RELATIVE_OFFSET)
            return 0; /* (3.12+: an offset from the base's end, not from the object) */
#endif
        if (m->type != SLOT_OBJECT_EX || (m->flags & SLOT_READONLY) || !PyType_IsSubtype(cls, PyDescr_TYPE(d))
            || m->offset < (Py_ssize_t)sizeof(PyObject)
            || m->offset + (Py_ssize_t)sizeof(PyObject *) > cls->tp_basicsize)
            return 0;
        *off = m->offset;
        return 1;
    }
    return 0;
}

/* Whether cls.__new__(cls) is type->tp_alloc(type, 0) and nothing else, and setting an
 * attribute is object.__setattr__: object's own __new__ (not overridden anywhere in the
 * MRO, not abstract), the generic allocator and setattr, no instance dict. */
static int plain_object_class(PyTypeObject *cls) {
    if (cls->tp_new != PyBaseObject_Type.tp_new || cls->tp_alloc != PyType_GenericAlloc
        || cls->tp_setattro != PyObject_GenericSetAttr || cls->tp_itemsize != 0 || cls->tp_dictoffset != 0
        || (cls->tp_flags & Py_TPFLAGS_IS_ABSTRACT))
        return 0;
#ifdef Py_TPFLAGS_MANAGED_DICT
    if (cls->tp_flags & Py_TPFLAGS_MANAGED_DICT)
        return 0;
#endif
    return 1;
}

static PyObject *lww_column(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("lww_column", 4);
    PyObject *ts = args[1], *actors = args[2], *values = args[3];
    if (!PyType_Check(args[0]) || !PyList_CheckExact(ts) || !PyList_CheckExact(actors) || !PyList_CheckExact(values))
        REFERENCE("lww_column");
    PyTypeObject *cls = (PyTypeObject *)args[0];
    Py_ssize_t n = PyList_GET_SIZE(ts);
    if (PyList_GET_SIZE(actors) != n || PyList_GET_SIZE(values) != n || !plain_object_class(cls))
        REFERENCE("lww_column"); /* (different lengths: the reference's ValueError) */
    /* looked up on every call (three dict lookups per record, not per event): a class
     * changed since the last call is judged as it is now */
    Py_ssize_t off_ts, off_actor, off_value;
    int ok = slot_offset(cls, S_TS, &off_ts);
    if (ok > 0)
        ok = slot_offset(cls, S_ACTOR, &off_actor);
    if (ok > 0)
        ok = slot_offset(cls, S_VALUE, &off_value);
    if (ok < 0)
        return NULL;
    if (ok == 0 || off_ts == off_actor || off_ts == off_value || off_actor == off_value)
        REFERENCE("lww_column"); /* (one slot under two names: each set would replace the last) */
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    PyObject_GC_UnTrack(out);
    Py_ssize_t i = 0;
    for (; i < PyList_GET_SIZE(ts) && i < PyList_GET_SIZE(actors) && i < PyList_GET_SIZE(values); i++) {
        /* new references, each handed to the register below */
        PyObject *t = Py_NewRef(PyList_GET_ITEM(ts, i));
        PyObject *a = Py_NewRef(PyList_GET_ITEM(actors, i));
        PyObject *v = Py_NewRef(PyList_GET_ITEM(values, i));
        PyObject *r = cls->tp_alloc(cls, 0); /* (zero-filled: the three slots are NULL) */
        if (r == NULL) {
            Py_DECREF(t);
            Py_DECREF(a);
            Py_DECREF(v);
            Py_DECREF(out);
            return NULL;
        }
        *(PyObject **)((char *)r + off_ts) = t;
        *(PyObject **)((char *)r + off_actor) = a;
        *(PyObject **)((char *)r + off_value) = v;
        if (PyType_IS_GC(cls) && leaf(t) && leaf(a) && leaf(v))
            PyObject_GC_UnTrack(r); /* (see leaf) */
        if (put_at(out, i, n, r) < 0) { /* (steals r) */
            Py_DECREF(out);
            return NULL;
        }
    }
    return finish(out, i, n);
}

/* Whether tuple.__new__(t, items) is t->tp_alloc(t, len(items)) with the items copied in
 * and nothing else: a class made by a class statement directly on tuple (a NamedTuple),
 * with no instance dict and tuple's layout and allocator, whose __new__ is tuple's or
 * defined in Python in its own body (tuple.__new__ bypasses that one; a __new__ in C,
 * as a struct sequence's, makes tuple.__new__ refuse the class: the reference's). */
static int plain_tuple_class(PyObject *o) {
    if (!PyType_Check(o))
        return 0;
    PyTypeObject *t = (PyTypeObject *)o;
    if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || t->tp_base != &PyTuple_Type || t->tp_dict == NULL
        || t->tp_basicsize != PyTuple_Type.tp_basicsize || t->tp_itemsize != PyTuple_Type.tp_itemsize
        || t->tp_dictoffset != 0 || t->tp_alloc != PyType_GenericAlloc)
        return 0;
    if (t->tp_new == PyTuple_Type.tp_new)
        return 1;
    PyObject *own = PyDict_GetItemWithError(t->tp_dict, S_NEW); /* borrowed; (str key: no error) */
    return own != NULL && (Py_IS_TYPE(own, &PyStaticMethod_Type) || PyFunction_Check(own));
}

/* first_seq + i (first: first_seq, an exact int within int64), as a new int */
static PyObject *seq_at(PyObject *first_seq, long long first, Py_ssize_t i) {
    if (first <= LLONG_MAX - (long long)i)
        return PyLong_FromLongLong(first + (long long)i);
    PyObject *step = PyLong_FromSsize_t(i);
    if (step == NULL)
        return NULL;
    PyObject *seq = PyNumber_Add(first_seq, step); /* (beyond int64, as the reference's count) */
    Py_DECREF(step);
    return seq;
}

static PyObject *one_field_changes(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("one_field_changes", 10);
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14+: a tuple caches its hash in the object, and tp_alloc's zero is not "no hash
     * yet" (tuple.__new__ resets it): the reference builds them */
    REFERENCE("one_field_changes");
#else
    PyObject *change_t = args[0], *event_t = args[1], *origin = args[2], *hlcs = args[4], *field = args[5],
             *keys = args[6], *deltas = args[7], *fversion = args[8];
    long long first;
    Py_ssize_t start;
    if (!PyList_CheckExact(hlcs) || !PyList_CheckExact(keys) || !PyList_CheckExact(deltas)
        || !as_i64(args[3], &first) || !as_index(args[9], &start))
        REFERENCE("one_field_changes");
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(hlcs) != n || PyList_GET_SIZE(deltas) != n || !plain_tuple_class(change_t)
        || !plain_tuple_class(event_t))
        REFERENCE("one_field_changes"); /* (different lengths: the reference's ValueError) */
    Py_ssize_t m = start < n ? n - start : 0;
    PyTypeObject *ct = (PyTypeObject *)change_t, *et = (PyTypeObject *)event_t;
    PyObject *out = PyList_New(m);
    if (out == NULL)
        return NULL;
    PyObject_GC_UnTrack(out);
    int same_leaves = leaf(origin) && leaf(field) && leaf(fversion); /* (in every event) */
    Py_ssize_t i = start;
    for (; i < PyList_GET_SIZE(keys) && i < PyList_GET_SIZE(hlcs) && i < PyList_GET_SIZE(deltas); i++) {
        PyObject *seq = seq_at(args[3], first, i); /* (an int: no collection) */
        if (seq == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        /* new references, each handed to the event or the change below (the key twice) */
        PyObject *h = Py_NewRef(PyList_GET_ITEM(hlcs, i));
        PyObject *k = PyList_GET_ITEM(keys, i);
        Py_INCREF(k);
        Py_INCREF(k);
        PyObject *d = Py_NewRef(PyList_GET_ITEM(deltas, i));
        PyObject *ev = et->tp_alloc(et, 7);
        if (ev == NULL) {
            Py_DECREF(seq);
            Py_DECREF(h);
            Py_DECREF(k);
            Py_DECREF(k);
            Py_DECREF(d);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(ev, 0, Py_NewRef(origin));
        PyTuple_SET_ITEM(ev, 1, seq);
        PyTuple_SET_ITEM(ev, 2, h);
        PyTuple_SET_ITEM(ev, 3, Py_NewRef(field));
        PyTuple_SET_ITEM(ev, 4, k);
        PyTuple_SET_ITEM(ev, 5, d);
        PyTuple_SET_ITEM(ev, 6, Py_NewRef(fversion));
        int ev_leaf = same_leaves && leaf(h) && leaf(k) && leaf(d); /* (the seq is an int) */
        if (ev_leaf)
            PyObject_GC_UnTrack(ev); /* (see leaf) */
        PyObject *ch = ct->tp_alloc(ct, 4);
        if (ch == NULL) {
            Py_DECREF(ev);
            Py_DECREF(k);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(ch, 0, Py_NewRef(field));
        PyTuple_SET_ITEM(ch, 1, k);
        PyTuple_SET_ITEM(ch, 2, ev);
        PyTuple_SET_ITEM(ch, 3, Py_NewRef(Py_False));
        if (ev_leaf) /* (the change holds the field, the key, the event and False) */
            PyObject_GC_UnTrack(ch);
        if (put_at(out, i - start, m, ch) < 0) { /* (steals ch) */
            Py_DECREF(out);
            return NULL;
        }
    }
    return finish(out, i > start ? i - start : 0, m);
#endif
}


/* ---- call_each: a record's changes through its one subscriber -------------------------- */

/* the rest of call_each run by the reference, from item i on */
static PyObject *call_each_from(Py_ssize_t i, PyObject *const *args) {
    PyObject *from = PyLong_FromSsize_t(i);
    if (from == NULL)
        return NULL;
    PyObject *again[6] = {args[0], args[1], from, args[3], args[4], args[5]};
    PyObject *r = reference("call_each", again, 6, NULL);
    Py_DECREF(from);
    return r;
}

/* whether item[0] of the reference is PyTuple_GET_ITEM(item, 0): a tuple, or a subclass
 * (a NamedTuple) that keeps tuple's subscript */
static inline int plain_tuple(PyObject *item) {
    return PyTuple_CheckExact(item)
           || (PyTuple_Check(item) && Py_TYPE(item)->tp_as_mapping != NULL
               && Py_TYPE(item)->tp_as_mapping->mp_subscript == PyTuple_Type.tp_as_mapping->mp_subscript);
}

/* The reference's loop: per item, the token, then the field against skip and wanted, then
 * cb(item). The verdict on a field is kept while the next items have the very same field
 * object and it is an exact str (whose == and hash run no code: the same verdict every
 * time); a record's changes share one. An Exception raised by cb is handed back with its
 * index (the caller logs it and calls again from the next item), anything else
 * propagates. An item, token or filter of another kind (also one a callback made so:
 * an emptied token) is the reference's from the item reached. Each item is held while
 * its field is judged and cb runs (cb may drop it from the list). */
static PyObject *call_each(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("call_each", 6);
    PyObject *cb = args[0], *items = args[1], *token = args[3], *wanted = args[4], *skip = args[5];
    Py_ssize_t i;
    if (!PyList_CheckExact(items) || !PyList_CheckExact(token) || !as_index(args[2], &i)
        || !(wanted == Py_None || PyFrozenSet_CheckExact(wanted)))
        REFERENCE("call_each");
    PyObject *last = NULL; /* (held: the exact str judged last, compared by address) */
    int last_ok = 0;
    for (; i < PyList_GET_SIZE(items); i++) {
        if (PyList_GET_SIZE(token) < 1 || !plain_tuple(PyList_GET_ITEM(items, i))
            || PyTuple_GET_SIZE(PyList_GET_ITEM(items, i)) < 1) {
            Py_XDECREF(last);
            return call_each_from(i, args); /* (its IndexError, or what item[0] does) */
        }
        if (PyList_GET_ITEM(token, 0) != Py_True) {
            Py_XDECREF(last);
            return Py_BuildValue("(nO)", i, Py_None);
        }
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, i));
        PyObject *f = PyTuple_GET_ITEM(item, 0); /* (held by the item) */
        int ok;
        if (f == last) {
            ok = last_ok;
        } else {
            /* f != skip as Python evaluates it (RichCompareBool would say "equal" for the
             * same object without asking it: a NaN is != itself) */
            PyObject *ne = PyObject_RichCompare(f, skip, Py_NE);
            ok = ne == NULL ? -1 : PyObject_IsTrue(ne);
            Py_XDECREF(ne);
            if (ok > 0 && wanted != Py_None)
                ok = PySet_Contains(wanted, f);
            if (ok < 0) {
                Py_DECREF(item);
                Py_XDECREF(last);
                return NULL; /* (an unhashable field, an == that raised: as the reference) */
            }
            /* (an exact str with an exact str to skip: the same verdict for the same object) */
            int keep = PyUnicode_CheckExact(f) && PyUnicode_CheckExact(skip);
            Py_XSETREF(last, keep ? Py_NewRef(f) : NULL);
            last_ok = ok;
        }
        if (!ok) {
            Py_DECREF(item);
            continue;
        }
        PyObject *r = PyObject_Vectorcall(cb, &item, 1, NULL);
        Py_DECREF(item);
        if (r != NULL) {
            Py_DECREF(r);
            continue;
        }
        Py_XDECREF(last);
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL; /* (KeyboardInterrupt, SystemExit, ...: as the reference) */
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
#else
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL)
            PyException_SetTraceback(exc, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
#endif
        return Py_BuildValue("(nN)", i, exc); /* (N: the result takes the reference to exc) */
    }
    Py_XDECREF(last);
    return Py_BuildValue("(nO)", i, Py_None);
}

/* ---- record_span: a format-2 record's (origin, first seq, events) from its header ----- */

/* skip one msgpack object: 1, or 0 when the bytes are not one this skipper takes (the
 * caller then asks msgpack) */
static int skip_obj(Reader *r, int depth) {
    if (depth > 16 || !need(r, 1))
        return 0;
    unsigned char t = *r->p++;
    Py_ssize_t n = 0, items = 0;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
        return 1;
    if ((t & 0xe0) == 0xa0)
        n = t & 0x1f;
    else if ((t & 0xf0) == 0x90)
        items = t & 0x0f;
    else if ((t & 0xf0) == 0x80)
        items = 2 * (Py_ssize_t)(t & 0x0f);
    else {
        int size;
        switch (t) {
        case 0xcc: case 0xd0: n = 1; break;
        case 0xcd: case 0xd1: n = 2; break;
        case 0xce: case 0xd2: case 0xca: n = 4; break;
        case 0xcf: case 0xd3: case 0xcb: n = 8; break;
        case 0xd4: n = 2; break; /* fixext 1..16: type byte + data */
        case 0xd5: n = 3; break;
        case 0xd6: n = 5; break;
        case 0xd7: n = 9; break;
        case 0xd8: n = 17; break;
        case 0xd9: case 0xc4: case 0xc7: size = 1; goto sized;
        case 0xda: case 0xc5: case 0xc8: size = 2; goto sized;
        case 0xdb: case 0xc6: case 0xc9: size = 4; goto sized;
        case 0xdc: case 0xde: size = 2; goto counted;
        case 0xdd: case 0xdf: size = 4; goto counted;
        default: return 0;
        sized:
            if (!need(r, size))
                return 0;
            n = (Py_ssize_t)be(r->p, size) + (t >= 0xc7 && t <= 0xc9 ? 1 : 0); /* (ext: + its type byte) */
            r->p += size;
            break;
        counted:
            if (!need(r, size))
                return 0;
            items = (Py_ssize_t)be(r->p, size) * (t == 0xde || t == 0xdf ? 2 : 1);
            r->p += size;
            break;
        }
    }
    if (n) {
        if (!need(r, n))
            return 0;
        r->p += n;
    }
    for (Py_ssize_t i = 0; i < items; i++)
        if (!skip_obj(r, depth + 1))
            return 0;
    return 1;
}

/* an array header: 1 and *n, or 0 */
static int array_header(Reader *r, Py_ssize_t *n) {
    if (!need(r, 1))
        return 0;
    unsigned char t = *r->p;
    if ((t & 0xf0) == 0x90) {
        r->p++;
        *n = t & 0x0f;
        return 1;
    }
    int size = t == 0xdc ? 2 : t == 0xdd ? 4 : 0;
    if (!size || !need(r, 1 + size))
        return 0;
    *n = (Py_ssize_t)be(r->p + 1, size);
    r->p += 1 + size;
    return 1;
}

static PyObject *record_span(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    WANT_ARGS("record_span", 1);
    if (!PyBytes_CheckExact(args[0]))
        REFERENCE("record_span");
    Reader r = {(const unsigned char *)PyBytes_AS_STRING(args[0]),
                (const unsigned char *)PyBytes_AS_STRING(args[0]) + PyBytes_GET_SIZE(args[0])};
    Py_ssize_t parts, n;
    if (!array_header(&r, &parts) || parts != 10 || !need(&r, 1) || *r.p != 0x02)
        Py_RETURN_NONE;
    r.p++;
    /* origin: a str (fixstr or str8/16/32) of valid UTF-8 */
    PyObject *origin = NULL;
    if (need(&r, 1) && ((*r.p & 0xe0) == 0xa0 || *r.p == 0xd9 || *r.p == 0xda || *r.p == 0xdb)) {
        unsigned char t = *r.p++;
        Py_ssize_t len = 0;
        int size = t == 0xd9 ? 1 : t == 0xda ? 2 : t == 0xdb ? 4 : 0;
        if (!size)
            len = t & 0x1f;
        else if (need(&r, size)) {
            len = (Py_ssize_t)be(r.p, size);
            r.p += size;
        } else
            Py_RETURN_NONE;
        origin = read_str(&r, len);
        if (origin == NULL) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
    } else
        Py_RETURN_NONE;
    /* first seq: a positive int of at most 63 bits */
    long long first = -1;
    if (need(&r, 1)) {
        unsigned char t = *r.p;
        if (t <= 0x7f) {
            first = t;
            r.p++;
        } else if (t >= 0xcc && t <= 0xcf) {
            int size = 1 << (t - 0xcc);
            if (need(&r, 1 + size)) {
                uint64_t u = be(r.p + 1, size);
                if (u < ((uint64_t)1 << 63))
                    first = (long long)u;
                r.p += 1 + size;
            }
        }
    }
    int ok = first >= 1;
    for (int i = 0; ok && i < 5; i++) /* meta, fields, first stamp, steps, entries */
        ok = skip_obj(&r, 1);
    if (!ok || !array_header(&r, &n) || n < 1) {
        Py_DECREF(origin);
        Py_RETURN_NONE;
    }
    PyObject *out = Py_BuildValue("(NLn)", origin, first, n);
    return out;
}


/* ---- the module -------------------------------------------------------------------- */

static PyObject *bind(PyObject *self, PyObject *module) {
    Py_INCREF(module);
    Py_XSETREF(REF, module);
    Py_RETURN_NONE;
}

#define FN(name, doc) {#name, (PyCFunction)(void (*)(void))name, METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef methods[] = {
    FN(hlc_steps, "hlc_steps(hlcs): see crdtsync/_hot.py"),
    FN(keys_ok, "keys_ok(keys, limit): see crdtsync/_hot.py"),
    FN(hlc_column, "hlc_column(hlc0, steps): see crdtsync/_hot.py"),
    FN(hlc_check, "hlc_check(hlc0, steps): see crdtsync/_hot.py"),
    FN(stamped_totals_ok, "stamped_totals_ok(payloads, limit): see crdtsync/_hot.py"),
    FN(scalar_column, "scalar_column(values, lo, hi): see crdtsync/_hot.py"),
    FN(raise_totals, "raise_totals(rows, keys, totals, start, actor): see crdtsync/_hot.py"),
    FN(strictly_rising, "strictly_rising(ts, start): see crdtsync/_hot.py"),
    FN(overlay_put, "overlay_put(own, keys, ts, values, start, ai): see crdtsync/_hot.py"),
    FN(overlay_join, "overlay_join(own, rows, names, own_ai, keys, ts, values, start, ai): see crdtsync/_hot.py"),
    FN(unpack_record, "unpack_record(data): see crdtsync/_hot.py"),
    FN(record_span, "record_span(data): see crdtsync/_hot.py"),
    FN(lww_column, "lww_column(cls, ts, actors, values): see crdtsync/_hot.py"),
    FN(one_field_changes, "one_field_changes(change_t, event_t, origin, first_seq, hlcs, field, keys, deltas, "
                          "field_version, start): see crdtsync/_hot.py"),
    FN(call_each, "call_each(cb, items, start, token, wanted, skip): see crdtsync/_hot.py"),
    {"bind", bind, METH_O, "bind(module): the reference module unusual inputs are handed to (crdtsync/_hot.py)"},
    {NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "crdtsync._ccolumns",
    "The column loops of crdtsync/_hot.py in C (reference: crdtsync/_hot.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__ccolumns(void) {
    ZERO = PyLong_FromLong(0);
    SIXTY4 = PyLong_FromLong(64);
    S_TS = PyUnicode_InternFromString("_ts");
    S_ACTOR = PyUnicode_InternFromString("_actor");
    S_VALUE = PyUnicode_InternFromString("_value");
    S_NEW = PyUnicode_InternFromString("__new__");
    if (ZERO == NULL || SIXTY4 == NULL || S_TS == NULL || S_ACTOR == NULL || S_VALUE == NULL || S_NEW == NULL)
        return NULL;
    return PyModule_Create(&moduledef);
}
