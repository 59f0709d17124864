"""Pure-basis expansions of convolutional networks on receptive-field windows (exact, sparse in the input variables).

``expand(model, x0, order, terms="pure")`` takes this path by itself where ``applies`` holds (heat maps of CNNs): the
traced graph's leading convolution, pooling and pointwise nodes run on windows, the rest on the dense interpreter.
Working on the graph, not on modules, the windows see what forward computes (hooks, subclasses, functional calls).

In the pure basis a unit u's degree-k block holds d^k u / dx_v^k / k! for every input variable v; it is zero unless v
lies in u's receptive field. A ``Window`` keeps, for an activation of shape (N, C, H, W), only the variables of each
unit's window: unit (c, i, j) sees input pixels (cin, i S - P + r, j S - P + q), 0 <= r < R, and its coefficients are
a pure series in those Cin R R window variables. The rules:

- convolution (constant weights): u'_(o,i,j) = b_o + sum_(c,a,b) w_(o,c,a,b) u_(c, i s - p + a d, j s - p + b d); the
  window of input unit (i s - p + a d) starts a d S pixels into the output unit's window, so R' = R + (k - 1) d S,
  S' = S s, P' = P + p S (grouped convolutions contract each group's channels). Average pooling is the depthwise conv
  with weights 1 / (kh kw) (or 1 / the taps inside the map, for padding not counted); max pooling takes, per output
  unit, the tap its value picks.
- pointwise ops (activations, batch norm's affine steps, sums and products of windows, embedded first on the
  smallest window holding each unit's windows: residual shortcuts): in a pure basis f(u) only mixes degrees of one
  variable (f(u)_(k e_v) depends on u_0, u_(e_v) .. u_(k e_v)), so the engine's own rules run unchanged on the window
  series (Cin R R "variables").
- reflection / replication padding: output unit i copies input unit src(i), whose window starts (src(i) - i) S
  pixels off the uniform one: one 0/1 "tap" per shift, as max pooling picks one.
- sequences (N, C, L): a map one pixel high (``as_2d``), 1-d convolutions as 2-d ones with (1, k) kernels; 1-d
  pooling records as 2-d pooling between an unsqueeze and a squeeze, which switch between the two views.
- the first other node (a flatten, a linear layer...): the windows it and later nodes read are scattered back to the
  dense pure series (1 + n K rows) and the interpreter goes on from there (``program.run(..., resume_at=node)``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn

from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.jet import Jet
from hope_engine.algebra.polynomial import TaylorPolynomial
from hope_engine.capture import trace
from hope_engine.capture.arguments import PreparedCall
from hope_engine.errors import ExpansionError, warn_one_sided
from hope_engine.ops import rules, selections
from hope_engine.run import program

aten = torch.ops.aten


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
    """The input x0 + t as windows of one pixel: unit (c, i, j) has coefficient 1 on its own variable (cin = c). A
    sequence (N, C, L) gives windows of one sample (a map one pixel high, see ``as_2d``)."""
    cin = x0.shape[1]
    c = x0.new_zeros((1 + order * cin, *x0.shape))
    c[0] = x0
    if order:
        eye = torch.eye(cin, dtype=x0.dtype, device=x0.device).reshape(cin, 1, cin, *([1] * (x0.dim() - 2)))
        c[1:1 + cin] = eye
    return Window(c, order, cin, (1, 1), (1, 1), (0, 0))


def as_2d(win: Window) -> Window:
    """A sequence's windows (value (N, C, L)) as those of a map one pixel high (N, C, 1, L): the geometry already is
    (1 high, R wide), so this is a view; maps come back unchanged."""
    if win.c.dim() == 5:
        return win
    return Window(win.c.unsqueeze(-2), win.order, win.cin, win.size, win.jump, win.offset)


def as_1d(win: Window) -> Window:
    """The inverse of ``as_2d``: a map one pixel high (with windows one pixel high) as a sequence."""
    return Window(win.c.squeeze(-2), win.order, win.cin, win.size, win.jump, win.offset)


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
        else:  # zero padding, and past the far edge the taps a ceil-mode pooling's last windows reach
            eh = max(0, (ho - 1) * sh + (kh - 1) * dh + 1 - src.shape[-2] - 2 * ph)
            ew = max(0, (wo - 1) * sw + (kw - 1) * dw + 1 - src.shape[-1] - 2 * pw)
            if ph or pw or eh or ew:
                src = nn.functional.pad(src, (pw, pw + ew, ph, ph + eh))
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


def conv2d(win: Window, value: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> Window:
    """Convolution with constant weights (zero padding, any groups); ``value`` its output at the point."""
    return _taps(win, value, weight, tuple(weight.shape[2:]), _pair(stride), _pair(padding), _pair(dilation), 1.0,
                 groups=groups)


def pad2d(win: Window, value: torch.Tensor, pads) -> Window:
    """Constant padding (or cropping, for negative pads) of the last two dims: output unit (i, j) is input unit
    (i - top, j - left), so its window starts top S pixels earlier: P' = P + top S; the added units are constants."""
    left, right, top, bottom = pads if len(pads) == 4 else (*pads, 0, 0)
    c = nn.functional.pad(win.c, (left, right, top, bottom) if len(pads) == 4 else (left, right))
    c[0] = value
    return Window(c, win.order, win.cin, win.size, win.jump,
                  (win.offset[0] + top * win.jump[0], win.offset[1] + left * win.jump[1]))


def index_pad2d(win: Window, value: torch.Tensor, pads, mode: str) -> Window:
    """Reflection or replication padding: output unit (i, j) is input unit (src(i), src(j)), whose window starts
    (src(i) - i) S pixels from where a uniform window would. As max pooling picks one tap per unit, each output unit
    takes the one "tap" of its shift (a 0/1 weight), on a window grown by the largest shifts either way."""
    left, right, top, bottom = pads if len(pads) == 4 else (*pads, 0, 0)
    shifts = []
    for n, lo, hi in ((win.c.shape[-2], top, bottom), (win.c.shape[-1], left, right)):
        out = torch.arange(n + lo + hi, device=value.device)
        src = out - lo
        src = (torch.where(src.abs() >= n, 2 * (n - 1) - src.abs(), src.abs()) if mode == "reflect"
               else src.clamp(0, n - 1))
        shifts.append(src - out)
    padding = tuple(int(-d.min()) for d in shifts)
    kernel = tuple(int(d.max()) + p + 1 for d, p in zip(shifts, padding))
    rows = (shifts[0] + padding[0])[:, None] == torch.arange(kernel[0], device=value.device)  # (Ho, kh)
    cols = (shifts[1] + padding[1])[:, None] == torch.arange(kernel[1], device=value.device)  # (Wo, kw)
    masks = (rows.T[:, None, :, None] & cols.T[None, :, None, :]).reshape(kernel[0] * kernel[1], 1, 1,
                                                                          *value.shape[-2:])
    return _taps(win, value, None, kernel, (1, 1), padding, (1, 1), 1.0, masks=masks.to(value.dtype))


def avg_pool2d(win: Window, value: torch.Tensor, kernel, stride, padding, include_pad: bool,
               divisor: int | None, ceil_mode: bool = False) -> Window:
    """Average pooling: the depthwise conv with weights 1 / divisor (kh kw, or ``divisor``); where the divisor varies
    by unit (padding that is not counted, a ceil-mode window cut by the far edge) each output unit divides by its own
    count, as torch does: the window's extent within the padded map (include_pad) or within the map."""
    kernel, stride, padding = _pair(kernel), _pair(stride), _pair(padding)
    if divisor or (not ceil_mode and (include_pad or not any(padding))):
        return _taps(win, value, None, kernel, stride, padding, (1, 1), 1.0 / (divisor or kernel[0] * kernel[1]))
    counts = []
    for size, k, s, p, out in zip(win.c.shape[-2:], kernel, stride, padding, value.shape[-2:]):
        start = torch.arange(out, device=value.device) * s - p
        end = torch.clamp(start + k, max=size + p)
        counts.append(end - start if include_pad else torch.clamp(end, max=size) - torch.clamp(start, min=0))
    weights = 1.0 / (counts[0][:, None] * counts[1][None, :]).to(value.dtype)
    masks = weights.expand(kernel[0] * kernel[1], 1, 1, *weights.shape)
    return _taps(win, value, None, kernel, stride, padding, (1, 1), 1.0, masks=masks)


def max_pool2d(win: Window, value: torch.Tensor, idx: torch.Tensor, kernel, stride, padding, dilation,
               kinks: dict, ceil_mode: bool = False) -> Window:
    """Max pooling: each output unit is the input unit it picks (``idx``, flat in the input plane; padding is never
    picked), so its series is that unit's, shifted to the tap's place in the output window. Ties are kinks (as in the
    dense rule)."""
    kernel, stride, padding, dilation = _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
    v = win.c[0]
    ties = selections.pool_ties(v, value, idx, 2, _MAX, (kernel, stride, padding, dilation, ceil_mode))
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


def _constant(value: torch.Tensor, rows: int) -> torch.Tensor:
    """A series with the given value and ``rows - 1`` zero coefficients."""
    c = value.new_zeros((rows, *value.shape))
    c[0] = value
    return c


def densify(win: Window, height: int, width: int) -> torch.Tensor:
    """The dense pure coefficients (1 + n K, N, C, H, W), n = Cin height width: each unit's window scattered to the
    rows of its pixels (pixels of the window outside the input, from zero padding, are dropped). A sequence's
    (N, C, L) windows give (1 + n K, N, C, L), n = Cin width (height 1)."""
    if win.c.dim() == 4:
        return densify(as_2d(win), height, width).squeeze(-2)
    k = win.order
    n_in = win.cin * height * width
    shape = win.c.shape[1:]
    dense = win.c.new_zeros((1 + k * n_in, *shape))
    dense[0] = win.c[0]
    if not k:
        return dense
    _, _, h, w = shape
    (rh, rw), (sh, sw), (ph, pw) = win.size, win.jump, win.offset
    mh, mw = max(0, -ph), max(0, -pw)  # a cropped map's windows start inside the input: a margin keeps indices >= 0
    ph, pw = ph + mh, pw + mw
    ch, cw = max((h - 1) * sh + rh + mh, ph + height), max((w - 1) * sw + rw + mw, pw + width)
    canvas = win.c.new_zeros((k, win.cin, ch, cw, *shape))
    dev = win.c.device
    ys = (mh + torch.arange(rh, device=dev)[:, None, None, None]
          + sh * torch.arange(h, device=dev)[None, None, :, None])
    xs = (mw + torch.arange(rw, device=dev)[None, :, None, None]
          + sw * torch.arange(w, device=dev)[None, None, None, :])
    ii = torch.arange(h, device=dev)[None, None, :, None]
    jj = torch.arange(w, device=dev)[None, None, None, :]
    # advanced indices (Rh, Rw, H, W) split by slices: the assigned value is laid out (Rh, Rw, H, W, K, Cin, N, C)
    canvas[:, :, ys, xs, :, :, ii, jj] = win.blocks().permute(2, 3, 6, 7, 0, 1, 4, 5)
    dense[1:].view(k, win.cin, height, width, *shape).copy_(canvas[:, :, ph:ph + height, pw:pw + width])
    return dense


_CONV, _AVG, _MAX = aten.convolution.default, aten.avg_pool2d.default, aten.max_pool2d_with_indices.default
_PAD, _CAT = aten.constant_pad_nd.default, aten.cat.default
_UNSQUEEZE, _SQUEEZE = aten.unsqueeze.default, aten.squeeze.dim
_INDEX_PADS = {aten.reflection_pad2d.default: "reflect", aten.replication_pad2d.default: "replicate",
               aten.reflection_pad1d.default: "reflect", aten.replication_pad1d.default: "replicate"}


def _embed(win: Window, size: tuple[int, int], offset: tuple[int, int]) -> Window:
    """The same series on a window (size, offset) that contains win's (same jump): zero for the added pixels."""
    if (win.size, win.offset) == (size, offset):
        return win
    dy, dx = offset[0] - win.offset[0], offset[1] - win.offset[1]  # win's window starts (dy, dx) into the new one
    shape = win.c.shape[1:]
    out = win.c.new_zeros((1 + win.order * win.cin * size[0] * size[1], *shape))
    out[0] = win.c[0]
    out[1:].view(win.order, win.cin, *size, *shape)[:, :, dy:dy + win.size[0], dx:dx + win.size[1]] = win.blocks()
    return Window(out, win.order, win.cin, size, win.jump, offset)


def _common_geometry(windows: list[Window], along_channels: bool = False) -> list[Window] | None:
    """The windows on one geometry, the smallest containing each unit's windows (a residual sum of a conv branch and
    its shortcut); None where the units do not line up (another jump or value shape; ``along_channels``: the channel
    counts may differ, for a concatenation)."""
    first = windows[0]
    shape = (lambda w: w.c.shape[1:2] + w.c.shape[3:]) if along_channels else (lambda w: w.c.shape[1:])
    if any(w.cin != first.cin or w.jump != first.jump or shape(w) != shape(first) for w in windows):
        return None
    offset = tuple(max(w.offset[i] for w in windows) for i in range(2))
    size = tuple(max(w.size[i] - w.offset[i] for w in windows) + offset[i] for i in range(2))
    return [_embed(w, size, offset) for w in windows]


def _area(window) -> int:
    """Pixels per unit window (of a window, or of a max pooling's (window, indices))."""
    win = window[0] if isinstance(window, tuple) else window
    return win.size[0] * win.size[1]


def _defaults(args: tuple, defaults: list) -> list:
    """A pooling op's (input, kernel, *rest) with the schema's defaults filled in for the omitted trailing arguments."""
    return list(args) + defaults[len(args) - 2:]


def _window_step(node, wins: dict, env: dict, order: int, contexts: dict, kinks: dict):
    """The window (or plain value) of one graph node whose input-dependent arguments are all windows; None where the
    window rules do not cover it (the dense interpreter takes over there)."""
    target, args, kwargs = node.target, node.args, node.kwargs

    def val(a):
        if isinstance(a, torch.fx.Node):
            return wins[a].c[0] if a in wins else env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(val(e) for e in a)
        return a

    if kwargs and target in (_CONV, _AVG, _MAX):
        return None
    if target is _CONV:
        x, weight, bias, stride, padding, dilation, transposed, _, groups = args
        w = val(weight)
        if (x not in wins or any(isinstance(a, torch.fx.Node) and a in wins for a in (weight, bias))
                or transposed or w.dim() != wins[x].c.dim() - 1 or w.dim() not in (3, 4)):
            return None
        value = target(*val(args))
        if w.dim() == 3:  # a 1-d convolution: the 2-d one on a map one pixel high
            return "window", as_1d(conv2d(as_2d(wins[x]), value.unsqueeze(-2), w.unsqueeze(-2), (1, stride[0]),
                                          (0, padding[0]), (1, dilation[0]), groups))
        return "window", conv2d(wins[x], value, w, stride, padding, dilation, groups)
    if target in (_UNSQUEEZE, _SQUEEZE):  # 1-d pooling: on the sequence seen as a map one pixel high
        x = args[0]
        if x not in wins or kwargs or len(args) != 2:
            return None
        win, dim = wins[x], args[1]
        if target is _UNSQUEEZE and win.c.dim() == 4 and dim in (-2, 2):
            return "window", as_2d(win)
        if target is _SQUEEZE and win.c.dim() == 5 and dim in (-2, 2) and win.c.shape[-2] == 1 and win.size[0] == 1:
            return "window", as_1d(win)
        return None
    if target is _AVG:
        x, kernel, stride, padding, ceil_mode, include_pad, divisor = _defaults(args, [[], 0, False, True, None])
        if x not in wins:
            return None
        return "window", avg_pool2d(wins[x], target(*val(args)), kernel, stride or kernel, padding, include_pad,
                                    divisor, ceil_mode)
    if target is _MAX:
        x, kernel, stride, padding, dilation, ceil_mode = _defaults(args, [[], 0, 1, False])
        if x not in wins:
            return None
        value, idx = target(*val(args))
        kernel = _pair(kernel)
        return "pool", (max_pool2d(wins[x], value, idx, kernel, stride or kernel, padding, dilation, kinks,
                                   ceil_mode), idx)
    if target is _PAD:
        x, pads = args[0], args[1]  # the fill value only reaches the value row (target computes it)
        if x not in wins or len(pads) != 2 * (wins[x].c.dim() - 3) or kwargs:
            return None
        return "window", pad2d(wins[x], target(*val(args)), pads)
    if target in _INDEX_PADS:
        x, pads = args[0], args[1]
        if x not in wins or kwargs or len(pads) != 2 * (wins[x].c.dim() - 3):
            return None
        mode = _INDEX_PADS[target]
        value = target(*val(args))
        if value.dim() == 3:
            return "window", as_1d(index_pad2d(as_2d(wins[x]), value.unsqueeze(-2), pads, mode))
        return "window", index_pad2d(wins[x], value, pads, mode)
    if target is _CAT:
        parts, dim = args[0], (args[1] if len(args) > 1 else 0)
        if kwargs or not all(isinstance(p, torch.fx.Node) and p in wins for p in parts):
            return None
        aligned = _common_geometry([wins[p] for p in parts], along_channels=True)
        if aligned is None or dim % (aligned[0].c.dim() - 1) != 1:  # channels of an (N, C, H, W) map only
            return None
        first = aligned[0]
        return "window", Window(torch.cat([w.c for w in aligned], 2), order, first.cin, first.size, first.jump,
                                first.offset)
    if torch.Tag.pointwise not in getattr(target, "tags", ()) or rules.lookup(target) is None:
        return None
    windows = [a for a in node.all_input_nodes if a in wins]
    aligned = _common_geometry([wins[a] for a in windows])
    if aligned is None:
        return None
    aligned = dict(zip(windows, aligned))
    first = aligned[windows[0]]
    basis = make_basis(first.width, order, "pure")
    ctx = contexts.setdefault(first.width, rules.Context(basis))

    def jet(a):
        if isinstance(a, torch.fx.Node):
            return Jet(aligned[a].c, basis) if a in wins else env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(jet(e) for e in a)
        return a

    out = rules.lookup(target)(ctx, target, *jet(args), **{k: jet(v) for k, v in kwargs.items()})
    if not isinstance(out, Jet):
        return "value", out
    if out.c.shape != first.c.shape:  # broadcast to another shape by a constant: not one window per unit any more
        return None
    return "window", Window(out.c, order, first.cin, first.size, first.jump, first.offset)


def windowed_nodes(traced) -> int:
    """How many convolution and pooling nodes lead the graph before its first node the window rules do not cover
    (structure only; 0: no window path)."""
    return trace.derived(traced, "windowed_convolutions", lambda: _count_windowed(traced))


def _count_windowed(traced) -> int:
    depends = trace.jet_nodes(traced)
    placeholders = [n for n in traced.graph_module.graph.nodes if n.op == "placeholder"]
    windowed, count = {placeholders[traced.input_index]}, 0
    for node in traced.graph_module.graph.nodes:
        if node.op != "call_function" or node not in depends:
            continue
        if not all(a in windowed for a in node.all_input_nodes if a in depends):
            break
        target = node.target
        if target in (_CONV, _AVG, _MAX):
            count += 1
        elif target in (_PAD, _CAT, _UNSQUEEZE, _SQUEEZE, *_INDEX_PADS):
            pass
        elif target is operator.getitem:
            if getattr(node.args[0], "target", None) is not _MAX or node.args[1] != 0:
                break
        elif torch.Tag.pointwise not in getattr(target, "tags", ()) or rules.lookup(target) is None:
            break
        windowed.add(node)
    return count


def applies(call: PreparedCall, traced, terms: str, order: int) -> bool:
    """Whether ``expand(terms="pure")`` runs on windows: a batch of images (N, C, H, W) or sequences (N, C, L), every
    pixel a variable, and a graph that starts with convolutions or pooling (with pointwise ops between them) before
    its first other op."""
    x0 = call.x0
    if terms != "pure" or order < 1 or not call.batched or x0.dim() not in (3, 4):
        return False
    n = x0[0].numel()
    if call.variables.numel() != n or not torch.equal(call.variables.cpu(), torch.arange(n)):
        return False
    return windowed_nodes(traced) > 0


def expand_windows(call: PreparedCall, traced, order: int, stacklevel: int = 2) -> TaylorPolynomial:
    """The pure expansion of ``call`` (``applies`` holds): the graph's leading convolution / pooling / pointwise
    nodes on windows, then, from the first other node, the dense interpreter on the densified windows."""
    x0, var_index, n = call.x0, call.variables, call.n
    graph = traced.graph_module.graph
    nodes = list(graph.nodes)
    placeholders = [nd for nd in nodes if nd.op == "placeholder"]
    state = traced.state_values()
    wins: dict = {}
    env: dict = {}
    kinks: dict = {}
    contexts: dict = {}
    pools: dict = {}
    done: set = set()
    height, width = (1, x0.shape[2]) if x0.dim() == 3 else x0.shape[2:]
    plane = height * width
    stop = None
    with torch.no_grad():
        for i, node in enumerate(placeholders):
            if i == traced.input_index:
                wins[node] = input_window(x0, order)
            else:
                env[node] = state[i]
            done.add(node)
        for node in nodes:
            if node.op == "placeholder":
                continue
            if node.op == "get_attr":
                env[node] = getattr(traced.graph_module, node.target)
                done.add(node)
                continue
            if node.op != "call_function":
                stop = node
                break
            if node.target is operator.getitem and node.args[0] in pools:  # (window, indices) of a max pooling
                window, idx = pools[node.args[0]]
                if node.args[1] == 0:
                    wins[node] = window
                else:
                    env[node] = idx
                done.add(node)
                continue
            if not any(a in wins for a in node.all_input_nodes):
                env[node] = node.target(*torch.fx.node.map_arg(node.args, lambda a: env[a]),
                                        **torch.fx.node.map_arg(node.kwargs, lambda a: env[a]))
                done.add(node)
                continue
            step = _window_step(node, wins, env, order, contexts, kinks)
            grown = step is not None and step[0] in ("window", "pool") and _area(step[1]) >= plane
            if step is None or grown:  # grown: a window as large as the input plane saves nothing (dense from here)
                stop = node
                break
            {"window": wins, "value": env, "pool": pools}[step[0]][node] = step[1]
            done.add(node)
    for ctx in contexts.values():
        for key, count in ctx.kinks.items():
            kinks[key] = kinks.get(key, 0) + count
    basis = make_basis(n, order, "pure")
    ctx = rules.Context(basis)
    later = nodes[nodes.index(stop):]
    needed = {a for nd in later for a in nd.all_input_nodes if a in done}
    values = {}
    input_node = placeholders[traced.input_index]
    for a in needed:
        if a is input_node:
            continue  # the dense input jet below
        if a in wins:
            values[a] = Jet(densify(wins[a], height, width), basis)
        elif a in pools:
            values[a] = (Jet(densify(pools[a][0], height, width), basis), pools[a][1])
        else:
            values[a] = env[a]
    input_jet = None
    if input_node in needed:
        input_jet = Jet(densify(input_window(x0, order), height, width), basis)
    with torch.no_grad():
        out = program.single_output(program.run(traced, input_jet, ctx, resume_at=stop, values=values))
    for key, count in ctx.kinks.items():
        kinks[key] = kinks.get(key, 0) + count
    c = out.c if isinstance(out, Jet) else _constant(out, basis.size)
    warn_one_sided(kinks, stacklevel=stacklevel + 1)
    poly = TaylorPolynomial(basis, c, x0, var_index, True, names=call.names, method="exact")
    if call.output is None:
        return poly
    try:
        return poly.select(call.output)
    except IndexError as e:
        raise ExpansionError(str(e)) from None

