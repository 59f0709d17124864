"""Ops written as other declared ops: ``composite(call, op, *args, **kwargs)``, where ``call(name, *args)`` runs the
declared op ``name`` in whatever path evaluates the composite (the certified path on Taylor models).

Each is an identity of the functions (no rounded constant enters where the op has none), so a path that is sound for
the parts is sound for the whole."""

from __future__ import annotations

import math


def ASINH(call, op, x):
    """asinh x = log(x + sqrt(x^2 + 1))."""
    return call("log", call("add", x, call("sqrt", call("add", call("mul", x, x), 1.0))))


def ACOSH(call, op, x):
    """acosh x = log(x + sqrt((x - 1)(x + 1))), x >= 1."""
    return call("log", call("add", x, call("sqrt", call("mul", call("sub", x, 1.0), call("add", x, 1.0)))))


def ASIN(call, op, x):
    """asin x = atan(x / sqrt((1 - x)(1 + x))), |x| < 1."""
    return call("atan", call("mul", x, call("rsqrt", call("mul", call("rsub", x, 1.0), call("add", x, 1.0)))))


def ACOS(call, op, x):
    """acos x = 2 atan(sqrt((1 - x) / (1 + x))), -1 < x (no rounded pi / 2 enters)."""
    return call("mul", call("atan", call("sqrt", call("div", call("rsub", x, 1.0), call("add", x, 1.0)))), 2.0)


def ERFCX(call, op, x):
    """erfcx x = exp(x^2) erfc(x)."""
    return call("mul", call("exp", call("mul", x, x)), call("erfc", x))


def LOGSIGMOID(call, op, x):
    """log sigmoid(x) = -softplus(-x)."""
    return call("neg", call("softplus", call("neg", x), 1.0, math.inf))  # (smooth: torch's has no threshold)


def LOGSIGMOID_FORWARD(call, op, x):
    """(log sigmoid(x), buffer): the buffer is PyTorch's workspace, never read by the forward computation."""
    return LOGSIGMOID(call, op, x), None


def MISH(call, op, x):
    """mish(x) = x tanh(softplus(x))."""
    return call("mul", x, call("tanh", call("softplus", x, 1.0, math.inf)))


def XLOGY(call, op, x, y):
    """x log(y) (x log1p(y) for xlog1py)."""
    log = "log1p" if "xlog1py" in str(op) else "log"
    return call("mul", x, call(log, y))


def CELU(call, op, x, alpha=1.0):
    """celu(x) = elu(x, alpha, scale 1, input scale 1 / alpha)."""
    return call("elu", x, alpha, 1.0, 1.0 / float(alpha))


def LOGIT(call, op, x, eps=None):
    """logit x = log x - log1p(-x), of x clamped to [eps, 1 - eps] when eps is given (as torch clamps it)."""
    if eps is not None:
        x = call("clamp", x, float(eps), 1.0 - float(eps))
    return call("sub", call("log", x), call("log1p", call("neg", x)))


def SOFTSHRINK(call, op, x, lambd=0.5):
    """softshrink x = x - clamp(x, -lambd, lambd)."""
    return call("sub", x, call("clamp", x, -float(lambd), float(lambd)))


def PRELU(call, op, x, weight):
    """prelu x = relu(x) + weight min(x, 0)."""
    return call("add", call("relu", x), call("mul", call("clamp_max", x, 0.0), weight))
