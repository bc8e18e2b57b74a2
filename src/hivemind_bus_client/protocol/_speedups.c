/*
 * hivemind_bus_client.protocol._speedups -- optional C accelerator for the
 * text encodings of hivemind_bus_client.protocol.encodings.
 *
 * Every function here returns exactly what its pure-Python counterpart in
 * encodings.py returns, for every input, and raises ValueError where that
 * counterpart raises DecodingError / Z85DecodeError (the Python side converts
 * the exception). The pure-Python code is the specification; read it first.
 *
 *   b91_encode / b91_decode     basE91 (Joachim Henke's alphabet, bit order)
 *   z85b_encode / z85b_decode   Z85B: little-endian words, LS digit first, trimmed
 *   z85p_encode / z85p_decode   Z85P: pad-count byte + big-endian Z85 of padded input
 *   b32_encode / b32_decode     base64.b32encode(...).decode() / base64.b32decode
 *
 * Quirks copied on purpose from the pure-Python decoders (see encodings.py):
 *   - z85b_decode strips every character str.split() treats as whitespace
 *     (ASCII whitespace incl. \x1c-\x1f, and Unicode whitespace such as \x85,
 *     \xa0, \u3000; for bytes input the latin-1 reading of 0x85 / 0xa0);
 *   - z85p_decode reads a str through str.encode("latin-1", "replace"), so
 *     every character above U+00FF (surrogates included) reads as '?', which
 *     is a valid Z85 digit.
 *
 * Plain CPython C API (not the limited API: direct access to str storage is
 * what makes the decoders cheap). No module state; the tables are constant.
 * Inputs of NOGIL_MIN bytes or more are processed with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NOGIL_MIN 65536
#define STACK_BYTES 2048

static const char B91_ENC[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    "!#$%&()*+,./:;<=>?@[]^_`{|}~\"";
static const char Z85_ENC[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
static const char B32_ENC[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* Decoding tables: value of each byte in the alphabet, 255 if not in it.
 * LATIN1_SPACE: 1 where chr(i).isspace() for i in 0..255. */
static const unsigned char B91_DEC[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255,  62,  90,  63,  64,  65,  66, 255,  67,  68,  69,  70,  71, 255,  72,  73,
     52,  53,  54,  55,  56,  57,  58,  59,  60,  61,  74,  75,  76,  77,  78,  79,
     80,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25,  81, 255,  82,  83,  84,
     85,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
     41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51,  86,  87,  88,  89, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};
static const unsigned char Z85_DEC[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255,  68, 255,  84,  83,  82,  72, 255,  75,  76,  70,  65, 255,  63,  62,  69,
      0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  64, 255,  73,  66,  74,  71,
     81,  36,  37,  38,  39,  40,  41,  42,  43,  44,  45,  46,  47,  48,  49,  50,
     51,  52,  53,  54,  55,  56,  57,  58,  59,  60,  61,  77, 255,  78,  67, 255,
    255,  10,  11,  12,  13,  14,  15,  16,  17,  18,  19,  20,  21,  22,  23,  24,
     25,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  79, 255,  80, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};
static const unsigned char B32_DEC[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255,  26,  27,  28,  29,  30,  31, 255, 255, 255, 255, 255, 255, 255, 255,
    255,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};
static const unsigned char LATIN1_SPACE[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1,
    1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

/* Scratch memory: on the stack when small, else PyMem (GIL held). */
typedef struct {
    unsigned char *p;
    int on_heap;
    unsigned char stack[STACK_BYTES];
} scratch_t;

static void
scratch_init(scratch_t *s)
{
    s->p = NULL;
    s->on_heap = 0;
}

static unsigned char *
scratch_alloc(scratch_t *s, size_t n)
{
    if (n <= STACK_BYTES) {
        s->p = s->stack;
        s->on_heap = 0;
        return s->p;
    }
    s->p = (unsigned char *)PyMem_Malloc(n);
    if (s->p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    s->on_heap = 1;
    return s->p;
}

static void
scratch_free(scratch_t *s)
{
    if (s->on_heap) {
        PyMem_Free(s->p);
    }
    s->p = NULL;
    s->on_heap = 0;
}

/* Binary input of an encoder: any C-contiguous bytes-like object. */
typedef struct {
    const unsigned char *data;
    size_t len;
    int has_view;
    Py_buffer view;
} bin_t;

static int
bin_acquire(PyObject *o, bin_t *b)
{
    b->has_view = 0;
    if (PyBytes_Check(o)) {
        b->data = (const unsigned char *)PyBytes_AS_STRING(o);
        b->len = (size_t)PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyObject_GetBuffer(o, &b->view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    b->has_view = 1;
    b->data = (const unsigned char *)b->view.buf;
    b->len = (size_t)b->view.len;
    return 0;
}

static void
bin_release(bin_t *b)
{
    if (b->has_view) {
        PyBuffer_Release(&b->view);
        b->has_view = 0;
    }
}

/* Text input of a decoder: a str, or a bytes-like object read byte by byte.
 * kind == 1: `data` holds `len` bytes (bytes-like input, or a str whose code
 * points are all below 256, i.e. exactly its latin-1 encoding).
 * kind == 2 or 4: `wide` is the str's UCS2/UCS4 storage. */
typedef struct {
    const unsigned char *data;
    const void *wide;
    int kind;
    size_t len;
    int has_view;
    Py_buffer view;
} text_t;

static int
text_acquire(PyObject *o, text_t *t)
{
    t->has_view = 0;
    t->data = NULL;
    t->wide = NULL;
    t->kind = 1;
    if (PyUnicode_Check(o)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0) {
            return -1;
        }
#endif
        t->len = (size_t)PyUnicode_GET_LENGTH(o);
        t->kind = (int)PyUnicode_KIND(o);
        if (t->kind == (int)PyUnicode_1BYTE_KIND) {
            t->kind = 1;
            t->data = (const unsigned char *)PyUnicode_1BYTE_DATA(o);
        }
        else {
            t->wide = PyUnicode_DATA(o);
        }
        return 0;
    }
    if (PyBytes_Check(o)) {
        t->data = (const unsigned char *)PyBytes_AS_STRING(o);
        t->len = (size_t)PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyObject_GetBuffer(o, &t->view, PyBUF_SIMPLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "argument should be str or a bytes-like object, not '%.100s'",
                         Py_TYPE(o)->tp_name);
        }
        return -1;
    }
    t->has_view = 1;
    t->data = (const unsigned char *)t->view.buf;
    t->len = (size_t)t->view.len;
    return 0;
}

static void
text_release(text_t *t)
{
    if (t->has_view) {
        PyBuffer_Release(&t->view);
        t->has_view = 0;
    }
}

static PyObject *
value_error(const char *msg)
{
    PyErr_SetString(PyExc_ValueError, msg);
    return NULL;
}

/* A fresh ASCII str of exactly n characters, to be filled in. */
static PyObject *
new_ascii(size_t n, unsigned char **out)
{
    PyObject *res = PyUnicode_New((Py_ssize_t)n, 127);
    if (res != NULL) {
        *out = (unsigned char *)PyUnicode_1BYTE_DATA(res);
    }
    return res;
}

/* A fresh bytes object of exactly n bytes, to be filled in. */
static PyObject *
new_bytes(size_t n, unsigned char **out)
{
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (res != NULL) {
        *out = (unsigned char *)PyBytes_AS_STRING(res);
    }
    return res;
}

#define NOGIL_BEGIN(n) \
    PyThreadState *nogil_ts_ = ((n) >= NOGIL_MIN) ? PyEval_SaveThread() : NULL
#define NOGIL_END() \
    do { if (nogil_ts_ != NULL) PyEval_RestoreThread(nogil_ts_); } while (0)

/* ------------------------------------------------------------------------ */
/* Encoders whose output length follows from the input length alone          */

typedef void (*enc_core_t)(const unsigned char *in, size_t n, unsigned char *out);

/* outlen(n) returns the text length for n input bytes, or SIZE_MAX when it
 * would not fit a Python str. */
static PyObject *
encode_fixed(PyObject *arg, size_t (*outlen)(size_t), enc_core_t core)
{
    bin_t b;
    unsigned char *out;
    size_t len;
    PyObject *res;

    if (bin_acquire(arg, &b) < 0) {
        return NULL;
    }
    len = outlen(b.len);
    if (len == SIZE_MAX) {
        bin_release(&b);
        return PyErr_NoMemory();
    }
    res = new_ascii(len, &out);
    if (res != NULL) {
        NOGIL_BEGIN(b.len);
        core(b.data, b.len, out);
        NOGIL_END();
    }
    bin_release(&b);
    return res;
}

/* ------------------------------------------------------------------------ */
/* basE91                                                                    */

static size_t
b91_enc_core(const unsigned char *in, size_t n, unsigned char *out)
{
    uint32_t acc = 0;       /* at most 21 significant bits */
    unsigned nb = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        acc |= (uint32_t)in[i] << nb;
        nb += 8;
        if (nb > 13) {
            uint32_t v = acc & 8191;
            if (v > 88) {
                acc >>= 13;
                nb -= 13;
            }
            else {
                v = acc & 16383;
                acc >>= 14;
                nb -= 14;
            }
            out[k++] = (unsigned char)B91_ENC[v % 91];
            out[k++] = (unsigned char)B91_ENC[v / 91];
        }
    }
    if (nb) {
        out[k++] = (unsigned char)B91_ENC[acc % 91];
        if (nb > 7 || acc > 90) {
            out[k++] = (unsigned char)B91_ENC[acc / 91];
        }
    }
    return k;
}

PyDoc_STRVAR(b91_encode_doc,
"b91_encode(data, /)\n--\n\nbasE91-encode a bytes-like object; returns str.");

static PyObject *
sp_b91_encode(PyObject *Py_UNUSED(module), PyObject *arg)
{
    bin_t b;
    scratch_t s;
    unsigned char *tmp, *out;
    size_t cap, k;
    PyObject *res = NULL;

    if (bin_acquire(arg, &b) < 0) {
        return NULL;
    }
    scratch_init(&s);
    if (b.len > (size_t)PY_SSIZE_T_MAX / 2) {
        PyErr_NoMemory();
        goto done;
    }
    /* Each pair of characters consumes at least 13 of the 8n input bits,
     * and the tail adds at most 2 characters. */
    cap = 2 * ((b.len / 13) * 8 + ((b.len % 13) * 8) / 13) + 2;
    tmp = scratch_alloc(&s, cap);
    if (tmp == NULL) {
        goto done;
    }
    {
        NOGIL_BEGIN(b.len);
        k = b91_enc_core(b.data, b.len, tmp);
        NOGIL_END();
    }
    res = new_ascii(k, &out);
    if (res != NULL && k) {
        memcpy(out, tmp, k);
    }
done:
    scratch_free(&s);
    bin_release(&b);
    return res;
}

/* Returns the number of bytes written, or -1 on a character outside the alphabet. */
static Py_ssize_t
b91_dec_core(const unsigned char *s, size_t len, unsigned char *out)
{
    uint32_t acc = 0;       /* at most 21 significant bits */
    unsigned nb = 0;
    size_t k = 0;
    size_t even = len & ~(size_t)1;
    for (size_t i = 0; i < even; i += 2) {
        uint32_t a = B91_DEC[s[i]], c = B91_DEC[s[i + 1]];
        if ((a | c) & 0x80) {
            return -1;
        }
        uint32_t v = a + 91 * c;
        acc |= v << nb;
        nb += ((v & 8191) > 88) ? 13 : 14;
        do {
            out[k++] = (unsigned char)(acc & 255);
            acc >>= 8;
            nb -= 8;
        } while (nb > 7);
    }
    if (len & 1) {
        uint32_t c = B91_DEC[s[len - 1]];
        if (c & 0x80) {
            return -1;
        }
        out[k++] = (unsigned char)((acc | (c << nb)) & 255);
    }
    return (Py_ssize_t)k;
}

PyDoc_STRVAR(b91_decode_doc,
"b91_decode(text, /)\n--\n\nDecode basE91 text (str or bytes-like); ValueError on bad input.");

static PyObject *
sp_b91_decode(PyObject *Py_UNUSED(module), PyObject *arg)
{
    text_t t;
    scratch_t s;
    unsigned char *tmp;
    size_t pairs, cap;
    Py_ssize_t k;
    PyObject *res = NULL;

    if (text_acquire(arg, &t) < 0) {
        return NULL;
    }
    scratch_init(&s);
    if (t.kind != 1) {
        value_error("invalid character in basE91 text");
        goto done;
    }
    /* A pair yields 13 or 14 bits, a trailing single character one byte. */
    pairs = t.len / 2;
    cap = (pairs / 4) * 7 + ((pairs % 4) * 7) / 4 + 1;
    tmp = scratch_alloc(&s, cap);
    if (tmp == NULL) {
        goto done;
    }
    {
        NOGIL_BEGIN(t.len);
        k = b91_dec_core(t.data, t.len, tmp);
        NOGIL_END();
    }
    if (k < 0) {
        value_error("invalid character in basE91 text");
        goto done;
    }
    res = PyBytes_FromStringAndSize((const char *)tmp, k);
done:
    scratch_free(&s);
    text_release(&t);
    return res;
}

/* ------------------------------------------------------------------------ */
/* Z85 digits                                                                */

#define Z85_MAX_WORD 0xFFFFFFFFu

/* 0: ok, -1: character outside the alphabet, -2: group above 2**32 - 1 */
#define Z85_BAD_CHAR (-1)
#define Z85_OVERFLOW (-2)

/* Five digits -> their 32-bit word. Z85P writes the most significant digit
 * first, Z85B the least significant. Returns 0 or a Z85_* error. */
static inline int
z85_group(const unsigned char *s, int msb_first, uint32_t *word)
{
    uint32_t d[5];
    for (int i = 0; i < 5; i++) {
        d[i] = Z85_DEC[s[msb_first ? i : 4 - i]];
    }
    if ((d[0] | d[1] | d[2] | d[3] | d[4]) & 0x80) {
        return Z85_BAD_CHAR;
    }
    uint64_t w = (((((uint64_t)d[0] * 85 + d[1]) * 85 + d[2]) * 85 + d[3]) * 85) + d[4];
    if (w > Z85_MAX_WORD) {
        return Z85_OVERFLOW;
    }
    *word = (uint32_t)w;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Z85B                                                                      */

static void
z85b_enc_core(const unsigned char *in, size_t n, unsigned char *out)
{
    size_t full = n / 4, rem = n % 4;
    for (size_t g = 0; g < full; g++, in += 4) {
        uint32_t w = (uint32_t)in[0] | ((uint32_t)in[1] << 8) |
                     ((uint32_t)in[2] << 16) | ((uint32_t)in[3] << 24);
        for (int i = 0; i < 5; i++) {
            *out++ = (unsigned char)Z85_ENC[w % 85];
            w /= 85;
        }
    }
    if (rem) {
        /* The final 1..3 bytes, zero-padded; their rem + 1 low digits. */
        uint32_t w = 0;
        for (size_t i = 0; i < rem; i++) {
            w |= (uint32_t)in[i] << (8 * i);
        }
        for (size_t i = 0; i <= rem; i++) {
            *out++ = (unsigned char)Z85_ENC[w % 85];
            w /= 85;
        }
    }
}

PyDoc_STRVAR(z85b_encode_doc,
"z85b_encode(data, /)\n--\n\nZ85B-encode a bytes-like object; returns str.");

static size_t
z85b_len(size_t n)
{
    if (n / 4 > ((size_t)PY_SSIZE_T_MAX - 4) / 5) {
        return SIZE_MAX;
    }
    return n + n / 4 + (n % 4 ? 1 : 0);
}

static PyObject *
sp_z85b_encode(PyObject *Py_UNUSED(module), PyObject *arg)
{
    return encode_fixed(arg, z85b_len, z85b_enc_core);
}

/* s: L digits (whitespace already removed), L % 5 != 1. */
static int
z85b_dec_core(const unsigned char *s, size_t L, unsigned char *out)
{
    size_t full = L / 5, rem = L % 5;
    for (size_t g = 0; g < full; g++, s += 5) {
        uint32_t w;
        int rc = z85_group(s, 0, &w);
        if (rc != 0) {
            return rc;
        }
        out[0] = (unsigned char)(w & 255);
        out[1] = (unsigned char)((w >> 8) & 255);
        out[2] = (unsigned char)((w >> 16) & 255);
        out[3] = (unsigned char)((w >> 24) & 255);
        out += 4;
    }
    if (rem) {
        /* 2..4 digits; the missing high digits are 0, so w < 85**4 < 2**32.
         * Only the low rem - 1 bytes are kept (as the pure code does, the
         * dropped high byte need not be zero). */
        uint32_t w = 0, mul = 1;
        for (size_t i = 0; i < rem; i++) {
            uint32_t d = Z85_DEC[s[i]];
            if (d & 0x80) {
                return Z85_BAD_CHAR;
            }
            w += d * mul;
            mul *= 85;
        }
        for (size_t i = 0; i + 1 < rem; i++) {
            out[i] = (unsigned char)((w >> (8 * i)) & 255);
        }
    }
    return 0;
}

PyDoc_STRVAR(z85b_decode_doc,
"z85b_decode(text, /)\n--\n\nDecode Z85B text (str or bytes-like); ValueError on bad input.");

static PyObject *
sp_z85b_decode(PyObject *Py_UNUSED(module), PyObject *arg)
{
    text_t t;
    scratch_t s;
    const unsigned char *src;
    unsigned char *out;
    size_t L, rem, outlen;
    int rc;
    PyObject *res = NULL;

    if (text_acquire(arg, &t) < 0) {
        return NULL;
    }
    scratch_init(&s);
    /* Drop whitespace as "".join(text.split()) does. */
    if (t.kind == 1) {
        size_t i = 0;
        while (i < t.len && !LATIN1_SPACE[t.data[i]]) {
            i++;
        }
        if (i == t.len) {
            src = t.data;
            L = t.len;
        }
        else {
            unsigned char *buf = scratch_alloc(&s, t.len);
            if (buf == NULL) {
                goto done;
            }
            memcpy(buf, t.data, i);
            L = i;
            for (; i < t.len; i++) {
                if (!LATIN1_SPACE[t.data[i]]) {
                    buf[L++] = t.data[i];
                }
            }
            src = buf;
        }
    }
    else {
        unsigned char *buf = scratch_alloc(&s, t.len);
        if (buf == NULL) {
            goto done;
        }
        L = 0;
        for (size_t i = 0; i < t.len; i++) {
            Py_UCS4 ch = PyUnicode_READ(t.kind, t.wide, i);
            if (Py_UNICODE_ISSPACE(ch)) {
                continue;
            }
            /* Anything outside ASCII is not a Z85 digit: map it to 0xFF. */
            buf[L++] = ch < 128 ? (unsigned char)ch : 0xFF;
        }
        src = buf;
    }
    rem = L % 5;
    if (rem == 1) {
        value_error("Z85B text length cannot be 1 mod 5");
        goto done;
    }
    outlen = (L / 5) * 4 + (rem ? rem - 1 : 0);
    res = new_bytes(outlen, &out);
    if (res == NULL) {
        goto done;
    }
    {
        NOGIL_BEGIN(L);
        rc = z85b_dec_core(src, L, out);
        NOGIL_END();
    }
    if (rc != 0) {
        Py_CLEAR(res);
        value_error(rc == Z85_BAD_CHAR ? "invalid character in Z85B text"
                                       : "Z85B group out of range");
    }
done:
    scratch_free(&s);
    text_release(&t);
    return res;
}

/* ------------------------------------------------------------------------ */
/* Z85P                                                                      */

/* out: the pad count digit, then 5 digits per started group of 4 bytes. */
static void
z85p_enc_core(const unsigned char *in, size_t n, unsigned char *out)
{
    size_t full = n / 4, rem = n % 4;
    *out++ = (unsigned char)((4 - rem) % 4);
    for (size_t g = 0; g < full; g++, in += 4, out += 5) {
        uint32_t w = ((uint32_t)in[0] << 24) | ((uint32_t)in[1] << 16) |
                     ((uint32_t)in[2] << 8) | (uint32_t)in[3];
        for (int i = 4; i >= 0; i--) {
            out[i] = (unsigned char)Z85_ENC[w % 85];
            w /= 85;
        }
    }
    if (rem) {
        uint32_t w = 0;
        for (size_t i = 0; i < rem; i++) {
            w |= (uint32_t)in[i] << (24 - 8 * i);
        }
        for (int i = 4; i >= 0; i--) {
            out[i] = (unsigned char)Z85_ENC[w % 85];
            w /= 85;
        }
    }
}

PyDoc_STRVAR(z85p_encode_doc,
"z85p_encode(data, /)\n--\n\nZ85P-encode a bytes-like object; returns str.");

static size_t
z85p_len(size_t n)
{
    size_t groups = n / 4 + (n % 4 ? 1 : 0);
    if (groups > ((size_t)PY_SSIZE_T_MAX - 1) / 5) {
        return SIZE_MAX;
    }
    return 1 + 5 * groups;
}

static PyObject *
sp_z85p_encode(PyObject *Py_UNUSED(module), PyObject *arg)
{
    return encode_fixed(arg, z85p_len, z85p_enc_core);
}

/* body: 5 * groups digits; writes 4 * groups - pad bytes. */
static int
z85p_dec_core(const unsigned char *s, size_t groups, unsigned pad, unsigned char *out)
{
    for (size_t g = 0; g < groups; g++, s += 5) {
        uint32_t w;
        int rc = z85_group(s, 1, &w);
        if (rc != 0) {
            return rc;
        }
        unsigned char word[4];
        word[0] = (unsigned char)((w >> 24) & 255);
        word[1] = (unsigned char)((w >> 16) & 255);
        word[2] = (unsigned char)((w >> 8) & 255);
        word[3] = (unsigned char)(w & 255);
        /* The last group loses its pad low bytes, whatever their value. */
        size_t keep = (g + 1 == groups) ? 4 - pad : 4;
        memcpy(out, word, keep);
        out += keep;
    }
    return 0;
}

PyDoc_STRVAR(z85p_decode_doc,
"z85p_decode(text, /)\n--\n\nDecode Z85P text (str or bytes-like); ValueError on bad input.");

static PyObject *
sp_z85p_decode(PyObject *Py_UNUSED(module), PyObject *arg)
{
    text_t t;
    scratch_t s;
    const unsigned char *src;
    unsigned char *out;
    size_t body, groups;
    unsigned pad;
    int rc;
    PyObject *res = NULL;

    if (text_acquire(arg, &t) < 0) {
        return NULL;
    }
    scratch_init(&s);
    if (t.kind == 1) {
        src = t.data;
    }
    else {
        /* str.encode("latin-1", "replace"): code points above 0xFF become '?'. */
        unsigned char *buf = scratch_alloc(&s, t.len);
        if (buf == NULL) {
            goto done;
        }
        for (size_t i = 0; i < t.len; i++) {
            Py_UCS4 ch = PyUnicode_READ(t.kind, t.wide, i);
            buf[i] = ch > 0xFF ? (unsigned char)'?' : (unsigned char)ch;
        }
        src = buf;
    }
    if (t.len == 0) {
        value_error("empty Z85P text");
        goto done;
    }
    pad = src[0];
    body = t.len - 1;
    if (pad > 3 || body % 5 || (pad && !body)) {
        value_error("malformed Z85P text");
        goto done;
    }
    groups = body / 5;
    res = new_bytes(groups * 4 - pad, &out);
    if (res == NULL) {
        goto done;
    }
    {
        NOGIL_BEGIN(body);
        rc = z85p_dec_core(src + 1, groups, pad, out);
        NOGIL_END();
    }
    if (rc != 0) {
        Py_CLEAR(res);
        value_error(rc == Z85_BAD_CHAR ? "invalid character in Z85P text"
                                       : "Z85P group out of range");
    }
done:
    scratch_free(&s);
    text_release(&t);
    return res;
}

/* ------------------------------------------------------------------------ */
/* Base32 (RFC 4648, upper case, '=' padding), as the base64 module          */

static void
b32_enc_core(const unsigned char *in, size_t n, unsigned char *out)
{
    /* characters kept from a final group of 1..4 bytes */
    static const unsigned char kept[5] = {0, 2, 4, 5, 7};
    size_t full = n / 5, rem = n % 5;
    for (size_t g = 0; g < full; g++, in += 5, out += 8) {
        uint64_t acc = ((uint64_t)in[0] << 32) | ((uint64_t)in[1] << 24) |
                       ((uint64_t)in[2] << 16) | ((uint64_t)in[3] << 8) | (uint64_t)in[4];
        for (int i = 7; i >= 0; i--) {
            out[i] = (unsigned char)B32_ENC[acc & 31];
            acc >>= 5;
        }
    }
    if (rem) {
        uint64_t acc = 0;
        for (size_t i = 0; i < rem; i++) {
            acc |= (uint64_t)in[i] << (32 - 8 * i);
        }
        for (int i = 7; i >= 0; i--) {
            out[i] = (i < kept[rem]) ? (unsigned char)B32_ENC[acc & 31] : (unsigned char)'=';
            acc >>= 5;
        }
    }
}

PyDoc_STRVAR(b32_encode_doc,
"b32_encode(data, /)\n--\n\nbase64.b32encode(data).decode(): Base32 with '=' padding; returns str.");

static size_t
b32_len(size_t n)
{
    size_t groups = n / 5 + (n % 5 ? 1 : 0);
    if (groups > (size_t)PY_SSIZE_T_MAX / 8) {
        return SIZE_MAX;
    }
    return 8 * groups;
}

static PyObject *
sp_b32_encode(PyObject *Py_UNUSED(module), PyObject *arg)
{
    return encode_fixed(arg, b32_len, b32_enc_core);
}

/* Bytes produced by a final quantum with p '=' characters (p in 1, 3, 4, 6). */
static size_t
b32_leftover(size_t p)
{
    return (43 - 5 * p) / 8;
}

static int
b32_pad_ok(size_t p)
{
    return p == 0 || p == 1 || p == 3 || p == 4 || p == 6;
}

/* s: slen digits (the text without its trailing '='), p the '=' count,
 * slen + p a multiple of 8 and p valid. Returns -1 on a non-digit. */
static int
b32_dec_core(const unsigned char *s, size_t slen, size_t p, unsigned char *out)
{
    size_t full = slen / 8;
    for (size_t g = 0; g < full; g++, s += 8, out += 5) {
        uint64_t acc = 0;
        unsigned bad = 0;
        for (int i = 0; i < 8; i++) {
            unsigned d = B32_DEC[s[i]];
            bad |= d;
            acc = (acc << 5) | (d & 31);
        }
        if (bad & 0x80) {
            return -1;
        }
        out[0] = (unsigned char)((acc >> 32) & 255);
        out[1] = (unsigned char)((acc >> 24) & 255);
        out[2] = (unsigned char)((acc >> 16) & 255);
        out[3] = (unsigned char)((acc >> 8) & 255);
        out[4] = (unsigned char)(acc & 255);
    }
    if (p) {
        /* 8 - p digits, left-aligned in 40 bits; the leftover high bytes kept. */
        uint64_t acc = 0;
        size_t nd = 8 - p;
        for (size_t i = 0; i < nd; i++) {
            unsigned d = B32_DEC[s[i]];
            if (d & 0x80) {
                return -1;
            }
            acc = (acc << 5) | d;
        }
        acc <<= 5 * p;
        size_t keep = b32_leftover(p);
        for (size_t i = 0; i < keep; i++) {
            out[i] = (unsigned char)((acc >> (32 - 8 * i)) & 255);
        }
    }
    return 0;
}

PyDoc_STRVAR(b32_decode_doc,
"b32_decode(text, /)\n--\n\nbase64.b32decode(text) semantics; ValueError where it raises.");

static PyObject *
sp_b32_decode(PyObject *Py_UNUSED(module), PyObject *arg)
{
    text_t t;
    unsigned char *out;
    size_t L, p, slen, outlen;
    int rc;
    PyObject *res = NULL;

    if (text_acquire(arg, &t) < 0) {
        return NULL;
    }
    if (t.kind != 1) {
        value_error("string argument should contain only ASCII characters");
        goto done;
    }
    /* A str with code points 0x80..0xFF (kind 1) also fails: those are never
     * digits and never '=', so they always reach the digit check below. */
    L = t.len;
    if (L % 8) {
        value_error("Incorrect padding");
        goto done;
    }
    p = 0;
    while (p < L && t.data[L - 1 - p] == '=') {
        p++;
    }
    slen = L - p;
    if (!b32_pad_ok(p)) {
        /* base64 reports a bad digit before bad padding */
        for (size_t i = 0; i < slen; i++) {
            if (B32_DEC[t.data[i]] & 0x80) {
                value_error("Non-base32 digit found");
                goto done;
            }
        }
        value_error("Incorrect padding");
        goto done;
    }
    outlen = (L / 8) * 5 - (p ? 5 - b32_leftover(p) : 0);
    res = new_bytes(outlen, &out);
    if (res == NULL) {
        goto done;
    }
    {
        NOGIL_BEGIN(L);
        rc = b32_dec_core(t.data, slen, p, out);
        NOGIL_END();
    }
    if (rc != 0) {
        Py_CLEAR(res);
        value_error("Non-base32 digit found");
    }
done:
    text_release(&t);
    return res;
}

/* ------------------------------------------------------------------------ */
/* module                                                                    */

static PyMethodDef speedups_methods[] = {
    {"b91_encode", sp_b91_encode, METH_O, b91_encode_doc},
    {"b91_decode", sp_b91_decode, METH_O, b91_decode_doc},
    {"z85b_encode", sp_z85b_encode, METH_O, z85b_encode_doc},
    {"z85b_decode", sp_z85b_decode, METH_O, z85b_decode_doc},
    {"z85p_encode", sp_z85p_encode, METH_O, z85p_encode_doc},
    {"z85p_decode", sp_z85p_decode, METH_O, z85p_decode_doc},
    {"b32_encode", sp_b32_encode, METH_O, b32_encode_doc},
    {"b32_decode", sp_b32_decode, METH_O, b32_decode_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(speedups_doc,
"C accelerator for hivemind_bus_client.protocol.encodings (basE91, Z85B, Z85P, Base32).\n\n"
"Same results as the pure-Python functions; raises ValueError on bad input.");

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "hivemind_bus_client.protocol._speedups",
    speedups_doc,
    0,
    speedups_methods,
    speedups_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
