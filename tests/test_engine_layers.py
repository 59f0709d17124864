"""Exactness for every layer family the engine covers: all derivatives agree with nested autograd in float64.

Each model puts the family between smooth layers, so that its derivatives of every order up to the one checked are
non-trivial (a linear family alone would only be tested to order 1).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as tF
from support.autograd import assert_matches_autograd, autograd_derivatives
from torch import nn

from hope_engine import expand

D = torch.float64


def mlp_with(act: nn.Module, n: int = 3, width: int = 4, out: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(n, width), act, nn.Linear(width, out)).to(D).eval()


def point(*shape: int) -> torch.Tensor:
    return (0.8 * torch.randn(*shape, dtype=D)).requires_grad_(False)


# ------------------------------------------------------------------------------------------- elementwise
ACTIVATIONS = {
    "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.1),
    "elu": nn.ELU(alpha=0.7), "selu": nn.SELU(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"),
    "silu": nn.SiLU(), "softplus": nn.Softplus(), "softplus_beta": nn.Softplus(beta=2.0, threshold=1.5),
    "mish": nn.Mish(), "hardtanh": nn.Hardtanh(-0.5, 0.5), "celu": nn.CELU(0.8), "logsigmoid": nn.LogSigmoid(),
    "tanhshrink": nn.Tanhshrink(), "softsign": nn.Softsign(), "relu6": nn.ReLU6(), "hardswish": nn.Hardswish(),
    "hardsigmoid": nn.Hardsigmoid(), "prelu": nn.PReLU(4, 0.3), "softmin": nn.Softmin(dim=-1),
    "threshold": nn.Threshold(0.1, -0.2), "rrelu_eval": nn.RReLU(0.1, 0.3), "softshrink": nn.Softshrink(0.2),
    "hardshrink": nn.Hardshrink(0.2),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_modules(name):
    model = nn.Sequential(nn.Linear(2, 4), ACTIVATIONS[name], nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    assert_matches_autograd(model.to(D).eval(), point(1, 2), 6)


def test_celu_against_pytorch_autograd():
    """PyTorch's celu backward is off by ~1e-8 relative (1/alpha in float32): the reference uses the formula; here the
    kernel's own autograd agrees to that precision."""
    model = nn.Sequential(nn.Linear(2, 4), nn.CELU(0.8), nn.Linear(4, 2)).to(D).eval()
    assert_matches_autograd(model, point(1, 2), 3, rtol=1e-7, formulas=False)


class Elementwise(nn.Module):
    """f applied to an affine image of the input, then mixed: the derivative structure of f reaches every order."""

    def __init__(self, fn, n: int = 2, shift: float = 0.0):
        super().__init__()
        self.fn, self.shift = fn, shift
        self.a = nn.Linear(n, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.fn(self.a(x) + self.shift))


def _softplus_pos(u):
    return tF.softplus(u) + 0.3


FUNCTIONS = {
    "exp": torch.exp, "log": lambda u: torch.log(_softplus_pos(u)), "sin": torch.sin, "cos": torch.cos,
    "sqrt": lambda u: torch.sqrt(_softplus_pos(u)), "rsqrt": lambda u: torch.rsqrt(_softplus_pos(u)),
    "reciprocal": lambda u: torch.reciprocal(_softplus_pos(u)), "one_over": lambda u: 1.0 / (1.5 + torch.sin(u)),
    "pow_int": lambda u: u ** 3, "pow_neg_int": lambda u: _softplus_pos(u) ** -2,
    "pow_frac": lambda u: _softplus_pos(u) ** 2.5, "pow_neg_frac": lambda u: _softplus_pos(u) ** -1.5,
    "pow_jet_exponent": lambda u: torch.pow(_softplus_pos(u), torch.tanh(u)),
    "pow_scalar_base": lambda u: torch.pow(2.0, u), "square": torch.square,
    "abs": torch.abs, "clamp": lambda u: torch.clamp(u, -0.4, 0.6), "clamp_min": lambda u: torch.clamp(u, min=-0.2),
    "relu": tF.relu, "leaky_relu": lambda u: tF.leaky_relu(u, 0.2), "elu": tF.elu, "selu": tF.selu,
    "gelu": tF.gelu, "gelu_tanh": lambda u: tF.gelu(u, approximate="tanh"), "silu": tF.silu,
    "softplus": tF.softplus, "mish": tF.mish, "hardtanh": tF.hardtanh, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "expm1": torch.expm1, "log1p": lambda u: torch.log1p(_softplus_pos(u)),
    "erf": torch.erf, "atan": torch.atan, "asin": lambda u: torch.asin(0.5 * torch.tanh(u)),
    "acos": lambda u: torch.acos(0.5 * torch.tanh(u)), "sinh": torch.sinh, "cosh": torch.cosh,
    "asinh": torch.asinh, "atanh": lambda u: torch.atanh(0.5 * torch.tanh(u)), "tan": lambda u: torch.tan(0.3 * u),
    "log2": lambda u: torch.log2(_softplus_pos(u)), "exp2": torch.exp2, "erfc": torch.erfc,
    "maximum": lambda u: torch.maximum(u, torch.sin(u)), "minimum": lambda u: torch.minimum(u, 0.5 * u ** 2),
    "where": lambda u: torch.where(u > 0, torch.sin(u), u ** 2),
    "pow_tensor_exponent": lambda u: _softplus_pos(u) ** torch.tensor([1.0, 2.5, -1.0, 2.5], dtype=D),
    "prod": lambda u: torch.prod(torch.tanh(u), dim=-1, keepdim=True) + torch.prod(1 + 0.1 * u) * u,
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_elementwise_functions(name):
    model = Elementwise(FUNCTIONS[name]).to(D).eval()
    assert_matches_autograd(model, point(1, 2), 6)


# ------------------------------------------------------------------------------------------- dense and bilinear
def test_linear_deep():
    model = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 5), nn.Sigmoid(), nn.Linear(5, 5), nn.Tanh(),
                          nn.Linear(5, 1)).to(D).eval()
    assert_matches_autograd(model, point(1, 2), 6)


class BilinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.bil = nn.Bilinear(3, 2, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.bil(torch.sin(x), x[:, :2])))


def test_bilinear():
    assert_matches_autograd(BilinearNet().to(D).eval(), point(1, 3), 6)


# ------------------------------------------------------------------------------------------- convolutions, pools
def conv_head(features: int, out: int = 2) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, out))


CONV_MODELS = {
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv1d(3, 2, 2, stride=2),
                                     nn.Sigmoid(), conv_head(4)), (1, 2, 5)),
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 2, 2, stride=2),
                                     nn.Sigmoid(), conv_head(8)), (1, 1, 4, 4)),
    "conv2d_groups_dilation": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=2, dilation=2, groups=2), nn.Tanh(),
                                                     conv_head(64)), (1, 2, 4, 4)),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(1, 2, 2), nn.Tanh(), nn.Conv3d(2, 1, 2), nn.Sigmoid(), conv_head(1)),
               (1, 1, 3, 3, 3)),
    "conv_transpose2d": (lambda: nn.Sequential(nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1),
                                               nn.Tanh(), conv_head(2 * 6 * 6)), (1, 2, 3, 3)),
    "conv_transpose1d": (lambda: nn.Sequential(nn.ConvTranspose1d(1, 2, 3, stride=2), nn.Tanh(), conv_head(14)),
                         (1, 1, 3)),
    "avg_pool2d": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Sigmoid(),
                                         conv_head(8)), (1, 1, 4, 4)),
    "avg_pool1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool1d(2),
                                         conv_head(4)), (1, 1, 4)),
    "max_pool2d": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Sigmoid(),
                                         conv_head(8)), (1, 1, 4, 4)),
    "max_pool1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool1d(2),
                                         conv_head(4)), (1, 1, 4)),
    "max_pool3d": (lambda: nn.Sequential(nn.Conv3d(1, 2, 2, padding=1), nn.Tanh(), nn.MaxPool3d(2),
                                         conv_head(4)), (1, 1, 3, 2, 2)),
    "adaptive_avg_pool2d": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(),
                                                  nn.AdaptiveAvgPool2d((2, 3)), nn.Sigmoid(), conv_head(12)),
                            (1, 1, 5, 5)),
    "adaptive_avg_pool2d_global": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
                                                         nn.Sigmoid(), conv_head(3)), (1, 1, 4, 4)),
    "adaptive_avg_pool1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 2), nn.Tanh(), nn.AdaptiveAvgPool1d(3),
                                                  conv_head(6)), (1, 1, 6)),
    "conv2d_reflect_pad": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Tanh(),
                                                 conv_head(32)), (1, 1, 4, 4)),
    "conv2d_replicate_pad": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="replicate"),
                                                   nn.Tanh(), conv_head(32)), (1, 1, 4, 4)),
    "conv1d_circular_pad": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3, padding=1, padding_mode="circular"), nn.Tanh(),
                                                  conv_head(8)), (1, 1, 4)),
    "upsample_nearest_bilinear": (lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 2), nn.Tanh(),
                                                        nn.Upsample(size=(3, 3), mode="bilinear"), conv_head(9)),
                                  (1, 1, 2, 2)),
    "pixel_shuffle": (lambda: nn.Sequential(nn.Conv2d(1, 4, 1), nn.Tanh(), nn.PixelShuffle(2), conv_head(16)),
                      (1, 1, 2, 2)),
    "batchnorm2d_eval": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Tanh(),
                                               conv_head(32)), (1, 1, 4, 4)),
}


def _randomize_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


@pytest.mark.parametrize("name", sorted(CONV_MODELS))
def test_convolution_and_pooling(name):
    make, shape = CONV_MODELS[name]
    model = make().to(D)
    _randomize_batchnorm(model)
    model.eval()
    x0 = point(*shape)
    numel = x0.numel()
    variables = sorted({0, numel // 2, numel - 1})  # three input elements: corners and the middle
    assert_matches_autograd(model, x0, 5, variables=variables)


# --------------------------------------------------------------------------------------------- shapes and views
class ShapeOps(nn.Module):
    """reshape, view, permute, transpose, cat, stack, slicing, tensor and integer indexing, flip, expand, repeat."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 6)
        self.head = nn.Linear(17, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))                                        # (1, 6)
        v = h.view(1, 2, 3).permute(0, 2, 1).reshape(1, 6)             # a different order of the same values
        t = h.reshape(2, 3).transpose(0, 1).contiguous().view(1, 6)
        s = torch.stack([h[:, ::2], v[:, 1:4]], dim=1).flatten(1)      # (1, 6)
        idx = h[:, torch.tensor([5, 0, 2])]                             # (1, 3)
        one = h[0, 1].reshape(1, 1) * v[..., -1:]                       # (1, 1)
        flipped = torch.flip(t, dims=[1])[:, :1].expand(1, 1)
        cat = torch.cat([v * t, s, idx, one], dim=1)                    # (1, 22)
        return self.head(torch.sin(torch.cat([cat, flipped], dim=1)))


def test_shape_operations():
    assert_matches_autograd(ShapeOps().to(D).eval(), point(1, 3), 6)


class InPlace(nn.Module):
    """In-place ops and writes into tensors (traced functionally), constant padding, a masked softmax."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = self.relu(self.a(x) + 0.5)
        h = h.clone()
        h[:, 0] = 0.25                                   # a constant written into a jet
        h[:, 1] += x[:, 0] * torch.tanh(x[:, 1])          # a jet written into a jet
        h.mul_(1.5)
        torch.sigmoid_(h)
        h = tF.pad(h, (1, 1), value=0.75)                 # the pad value is a constant
        mask = torch.tensor([[True, False, False, True, False, False]])
        s = h.masked_fill(mask, float("-inf")).softmax(dim=-1)
        idx = torch.tensor([0, 2, 2])
        t = torch.zeros(1, 6, dtype=x.dtype).index_add(1, idx, h[:, :3] * x[:, 1:])
        return self.head(s * h + t)


def test_in_place_operations_and_writes():
    x0 = torch.tensor([[0.3, -0.4]], dtype=D)
    assert_matches_autograd(InPlace().to(D).eval(), x0, 5)


def test_writes_of_network_quantities_into_constant_tensors():
    def f(x):
        out = torch.zeros(1, 6, dtype=x.dtype)
        out[:, [0, 2]] = torch.tanh(x)                    # index_put of a jet into a constant
        out[:, 3:5] = torch.sin(x) * x                     # slice_scatter
        grid = torch.eye(3, dtype=x.dtype).unsqueeze(0).clone()
        grid.diagonal(dim1=1, dim2=2).copy_(torch.exp(torch.cat([x, x[:, :1]], dim=1)))  # diagonal_scatter
        return torch.cat([out, grid.flatten(1) @ torch.ones(9, 1, dtype=x.dtype)], dim=1) ** 2

    assert_matches_autograd(f, torch.tensor([[0.4, -0.9]], dtype=D), 5)


class FlattenUnflatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 6)
        self.unflat = nn.Unflatten(1, (2, 3))
        self.flat = nn.Flatten()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = self.unflat(self.a(x))                     # (1, 2, 3)
        h = torch.tanh(h) * h.softmax(dim=1)
        return self.head(self.flat(h))


def test_flatten_unflatten():
    assert_matches_autograd(FlattenUnflatten().to(D).eval(), point(1, 3), 6)


class Reductions(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 6)

    def forward(self, x):
        h = torch.sin(self.a(x)).reshape(1, 2, 3)
        s = h.sum(dim=2)                                 # (1, 2)
        m = h.mean(dim=1)                                # (1, 3)
        total = h.sum() + torch.mean(h ** 2)
        return torch.cat([s, m.mean(dim=1, keepdim=True), total.reshape(1, 1), h.sum(dim=(1, 2)).reshape(1, 1)], 1)


def test_sum_and_mean():
    assert_matches_autograd(Reductions().to(D).eval(), point(1, 3), 6)


# ------------------------------------------------------------------------------------------ normalisation, dropout
def test_dropout_and_batchnorm_eval():
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Dropout(0.5), nn.Tanh(), nn.Linear(5, 2)).to(D)
    _randomize_batchnorm(model)
    model.eval()
    assert_matches_autograd(model, point(1, 3), 6)


# Nested autograd through PyTorch's layer/group norm kernels is wrong from order 3 on (the reference differentiates
# their formulas, see support.autograd.FORMULAS); the modules are also checked against their own autograd to order 2.
def test_layernorm():
    model = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 2)).to(D).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x0 = point(1, 3)
    assert_matches_autograd(model, x0, 2, formulas=False)
    assert_matches_autograd(model, x0, 6)


def test_layernorm_without_affine_over_two_dims():
    model = nn.Sequential(nn.Linear(2, 6), nn.Unflatten(1, (2, 3)), nn.LayerNorm((2, 3), elementwise_affine=False),
                          nn.Flatten(), nn.Linear(6, 2)).to(D).eval()
    x0 = point(1, 2)
    assert_matches_autograd(model, x0, 2, formulas=False)
    assert_matches_autograd(model, x0, 6)


def test_pytorch_layernorm_autograd_is_wrong_beyond_order_two():
    """Why the reference differentiates the formula: PyTorch's own third derivative of layer_norm disagrees with it."""
    lin, ln = nn.Linear(1, 5).to(D), nn.LayerNorm(5).to(D)
    x0 = torch.tensor([[0.3]], dtype=D)
    alphas = [(k,) for k in range(4)]
    kernel = autograd_derivatives(lambda x: ln(lin(x)), x0, alphas, formulas=False)
    formula = autograd_derivatives(lambda x: ln(lin(x)), x0, alphas, formulas=True)
    assert torch.allclose(kernel[:3], formula[:3], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(kernel[3], formula[3], rtol=1e-3)
    engine = expand(lambda x: ln(lin(x)), x0, 3).derivatives()
    assert torch.allclose(engine, formula.reshape(engine.shape), rtol=1e-10, atol=1e-10)


def test_groupnorm():
    model = nn.Sequential(nn.Conv1d(1, 4, 2), nn.GroupNorm(2, 4), nn.Tanh(), conv_head(12)).to(D).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x0 = point(1, 1, 4)
    assert_matches_autograd(model, x0, 2, variables=[0, 3], formulas=False)
    assert_matches_autograd(model, x0, 5, variables=[0, 3])


@pytest.mark.parametrize("module", [nn.Softmax(dim=-1), nn.LogSoftmax(dim=-1), nn.Softmax(dim=0)],
                         ids=["softmax", "log_softmax", "softmax_dim0"])
def test_softmax_family(module):
    model = nn.Sequential(nn.Linear(3, 4), module).to(D).eval()
    assert_matches_autograd(model, point(1, 3), 6)


# -------------------------------------------------------------------------------------- residuals, two-jet arithmetic
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(2, 4)
        self.block1 = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
        self.block2 = nn.Sequential(nn.Linear(4, 4), nn.SiLU(), nn.Linear(4, 4))
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.block1(h)
        h = torch.sin(h)
        h = h + self.block2(h)
        return self.out(h)


def test_residual_additions():
    assert_matches_autograd(Residual().to(D).eval(), point(1, 2), 6)


class ProductQuotient(nn.Module):
    """x*y and x/y where both factors are network quantities (jets), plus subtraction of two jets."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 1)
        self.b = nn.Linear(2, 1)

    def forward(self, x):
        u = torch.tanh(self.a(x))
        v = 1.5 + torch.sigmoid(self.b(x))
        return torch.cat([u * v, u / v, v / (2.0 + u), (u - v) * x[:, :1]], dim=1)


def test_products_and_quotients_of_network_quantities():
    assert_matches_autograd(ProductQuotient().to(D).eval(), point(1, 2), 6)


def test_matmul_of_two_network_quantities():
    def f(x):
        a = torch.sin(x).reshape(1, 3, 1) * torch.ones(1, 1, 2, dtype=D)   # (1, 3, 2)
        b = torch.tanh(x).reshape(1, 1, 3).expand(1, 2, 3)                  # (1, 2, 3)
        return torch.bmm(a, b).flatten(1)[:, :4] + (x @ x.T)

    assert_matches_autograd(f, point(1, 3), 6)


# ------------------------------------------------------------------------------------------------- attention
class Attention(nn.Module):
    def __init__(self, embed: int = 4, heads: int = 2, seq: int = 3, batch_first: bool = True, causal: bool = False):
        super().__init__()
        self.seq, self.embed, self.batch_first = seq, embed, batch_first
        self.mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1) if causal else None
        self.inp = nn.Linear(2, seq * embed)
        self.mha = nn.MultiheadAttention(embed, heads, batch_first=batch_first)
        self.head = nn.Linear(seq * embed, 2)

    def forward(self, x):
        h = self.inp(x).reshape(1, self.seq, self.embed)
        if not self.batch_first:
            h = h.transpose(0, 1)
        out, _ = self.mha(h, h, h, need_weights=False, attn_mask=self.mask)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.head(torch.tanh(out.reshape(1, -1)))


@pytest.mark.parametrize("batch_first,causal", [(True, False), (False, False), (True, True)])
def test_multihead_attention(batch_first, causal):
    assert_matches_autograd(Attention(batch_first=batch_first, causal=causal).to(D).eval(), point(1, 2), 6)


def test_multihead_attention_with_weights_and_transformer_layer():
    layer = nn.TransformerEncoderLayer(d_model=4, nhead=2, dim_feedforward=8, dropout=0.0, batch_first=True)
    inp = nn.Linear(2, 8)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.layer, self.head = inp, layer, nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.layer(self.inp(x).reshape(1, 2, 4)).reshape(1, 8))

    assert_matches_autograd(Net().to(D).eval(), point(1, 2), 4)
