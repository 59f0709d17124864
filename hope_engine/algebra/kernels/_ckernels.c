/* Compiled jet kernels of hope_engine (see hope_engine/kernels/__init__.py for the maths and native.py for the
   bounds-checked Python interface: every shape, dtype, contiguity and index range is validated there before a
   pointer reaches this file).

   Built by setup.py as the extension module hope_engine.kernels._ckernels (no Python API is used beyond an empty
   module, so one abi3 build serves every CPython >= 3.10) and loaded from the package with ctypes.

   Layout: a jet is W rows of N units (row-major, contiguous); every kernel works on the units ub .. ue - 1, in blocks
   of CHUNK units so that all rows of a block stay in cache. */
#include <stdint.h>
#include <string.h>

#if defined(_WIN32)
#define HOPE_EXPORT __declspec(dllexport)
#else
#define HOPE_EXPORT __attribute__((visibility("default")))
#endif

#define CHUNK 256

/* Recurrence kinds: hope_engine.kernels.native.CKind mirrors these values (checked at load by hope_kernels_abi). */
enum { HOPE_EXP = 0, HOPE_SIN_COS = 1, HOPE_RICCATI = 2, HOPE_DIV = 3, HOPE_PRODUCT = 4 };
#define HOPE_ABI 3

HOPE_EXPORT int64_t hope_kernels_abi(void) { return HOPE_ABI * 100 + HOPE_PRODUCT; }

#define DEFINE(T, S) \
/* out (W x N, zeroed here) = scale * sum_t w_t a[left_t] b[right_t] -> row outi_t; w == NULL: all 1; w_t == 0: \
   skipped (an infinite factor times 0 would be NaN). */ \
HOPE_EXPORT void hope_prod_##S(const T* a, const T* b, T* out, const int64_t* left, const int64_t* right, \
    const int64_t* outi, const double* w, int64_t nt, int64_t W, int64_t N, int64_t ub, int64_t ue, double scale) { \
  for (int64_t u0 = ub; u0 < ue; u0 += CHUNK) { \
    int64_t len = ue - u0 < CHUNK ? ue - u0 : CHUNK; \
    for (int64_t k = 0; k < W; k++) memset(out + k * N + u0, 0, len * sizeof(T)); \
    for (int64_t t = 0; t < nt; t++) { \
      const T* __restrict x = a + left[t] * N + u0; const T* __restrict y = b + right[t] * N + u0; \
      T* __restrict o = out + outi[t] * N + u0; \
      if (w) { T wt = (T)w[t]; if (wt == 0) continue; for (int64_t u = 0; u < len; u++) o[u] += wt * x[u] * y[u]; } \
      else { for (int64_t u = 0; u < len; u++) o[u] += x[u] * y[u]; } \
    } \
    if (scale != 1.0) for (int64_t k = 0; k < W; k++) { T* o = out + k * N + u0; T s = (T)scale; \
      for (int64_t u = 0; u < len; u++) o[u] *= s; } \
  } \
} \
/* Recurrences over the flat tables of a total basis (ordered by output degree, then left degree): for degree d the \
   triples are start[d] .. start[d+1]; the last W_d of them have left degree d (right factor of degree 0) and are \
   skipped. outk: absolute row; off: the basis offsets (K + 2 entries). Row 0 of y (and g) is set by the caller, \
   except RICCATI's g, whose row 0 is written here: p0 + p1 y_0 + p2 y_0^2. \
   EXP      y_d = [y Eu]_d / d                                  (u: Eu = rdeg_t u[right_t]) \
   SIN_COS  s_d = [c Eu]_d / d, c_d = -[s Eu]_d / d             (y = s, g = c) \
   RICCATI  y_d = [g Eu]_d / d, g_d = p1 y_d + p2 [y y]_d       (g = y' = p0 + p1 y + p2 y^2; p0 used for g_0) \
   DIV      y_d = (g_d - [y u]_d) / u_0                         (y = g / u; g is read, not written) */ \
HOPE_EXPORT void hope_rec_##S(int kind, const T* eu, T* y, T* g, const int64_t* left, const int64_t* right, \
    const int64_t* outk, const double* rdeg, const int64_t* start, const int64_t* off, int64_t K, int64_t N, \
    int64_t ub, int64_t ue, double p0, double p1, double p2) { \
  for (int64_t u0 = ub; u0 < ue; u0 += CHUNK) { \
    int64_t len = ue - u0 < CHUNK ? ue - u0 : CHUNK; \
    if (kind == HOPE_RICCATI) { const T* y0 = y + u0; T* g0 = g + u0; T a = (T)p0, b = (T)p1, q = (T)p2; \
      for (int64_t u = 0; u < len; u++) g0[u] = a + b * y0[u] + q * (y0[u] * y0[u]); } \
    for (int64_t d = 1; d <= K; d++) { \
      int64_t lo = off[d], hi = off[d + 1], W = hi - lo, t0 = start[d], t1 = start[d + 1] - W; \
      T inv = (T)(1.0 / (double)d); \
      for (int64_t k = lo; k < hi; k++) { memset(y + k * N + u0, 0, len * sizeof(T)); \
        if (kind == HOPE_SIN_COS || kind == HOPE_RICCATI) memset(g + k * N + u0, 0, len * sizeof(T)); } \
      for (int64_t t = t0; t < t1; t++) { \
        const T* __restrict e = eu + right[t] * N + u0; T* __restrict oy = y + outk[t] * N + u0; T r = (T)rdeg[t]; \
        if (kind == HOPE_EXP) { const T* __restrict x = y + left[t] * N + u0; \
          for (int64_t u = 0; u < len; u++) oy[u] += x[u] * (r * e[u]); } \
        else if (kind == HOPE_SIN_COS) { const T* __restrict c = g + left[t] * N + u0; \
          const T* __restrict s = y + left[t] * N + u0; \
          T* __restrict oc = g + outk[t] * N + u0; \
          for (int64_t u = 0; u < len; u++) { T f = r * e[u]; oy[u] += c[u] * f; oc[u] -= s[u] * f; } } \
        else if (kind == HOPE_RICCATI) { const T* __restrict x = g + left[t] * N + u0; \
          for (int64_t u = 0; u < len; u++) oy[u] += x[u] * (r * e[u]); } \
        else { const T* __restrict x = y + left[t] * N + u0; \
          for (int64_t u = 0; u < len; u++) oy[u] += x[u] * e[u]; } \
      } \
      if (kind == HOPE_DIV) { const T* b0 = eu + u0; \
        for (int64_t k = lo; k < hi; k++) { T* oy = y + k * N + u0; const T* ak = g + k * N + u0; \
          for (int64_t u = 0; u < len; u++) oy[u] = (ak[u] - oy[u]) / b0[u]; } \
        continue; } \
      for (int64_t k = lo; k < hi; k++) { T* oy = y + k * N + u0; for (int64_t u = 0; u < len; u++) oy[u] *= inv; \
        if (kind == HOPE_SIN_COS) { T* oc = g + k * N + u0; for (int64_t u = 0; u < len; u++) oc[u] *= inv; } } \
      if (kind == HOPE_RICCATI && d < K) { \
        /* [y y]_d: the triples (l, r) and (r, l) both occur; each unordered pair is added once, doubled */ \
        for (int64_t t = start[d]; t < start[d + 1]; t++) { \
          if (left[t] > right[t]) continue; \
          const T* __restrict x = y + left[t] * N + u0; const T* __restrict z = y + right[t] * N + u0; \
          T* __restrict og = g + outk[t] * N + u0; \
          if (left[t] == right[t]) { for (int64_t u = 0; u < len; u++) og[u] += x[u] * z[u]; } \
          else { for (int64_t u = 0; u < len; u++) og[u] += 2 * (x[u] * z[u]); } } \
        T q = (T)p2, b = (T)p1; \
        for (int64_t k = lo; k < hi; k++) { T* og = g + k * N + u0; const T* x = y + k * N + u0; \
          for (int64_t u = 0; u < len; u++) og[u] = b * x[u] + q * og[u]; } \
      } \
    } \
  } \
} \
/* Univariate families: the pure basis in n variables (row of x_v^d: 1 + (d-1) n + v, row 0 shared), and the total \
   basis in one variable (n = 1). Variable v's degree-d coefficient depends only on row 0 and v's lower degrees, so \
   each variable runs its own recurrence to the end while its K rows stay in cache. Kinds as hope_rec_ (EXP, SIN_COS, \
   RICCATI with Eu = (d - p) u; DIV with y = g / u), and PRODUCT: y = u * g (all rows, row 0 included). */ \
HOPE_EXPORT void hope_uni_##S(int kind, const T* u, T* y, T* g, int64_t n, int64_t K, int64_t N, int64_t ub, \
    int64_t ue, double p0, double p1, double p2) { \
  T b = (T)p1, q = (T)p2; \
  for (int64_t u0 = ub; u0 < ue; u0 += CHUNK) { \
    int64_t len = ue - u0 < CHUNK ? ue - u0 : CHUNK; \
    if (kind == HOPE_RICCATI) { const T* y0 = y + u0; T* g0 = g + u0; T a = (T)p0; \
      for (int64_t i = 0; i < len; i++) g0[i] = a + b * y0[i] + q * (y0[i] * y0[i]); } \
    if (kind == HOPE_PRODUCT) { T* __restrict o = y + u0; const T* x = u + u0; const T* z = g + u0; \
      for (int64_t i = 0; i < len; i++) o[i] = x[i] * z[i]; } \
    for (int64_t v = 0; v < n; v++) { \
      for (int64_t d = 1; d <= K; d++) { \
        T* __restrict oy = y + (1 + (d - 1) * n + v) * N + u0; \
        T* __restrict oc = g + (1 + (d - 1) * n + v) * N + u0; \
        T inv = (T)(1.0 / (double)d); \
        if (kind == HOPE_PRODUCT) { \
          for (int64_t i = 0; i < len; i++) oy[i] = 0; \
          for (int64_t p = 0; p <= d; p++) { \
            const T* __restrict x = u + (p ? 1 + (p - 1) * n + v : 0) * N + u0; \
            const T* __restrict z = g + (d - p ? 1 + (d - p - 1) * n + v : 0) * N + u0; \
            for (int64_t i = 0; i < len; i++) oy[i] += x[i] * z[i]; } \
          continue; \
        } \
        if (kind == HOPE_DIV) { \
          for (int64_t i = 0; i < len; i++) oy[i] = 0; \
          for (int64_t p = 0; p < d; p++) { \
            const T* __restrict x = y + (p ? 1 + (p - 1) * n + v : 0) * N + u0; \
            const T* __restrict z = u + (1 + (d - p - 1) * n + v) * N + u0; \
            for (int64_t i = 0; i < len; i++) oy[i] += x[i] * z[i]; } \
          for (int64_t i = 0; i < len; i++) oy[i] = (oc[i] - oy[i]) / u[u0 + i]; \
          continue; \
        } \
        for (int64_t i = 0; i < len; i++) oy[i] = 0; \
        if (kind == HOPE_SIN_COS) for (int64_t i = 0; i < len; i++) oc[i] = 0; \
        for (int64_t p = 0; p < d; p++) { \
          int64_t lrow = p ? 1 + (p - 1) * n + v : 0; \
          const T* __restrict e = u + (1 + (d - p - 1) * n + v) * N + u0; T r = (T)(d - p); \
          if (kind == HOPE_EXP) { const T* __restrict x = y + lrow * N + u0; \
            for (int64_t i = 0; i < len; i++) oy[i] += x[i] * (r * e[i]); } \
          else if (kind == HOPE_SIN_COS) { const T* __restrict c = g + lrow * N + u0; \
            const T* __restrict s = y + lrow * N + u0; \
            for (int64_t i = 0; i < len; i++) { T f = r * e[i]; oy[i] += c[i] * f; oc[i] -= s[i] * f; } } \
          else { const T* __restrict x = g + lrow * N + u0; \
            for (int64_t i = 0; i < len; i++) oy[i] += x[i] * (r * e[i]); } \
        } \
        for (int64_t i = 0; i < len; i++) oy[i] *= inv; \
        if (kind == HOPE_SIN_COS) for (int64_t i = 0; i < len; i++) oc[i] *= inv; \
        if (kind == HOPE_RICCATI && d < K) { \
          for (int64_t i = 0; i < len; i++) oc[i] = 0; \
          for (int64_t p = 0; 2 * p <= d; p++) { /* y_p y_(d-p) and y_(d-p) y_p once, doubled */ \
            const T* __restrict x = y + (p ? 1 + (p - 1) * n + v : 0) * N + u0; \
            const T* __restrict z = y + (d - p ? 1 + (d - p - 1) * n + v : 0) * N + u0; \
            if (2 * p == d) { for (int64_t i = 0; i < len; i++) oc[i] += x[i] * z[i]; } \
            else { for (int64_t i = 0; i < len; i++) oc[i] += 2 * (x[i] * z[i]); } } \
          for (int64_t i = 0; i < len; i++) oc[i] = b * oy[i] + q * oc[i]; \
        } \
      } \
    } \
  } \
}

DEFINE(double, f64)
DEFINE(float, f32)

/* An importable (empty) extension module, so that setuptools builds, names and installs this file like any other;
   the kernels above are reached through ctypes. */
#ifndef HOPE_NO_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef hope_module = {PyModuleDef_HEAD_INIT, "_ckernels",
    "Compiled jet kernels of hope_engine (called through ctypes by hope_engine.kernels.native).", -1, NULL};
PyMODINIT_FUNC PyInit__ckernels(void) { return PyModule_Create(&hope_module); }
#endif
