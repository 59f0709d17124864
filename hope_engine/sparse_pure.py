"""Pure-basis expansions of convolutional stacks on receptive-field windows (exact, sparse in the input variables).

``expand(model, x0, order, terms="pure")`` takes this path by itself where ``applies`` holds (heat maps of CNNs).

In the pure basis a unit u's degree-k block holds d^k u / dx_v^k / k! for every input variable v; it is zero unless v
lies in u's receptive field. A ``Window`` keeps, for an activation of shape (N, C, H, W), only the variables of each
unit's window: unit (c, i, j) sees input pixels (cin, i S - P + r, j S - P + q), 0 <= r < R, and its coefficients are
a pure series in those Cin R R window variables. The rules:

- conv2d (constant weights): u'_(o,i,j) = b_o + sum_(c,a,b) w_(o,c,a,b) u_(c, i s - p + a d, j s - p + b d); the window
  of input unit (i s - p + a d) starts a d S pixels into the output unit's window, so R' = R + (k - 1) d S, S' = S s,
  P' = P + p S (grouped convolutions contract each group's channels). Average pooling is the depthwise conv with
  weights 1 / (kh kw); max pooling takes, per output unit, the tap its value picks; batch norm (running statistics)
  scales each channel.
- elementwise analytic f: in a pure basis f(u) only mixes degrees of one variable (f(u)_(k e_v) depends on
  u_0, u_(e_v) .. u_(k e_v)), so the engine's own rules run unchanged on the window series (Cin R R "variables").
- flatten, linear and everything after: the windows are scattered back to the dense pure series (1 + n K rows) and
  the rest of the model runs through the dense engine.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from . import rules, trace
from .arguments import PreparedCall, trace_model
from .basis import make_basis
from .errors import ExpansionError, warn_one_sided
from .polynomial import TaylorPolynomial
from .series import Jet

# modules acting elementwise (each output element a function of the same input element only)
ELEMENTWISE = (nn.Tanh, nn.Sigmoid, nn.SiLU, nn.GELU, nn.Softplus, nn.ELU, nn.CELU, nn.SELU, nn.Mish, nn.Tanhshrink,
               nn.LogSigmoid, nn.ReLU, nn.LeakyReLU, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.ReLU6,
               nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.PReLU)


@dataclass
class Window:
    """Pure series per unit over its receptive-field window: ``c`` is (1 + K Cin Rh Rw, N, C, H, W), row 0 the value,
    rows of degree k the window variables (cin, r, q) row-major; unit (i, j)'s window starts at input pixel
    (i Sh - Ph, j Sw - Pw)."""

    c: torch.Tensor
    order: int
    cin: int
    size: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[int, int]

    @property
    def width(self) -> int:
        """Number of window variables Cin Rh Rw."""
        return self.cin * self.size[0] * self.size[1]

    def blocks(self) -> torch.Tensor:
        """Degree >= 1 coefficients viewed as (K, Cin, Rh, Rw, N, C, H, W)."""
        return self.c[1:].reshape(self.order, self.cin, *self.size, *self.c.shape[1:])


def input_window(x0: torch.Tensor, order: int) -> Window:
    """The input x0 + t as windows of one pixel: unit (c, i, j) has coefficient 1 on its own variable (cin = c)."""
    n, cin, h, w = x0.shape
    c = x0.new_zeros((1 + order * cin, n, cin, h, w))
    c[0] = x0
    if order:
        eye = torch.eye(cin, dtype=x0.dtype, device=x0.device).reshape(cin, 1, cin, 1, 1)
        c[1:1 + cin] = eye
    return Window(c, order, cin, (1, 1), (1, 1), (0, 0))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _taps(win: Window, value: torch.Tensor, weight: torch.Tensor | None, kernel: tuple[int, int],
          stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], scale: float,
          masks: torch.Tensor | None = None, groups: int = 1) -> Window:
    """Windows of u'_(o,i,j) = sum_(a,b) W_ab u_(., i s - p + a d, j s - p + b d) with W_ab = weight[:, :, a, b]
    (a channel contraction, in ``groups`` groups) or, for ``weight`` None, the same channel times ``scale``, or times
    ``masks[a kw + b]`` (N, C, Ho, Wo: which tap each output unit takes, for max pooling)."""
    k = win.order
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    (rh, rw), (jh, jw), (oh, ow) = win.size, win.jump, win.offset
    size = (rh + (kh - 1) * dh * jh, rw + (kw - 1) * dw * jw)
    ho, wo = value.shape[2:]
    out = value.new_zeros((1 + k * win.cin * size[0] * size[1], *value.shape))
    out[0] = value
    if k:
        src = win.blocks()
        dst = out[1:].reshape(k, win.cin, *size, *value.shape)
        if weight is not None:  # every tap's channel contraction in one batched matmul over the unfolded input
            cg, og = src.shape[-3] // groups, weight.shape[0] // groups
            taps = torch.cat([_per_tap(src[..., g * cg:(g + 1) * cg, :, :], weight[g * og:(g + 1) * og], kernel,
                                       stride, padding, dilation, (ho, wo)) for g in range(groups)], -3)
        elif ph or pw:
            src = nn.functional.pad(src, (pw, pw, ph, ph))
        for a in range(kh):
            for b in range(kw):
                ya, xb = a * dh, b * dw
                if weight is None:
                    term = src[..., ya:ya + sh * (ho - 1) + 1:sh, xb:xb + sw * (wo - 1) + 1:sw]
                    term = term * (scale if masks is None else masks[a * kw + b])
                else:
                    term = taps[a * kw + b]
                dst[:, :, ya * jh:ya * jh + rh, xb * jw:xb * jw + rw] += term
    return Window(out, k, win.cin, size, (jh * sh, jw * sw), (oh + ph * jh, ow + pw * jw))


def _per_tap(src: torch.Tensor, weight: torch.Tensor, kernel, stride, padding, dilation,
             out_hw: tuple[int, int]) -> torch.Tensor:
    """T[a kw + b] = sum_c weight[o, c, a, b] src[..., c, i s - p + a d, j s - p + b d], shaped like the window
    blocks (K, Cin, Rh, Rw, N, O, Ho, Wo) per tap (not summed over taps: each lands at its own window offset)."""
    lead, (c, h, w) = src.shape[:-3], src.shape[-3:]
    o, taps = weight.shape[0], kernel[0] * kernel[1]
    cols = nn.functional.unfold(src.reshape(-1, c, h, w), kernel, dilation=dilation, padding=padding, stride=stride)
    cols = cols.reshape(-1, c, taps, out_hw[0] * out_hw[1]).permute(2, 1, 0, 3).reshape(taps, c, -1)
    w = weight.reshape(o, c, taps).permute(2, 0, 1)  # (T, O, C)
    prod = torch.bmm(w, cols).reshape(taps, o, -1, out_hw[0], out_hw[1])  # (T, O, B, Ho, Wo)
    return prod.movedim(1, 2).reshape(taps, *lead, o, *out_hw)


def conv2d(win: Window, module: nn.Conv2d) -> Window:
    """Conv2d with constant weights (zero padding, any groups): see the module docstring for the window bookkeeping."""
    with torch.no_grad():
        value = module(win.c[0])
    return _taps(win, value, module.weight.detach(), _pair(module.kernel_size), _pair(module.stride),
                 _conv_padding(module), _pair(module.dilation), 1.0, groups=module.groups)


def _conv_padding(module: nn.Conv2d) -> tuple[int, int] | None:
    """(ph, pw) of a conv, "valid" and "same" included; None for padding that is not the same on both sides (an even
    kernel's "same")."""
    if not isinstance(module.padding, str):
        return _pair(module.padding)
    left_w, right_w, top_h, bottom_h = module._reversed_padding_repeated_twice
    return (top_h, left_w) if (left_w, top_h) == (right_w, bottom_h) else None


def max_pool2d(win: Window, module: nn.MaxPool2d, kinks: dict) -> Window:
    """MaxPool2d: each output unit is the input unit it picks (the value's argmax, padding never picked), so its
    series is that unit's, shifted to the tap's place in the output window; ties are kinks (as in the dense rule)."""
    kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
    padding, dilation = _pair(module.padding), _pair(module.dilation)
    v = win.c[0]
    with torch.no_grad():
        value, idx = nn.functional.max_pool2d(v, kernel, stride, padding, dilation, return_indices=True)
        masked = v.flatten(2).scatter(-1, idx.flatten(2), float("-inf")).reshape(v.shape)
        second = nn.functional.max_pool2d(masked, kernel, stride, padding, dilation)
    ties = int((second == value).sum())
    if ties:
        kinks["max_pool"] = kinks.get("max_pool", 0) + ties
    ho, wo = value.shape[2:]
    dev = v.device
    rows = torch.div(idx, v.shape[3], rounding_mode="floor") - (
        torch.arange(ho, device=dev) * stride[0] - padding[0])[:, None]
    cols = idx % v.shape[3] - (torch.arange(wo, device=dev) * stride[1] - padding[1])
    tap = (rows // dilation[0]) * kernel[1] + cols // dilation[1]
    masks = (tap == torch.arange(kernel[0] * kernel[1], device=dev).reshape(-1, 1, 1, 1, 1)).to(v.dtype)
    return _taps(win, value, None, kernel, stride, padding, dilation, 1.0, masks=masks)


def batch_norm2d(win: Window, module: nn.BatchNorm2d) -> Window:
    """BatchNorm2d on its running statistics (eval mode): u' = (u - mean_c) w_c / sqrt(var_c + eps) + b_c, so every
    coefficient of channel c is scaled by w_c / sqrt(var_c + eps)."""
    var = module.running_var.detach()
    gain = torch.rsqrt(var + module.eps)
    if module.weight is not None:
        gain = gain * module.weight.detach()
    with torch.no_grad():
        value = nn.functional.batch_norm(win.c[0], module.running_mean, module.running_var, module.weight,
                                         module.bias, False, 0.0, module.eps)
    c = win.c * gain.to(win.c.dtype).reshape(-1, 1, 1)
    c[0] = value
    return Window(c, win.order, win.cin, win.size, win.jump, win.offset)


def avg_pool2d(win: Window, module: nn.AvgPool2d) -> Window:
    """AvgPool2d: the depthwise conv with weights 1 / (kh kw) (no padding or ceil mode)."""
    kernel = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    with torch.no_grad():
        value = module(win.c[0])
    divisor = module.divisor_override or kernel[0] * kernel[1]
    return _taps(win, value, None, kernel, stride, (0, 0), (1, 1), 1.0 / divisor)


def elementwise(win: Window, module: nn.Module, kinks: dict) -> Window:
    """An elementwise module through the engine's rules, the window variables standing in for the input's."""
    traced = trace_model(module, win.c[0])
    trace.check_supported(traced)
    ctx = rules.Context(make_basis(win.width, win.order, "pure"))
    with torch.no_grad():
        out = _single(trace.run(traced, Jet(win.c, ctx.basis), ctx))
    for key, count in ctx.kinks.items():
        kinks[key] = kinks.get(key, 0) + count
    c = out.c if isinstance(out, Jet) else _constant(out, win.c.shape[0])
    return Window(c, win.order, win.cin, win.size, win.jump, win.offset)


def _single(out):
    """The one tensor or jet a traced graph returns (its output structure holds exactly one)."""
    leaves = [o for o in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(o, (Jet, torch.Tensor))]
    if len(leaves) != 1:
        raise ExpansionError(f"the model returns {len(leaves)} tensors; expand a function that returns one")
    return leaves[0]


def _constant(value: torch.Tensor, rows: int) -> torch.Tensor:
    """A series with the given value and ``rows - 1`` zero coefficients."""
    c = value.new_zeros((rows, *value.shape))
    c[0] = value
    return c


def densify(win: Window, height: int, width: int) -> torch.Tensor:
    """The dense pure coefficients (1 + n K, N, C, H, W), n = Cin height width: each unit's window scattered to the
    rows of its pixels (pixels of the window outside the input, from zero padding, are dropped)."""
    k = win.order
    n_in = win.cin * height * width
    shape = win.c.shape[1:]
    dense = win.c.new_zeros((1 + k * n_in, *shape))
    dense[0] = win.c[0]
    if not k:
        return dense
    _, _, h, w = shape
    (rh, rw), (sh, sw), (ph, pw) = win.size, win.jump, win.offset
    ch, cw = max((h - 1) * sh + rh, ph + height), max((w - 1) * sw + rw, pw + width)
    canvas = win.c.new_zeros((k, win.cin, ch, cw, *shape))
    dev = win.c.device
    ys = (torch.arange(rh, device=dev)[:, None, None, None] + sh * torch.arange(h, device=dev)[None, None, :, None])
    xs = (torch.arange(rw, device=dev)[None, :, None, None] + sw * torch.arange(w, device=dev)[None, None, None, :])
    ii = torch.arange(h, device=dev)[None, None, :, None]
    jj = torch.arange(w, device=dev)[None, None, None, :]
    # advanced indices (Rh, Rw, H, W) split by slices: the assigned value is laid out (Rh, Rw, H, W, K, Cin, N, C)
    canvas[:, :, ys, xs, :, :, ii, jj] = win.blocks().permute(2, 3, 6, 7, 0, 1, 4, 5)
    dense[1:].view(k, win.cin, height, width, *shape).copy_(canvas[:, :, ph:ph + height, pw:pw + width])
    return dense


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros" and _conv_padding(module) is not None
    if isinstance(module, nn.AvgPool2d):
        return _pair(module.padding) == (0, 0) and not module.ceil_mode
    if isinstance(module, nn.MaxPool2d):
        return not module.ceil_mode and not module.return_indices
    if isinstance(module, nn.BatchNorm2d):  # running statistics (without them eval mode normalises by the batch)
        return module.running_mean is not None and module.running_var is not None
    return isinstance(module, ELEMENTWISE)


def _layers(model: nn.Module) -> list[nn.Module] | None:
    """The modules of a (nested) nn.Sequential in call order; None for any other model."""
    if not isinstance(model, nn.Sequential):
        return None
    out: list[nn.Module] = []
    for m in model:
        inner = _layers(m) if isinstance(m, nn.Sequential) else [m]
        if inner is None:
            return None
        out.extend(inner)
    return out


def windowed_prefix(model) -> int:
    """How many leading modules of ``model`` (an nn.Sequential) the window rules cover; 0 when none or not a
    Sequential (then ``expand_pure_windows`` is the dense expansion)."""
    layers = _layers(model)
    if layers is None:
        return 0
    count = 0
    for m in layers:
        if not _supported(m):
            break
        count += 1
    return count if any(isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)) for m in layers[:count]) else 0


_TAILS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tail(model: nn.Module, rest: list[nn.Module]) -> nn.Sequential:
    """The modules after the windowed stack as one Sequential, kept per model (so its traced graph is cached too)."""
    held = _TAILS.get(model)
    if held is None or len(held) != len(rest) or any(a is not b for a, b in zip(held, rest)):
        held = _TAILS[model] = nn.Sequential(*rest)
    return held


_WINDOW_TYPES = frozenset({nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.BatchNorm2d, *ELEMENTWISE})


def applies(call: PreparedCall, terms: str, order: int) -> bool:
    """Whether ``expand(terms="pure")`` runs on windows: a plain ``nn.Sequential`` (nested ones too) whose leading
    stack the window rules cover, a 4-D batch point, every pixel a variable, and nothing that changes what a module
    computes behind its definition (a subclass, a hook, a parametrization): the window rules read the layers'
    definitions, not a traced graph."""
    x0 = call.x0
    if terms != "pure" or order < 1 or not call.batched or x0.dim() != 4:
        return False
    n = x0[0].numel()
    if call.variables.numel() != n or not torch.equal(call.variables.cpu(), torch.arange(n)):
        return False
    model = call.model
    if not isinstance(model, nn.Sequential) or windowed_prefix(model) == 0:
        return False
    hooks = nn.modules.module
    if any(getattr(hooks, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                    "_global_forward_hooks_with_kwargs")):
        return False
    count = windowed_prefix(model)
    for m in model.modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        if isinstance(m, nn.Sequential) and type(m) is not nn.Sequential:
            return False
    return all(type(m) in _WINDOW_TYPES for m in (_layers(model) or [])[:count])


def expand_windows(call: PreparedCall, order: int, stacklevel: int = 2) -> TaylorPolynomial:
    """The pure expansion of ``call`` (``applies`` holds) on windows, then densely after the leading stack."""
    x0, var_index, n = call.x0, call.variables, call.n
    layers = _layers(call.model) or []
    count = windowed_prefix(call.model)
    kinks: dict = {}
    win = input_window(x0, order)
    for m in layers[:count]:
        if isinstance(m, nn.Conv2d):
            win = conv2d(win, m)
        elif isinstance(m, nn.AvgPool2d):
            win = avg_pool2d(win, m)
        elif isinstance(m, nn.MaxPool2d):
            win = max_pool2d(win, m, kinks)
        elif isinstance(m, nn.BatchNorm2d):
            win = batch_norm2d(win, m)
        else:
            win = elementwise(win, m, kinks)
    basis = make_basis(n, order, "pure")
    c = densify(win, x0.shape[2], x0.shape[3])
    rest = layers[count:]
    if rest:
        tail = _tail(call.model, rest)
        traced = trace_model(tail, c[0])
        trace.check_supported(traced)
        ctx = rules.Context(basis)
        with torch.no_grad():
            out = _single(trace.run(traced, Jet(c, basis), ctx))
        for key, value in ctx.kinks.items():
            kinks[key] = kinks.get(key, 0) + value
        c = out.c if isinstance(out, Jet) else _constant(out, basis.size)
    warn_one_sided(kinks, stacklevel=stacklevel + 1)
    poly = TaylorPolynomial(basis, c, x0, var_index, True, names=call.names, method="exact")
    if call.output is None:
        return poly
    try:
        return poly.select(call.output)
    except IndexError as e:
        raise ExpansionError(str(e)) from None


def expand_pure_windows(model, x0, order: int = 6, *, output=None, names=None) -> TaylorPolynomial:
    """``expand(model, x0, order, terms="pure")``, which runs on windows by itself where ``applies`` holds (kept for
    callers of version 0.1's opt-in name)."""
    from .expand import expand

    return expand(model, x0, order, terms="pure", output=output, names=names)
