"""Optional compiled kernels for total-basis products and the degree-by-degree recurrences (CPU, float32/float64).

A jet product over a total basis is a sum over the triples (i, j, k) of the product table: out[k] += a[i] * b[j], for
every unit (element of the tensor). In torch that is a gather of T rows, a multiply and a scatter-add, each pass
writing a (T, units) temporary: memory-bound. These loops do the same arithmetic (the same products, summed in the
same order per output) on blocks of CHUNK units at a time, so every operand stays in cache, with no temporaries — and
run a whole recurrence (sin/cos, tanh/sigmoid, exp) in one call instead of a few torch ops per degree.

The C source below is compiled once with the system C compiler (``cc``/``gcc``, about a second) into a per-user cache
directory and loaded with ctypes. Without a compiler, or with ``HOPE_NATIVE=0`` in the environment, ``lib()`` is None
and the engine uses its torch formulation: results agree to rounding either way.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading

import torch

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#define CHUNK 256

#define DEFINE(T, S) \
/* Every kernel works on the units ub .. ue - 1 of rows of length N (callers split the units across threads). */ \
/* out (W x N, zeroed here) = scale * sum_t w_t a[left_t] b[right_t] -> row outi_t; w == NULL: all 1; w_t == 0: \
   skipped (an infinite factor times 0 would be NaN). */ \
void prod_##S(const T* a, const T* b, T* out, const int64_t* left, const int64_t* right, const int64_t* outi, \
              const double* w, int64_t nt, int64_t W, int64_t N, int64_t ub, int64_t ue, double scale) { \
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
/* Recurrences over the full tables (ordered by output degree, then left degree): for degree d the triples are \
   start[d] .. start[d+1]; the last W_d of them have left degree d (right factor of degree 0). outk: absolute row. \
   kind 0: exp      y_d = [y Eu]_d / d \
   kind 1: sin/cos  s_d = [c Eu]_d / d, c_d = -[s Eu]_d / d   (y = s, g = c) \
   kind 2: riccati  y_d = [g Eu]_d / d, g_d = p1 y_d + p2 [y y]_d  (g = y' = p0 + p1 y + p2 y^2) \
   Eu = rdeg_t * u[right_t] (E: the Euler operator). Row 0 of y (and g) is set by the caller. */ \
void rec_##S(int kind, const T* eu, T* y, T* g, const int64_t* left, const int64_t* right, const int64_t* outk, \
             const double* rdeg, const int64_t* start, const int64_t* off, int64_t K, int64_t N, \
             int64_t ub, int64_t ue, double p1, double p2) { \
  for (int64_t u0 = ub; u0 < ue; u0 += CHUNK) { \
    int64_t len = ue - u0 < CHUNK ? ue - u0 : CHUNK; \
    for (int64_t d = 1; d <= K; d++) { \
      int64_t lo = off[d], hi = off[d + 1], W = hi - lo, t0 = start[d], t1 = start[d + 1] - W; \
      T inv = (T)(1.0 / (double)d); \
      for (int64_t k = lo; k < hi; k++) { memset(y + k * N + u0, 0, len * sizeof(T)); \
        if (kind != 0) memset(g + k * N + u0, 0, len * sizeof(T)); } \
      for (int64_t t = t0; t < t1; t++) { \
        const T* __restrict e = eu + right[t] * N + u0; T* __restrict oy = y + outk[t] * N + u0; T r = (T)rdeg[t]; \
        if (kind == 0) { const T* __restrict x = y + left[t] * N + u0; \
          for (int64_t u = 0; u < len; u++) oy[u] += x[u] * (r * e[u]); } \
        else if (kind == 1) { const T* __restrict c = g + left[t] * N + u0; \
          const T* __restrict s = y + left[t] * N + u0; \
          T* __restrict oc = g + outk[t] * N + u0; \
          for (int64_t u = 0; u < len; u++) { T f = r * e[u]; oy[u] += c[u] * f; oc[u] -= s[u] * f; } } \
        else { const T* __restrict x = g + left[t] * N + u0; \
          for (int64_t u = 0; u < len; u++) oy[u] += x[u] * (r * e[u]); } \
      } \
      for (int64_t k = lo; k < hi; k++) { T* oy = y + k * N + u0; for (int64_t u = 0; u < len; u++) oy[u] *= inv; \
        if (kind == 1) { T* oc = g + k * N + u0; for (int64_t u = 0; u < len; u++) oc[u] *= inv; } } \
      if (kind == 2 && d < K) { \
        for (int64_t t = start[d]; t < start[d + 1]; t++) { \
          const T* __restrict x = y + left[t] * N + u0; const T* __restrict z = y + right[t] * N + u0; \
          T* __restrict og = g + outk[t] * N + u0; \
          for (int64_t u = 0; u < len; u++) og[u] += x[u] * z[u]; } \
        T q = (T)p2, b = (T)p1; \
        for (int64_t k = lo; k < hi; k++) { T* og = g + k * N + u0; const T* x = y + k * N + u0; \
          for (int64_t u = 0; u < len; u++) og[u] = b * x[u] + q * og[u]; } \
      } \
    } \
  } \
} \
/* Univariate families: the pure basis (row of x_v^d: 1 + (d-1) n + v, row 0 shared), and the total basis in one \
   variable (n = 1). Variable v's degree-d coefficient depends only on row 0 and v's lower degrees, so each \
   variable runs its own recurrence to the end while its K rows stay in cache. kinds 0-2 as rec_; kind 3: product \
   y = u * g (all rows, row 0 included). */ \
void uni_##S(int kind, const T* u, T* y, T* g, int64_t n, int64_t K, int64_t N, int64_t ub, int64_t ue, \
             double p1, double p2) { \
  T b = (T)p1, q = (T)p2; \
  for (int64_t u0 = ub; u0 < ue; u0 += CHUNK) { \
    int64_t len = ue - u0 < CHUNK ? ue - u0 : CHUNK; \
    if (kind == 3) { T* __restrict o = y + u0; const T* x = u + u0; const T* z = g + u0; \
      for (int64_t i = 0; i < len; i++) o[i] = x[i] * z[i]; } \
    for (int64_t v = 0; v < n; v++) { \
      for (int64_t d = 1; d <= K; d++) { \
        T* __restrict oy = y + (1 + (d - 1) * n + v) * N + u0; \
        T* __restrict oc = g + (1 + (d - 1) * n + v) * N + u0; \
        T inv = (T)(1.0 / (double)d); \
        if (kind == 3) { \
          for (int64_t i = 0; i < len; i++) oy[i] = 0; \
          for (int64_t p = 0; p <= d; p++) { \
            const T* __restrict x = u + (p ? 1 + (p - 1) * n + v : 0) * N + u0; \
            const T* __restrict z = g + (d - p ? 1 + (d - p - 1) * n + v : 0) * N + u0; \
            for (int64_t i = 0; i < len; i++) oy[i] += x[i] * z[i]; } \
          continue; \
        } \
        for (int64_t i = 0; i < len; i++) oy[i] = 0; \
        if (kind == 1) for (int64_t i = 0; i < len; i++) oc[i] = 0; \
        for (int64_t p = 0; p < d; p++) { \
          int64_t lrow = p ? 1 + (p - 1) * n + v : 0; \
          const T* __restrict e = u + (1 + (d - p - 1) * n + v) * N + u0; T r = (T)(d - p); \
          if (kind == 0) { const T* __restrict x = y + lrow * N + u0; \
            for (int64_t i = 0; i < len; i++) oy[i] += x[i] * (r * e[i]); } \
          else if (kind == 1) { const T* __restrict c = g + lrow * N + u0; const T* __restrict s = y + lrow * N + u0; \
            for (int64_t i = 0; i < len; i++) { T f = r * e[i]; oy[i] += c[i] * f; oc[i] -= s[i] * f; } } \
          else { const T* __restrict x = g + lrow * N + u0; \
            for (int64_t i = 0; i < len; i++) oy[i] += x[i] * (r * e[i]); } \
        } \
        for (int64_t i = 0; i < len; i++) oy[i] *= inv; \
        if (kind == 1) for (int64_t i = 0; i < len; i++) oc[i] *= inv; \
        if (kind == 2 && d < K) { \
          for (int64_t i = 0; i < len; i++) oc[i] = 0; \
          for (int64_t p = 0; p <= d; p++) { \
            const T* __restrict x = y + (p ? 1 + (p - 1) * n + v : 0) * N + u0; \
            const T* __restrict z = y + (d - p ? 1 + (d - p - 1) * n + v : 0) * N + u0; \
            for (int64_t i = 0; i < len; i++) oc[i] += x[i] * z[i]; } \
          for (int64_t i = 0; i < len; i++) oc[i] = b * oy[i] + q * oc[i]; \
        } \
      } \
    } \
  } \
}

DEFINE(double, f64)
DEFINE(float, f32)
"""

_FLAGS = ["-O3", "-shared", "-fPIC", "-fno-math-errno"]
_lock = threading.Lock()
_state: dict = {}


def _cache_dir() -> str:
    root = os.environ.get("HOPE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "hope-engine")
    try:
        os.makedirs(root, exist_ok=True)
        return root
    except OSError:
        return tempfile.gettempdir()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _compile() -> ctypes.CDLL | None:
    if os.environ.get("HOPE_NATIVE", "1") == "0" or sys.platform == "win32":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    flags = list(_FLAGS)
    if platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64"):
        flags.append("-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native")
    key = hashlib.sha256("\n".join([_SOURCE, cc, *flags, platform.machine(), _cpu_flags()]).encode()).hexdigest()[:16]
    path = os.path.join(_cache_dir(), f"hope_kernels_{key}.so")
    if not os.path.exists(path):
        fd, src = tempfile.mkstemp(suffix=".c")
        tmp = path + f".{os.getpid()}.tmp"
        try:
            with os.fdopen(fd, "w") as f:
                f.write(_SOURCE)
            done = subprocess.run([cc, *flags, src, "-o", tmp], capture_output=True, timeout=120)
            if done.returncode != 0:
                flags = [f for f in flags if "native" not in f]  # an older compiler: no -march=native
                done = subprocess.run([cc, *flags, src, "-o", tmp], capture_output=True, timeout=120)
            if done.returncode != 0:
                _state["error"] = done.stderr.decode(errors="replace")[-4000:]
                return None
            os.replace(tmp, path)  # atomic: concurrent processes each build, one copy wins
        except (OSError, subprocess.SubprocessError):
            return None
        finally:
            for p in (src, tmp):
                if os.path.exists(p):
                    os.unlink(p)
    try:
        dll = ctypes.CDLL(path)
    except OSError:
        return None
    p, i64, dbl, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for s in ("f64", "f32"):
        fn = getattr(dll, f"prod_{s}")
        fn.argtypes = [p, p, p, p, p, p, p, i64, i64, i64, i64, i64, dbl]
        fn.restype = None
        fn = getattr(dll, f"rec_{s}")
        fn.argtypes = [cint, p, p, p, p, p, p, p, p, p, i64, i64, i64, i64, dbl, dbl]
        fn.restype = None
        fn = getattr(dll, f"uni_{s}")
        fn.argtypes = [cint, p, p, p, i64, i64, i64, i64, i64, dbl, dbl]
        fn.restype = None
    return dll


def lib() -> ctypes.CDLL | None:
    """The compiled kernels, or None (no compiler, HOPE_NATIVE=0, or a failed build: its log in ``error()``)."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"] = _compile()
    return _state["lib"]


def error() -> str | None:
    """The compiler's output when building the kernels failed."""
    return _state.get("error")


_SUFFIX = {torch.float64: "f64", torch.float32: "f32"}


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels apply: CPU, float64/float32, one dtype, and the library is available."""
    t0 = tensors[0]
    if t0.device.type != "cpu" or t0.dtype not in _SUFFIX:
        return False
    if any(t.device.type != "cpu" or t.dtype != t0.dtype for t in tensors[1:]):
        return False
    return lib() is not None


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _split(n: int, call) -> None:
    """call(ub, ue) over the units 0..n-1. (The kernels take a unit range so that callers could split the units across
    threads; on the 2 shared cores measured, splitting did not pay, so one call does all.)"""
    call(0, n)


def prod(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, left, right, outi, weights, scale: float) -> None:
    """out (W, ...) = scale * sum_t w_t a[left_t] b[right_t] into row outi_t; a, b, out contiguous, same unit count."""
    n = out[0].numel() if out.shape[0] else 0
    fn = getattr(lib(), f"prod_{_SUFFIX[a.dtype]}")
    args = (_ptr(a), _ptr(b), _ptr(out), _ptr(left), _ptr(right), _ptr(outi), _ptr(weights), left.numel(),
            out.shape[0], n)
    _split(n, lambda ub, ue: fn(*args, ub, ue, float(scale)))


def recurrence(kind: int, u: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None, tables, order: int,
               p1: float = 0.0, p2: float = 0.0) -> None:
    """Fill rows 1.. of y (and g) in place from the series u (contiguous); see the C source for the three kinds."""
    left, right, outk, start, off, rdeg = tables
    n = y[0].numel()
    fn = getattr(lib(), f"rec_{_SUFFIX[y.dtype]}")
    args = (kind, _ptr(u), _ptr(y), _ptr(g), _ptr(left), _ptr(right), _ptr(outk), _ptr(rdeg), _ptr(start), _ptr(off),
            order, n)
    _split(n, lambda ub, ue: fn(*args, ub, ue, float(p1), float(p2)))


def univariate(kind: int, u: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None, n: int, order: int,
               p1: float = 0.0, p2: float = 0.0) -> None:
    """A pure basis in n variables (or a total basis in one, n = 1): kinds 0-2 fill rows 1.. of y (and g) as
    ``recurrence`` does; kind 3 writes the product u * g into y."""
    fn = getattr(lib(), f"uni_{_SUFFIX[y.dtype]}")
    units = y[0].numel()
    args = (kind, _ptr(u), _ptr(y), _ptr(g), n, order, units)
    _split(units, lambda ub, ue: fn(*args, ub, ue, float(p1), float(p2)))
