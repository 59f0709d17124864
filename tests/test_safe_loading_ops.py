"""Saved graphs run only pure tensor math: file, I/O, random and in-place-on-state ops are refused before anything runs.

``aten::from_file`` maps a file into a tensor (with ``shared=True`` writes go back to the file), so without a check a
model file can read any file into the expansion or write into it. The crafted files below do exactly that:

- TorchScript: an ordinary ``torch.jit.script(module).save(path)`` whose forward calls ``torch.from_file`` on a
  ``str`` attribute (and one whose ``__setstate__``, run by ``torch.jit.load`` itself, writes the file);
- exported programs: ``torch.export`` refuses ``from_file`` (it has no fake kernel), so a module whose forward builds
  ``torch.zeros(1, dtype=torch.uint8)`` (and, for the write, adds 1 to it in place) is exported and saved, and the
  ``models/model.json`` member of the archive edited: that node's target becomes ``torch.ops.aten.from_file.default``
  with ``filename``/``shared``/``size`` inputs (``_craft_from_file``).

With ``trust_pickle=True`` (which skips the checks) each crafted file really reads or writes the canary, which shows
the files are real attacks; without it loading refuses them, names the op and the file, and the canary's bytes and
mtime stay as they were. Ordinary models saved both ways (with in-place ops on their own intermediate values, dropout
and attention) still load and expand.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hope_engine import expand
from hope_engine.io.cli import main
from hope_engine.io.loading import ModelLoadError, load_model
from hope_engine.io.pure_graphs import UNKNOWN, op_refusal

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # saving TorchScript fixtures

X0 = torch.tensor([[0.5, -0.25]], dtype=torch.float64)
CANARY = b"ABCDEFGH"


# ----------------------------------------------------------------------------------------------- crafted models


class _ReadsFile(nn.Module):
    """forward adds the first byte of the file ``path`` to a linear layer's output."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.lin = nn.Linear(2, 1).double()

    def forward(self, x):
        byte = torch.from_file(self.path, False, 1, dtype=torch.uint8)
        return self.lin(x) + byte.double()


class _WritesFile(nn.Module):
    """forward adds 1 to the first byte of the file ``path`` through a shared mapping (so the file changes)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.lin = nn.Linear(2, 1).double()

    def forward(self, x):
        byte = torch.from_file(self.path, True, 1, dtype=torch.uint8)
        byte.add_(1)
        return self.lin(x) + byte.double()


class _OneByte(nn.Module):
    """The exportable stand-in for the two above: a uint8 tensor made by ``zeros`` (incremented in place if
    ``write``), whose ``zeros`` node ``_craft_from_file`` turns into ``from_file``."""

    def __init__(self, write: bool):
        super().__init__()
        self.write = write
        self.lin = nn.Linear(2, 1).double()

    def forward(self, x):
        byte = torch.zeros(1, dtype=torch.uint8)
        if self.write:
            byte.add_(1)
        return self.lin(x) + byte.double()


class _RestoresFromFile(nn.Module):
    """An innocent forward; ``__setstate__`` (run by torch.jit.load) writes the file ``path``."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        return x.sum(1, keepdim=True)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return self.path, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        byte = torch.from_file(state[0], True, 1, dtype=torch.uint8)
        self.path = state[0] + str(int(byte.add_(1)))
        self.training = state[1]


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1).double()

    def forward(self, x):
        return self.lin(x) + torch.randn(1, dtype=torch.float64)


class _CountsCalls(nn.Module):
    """Writes a buffer in place on every call: the model changes between calls."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1).double()
        self.register_buffer("calls", torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        self.calls.add_(1)
        return self.lin(x) * self.calls


class _ScalesThroughAView(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(1, 2, dtype=torch.float64))

    def forward(self, x):
        flat = self.scale.view(-1)
        flat.mul_(2.0)
        return (x * self.scale).sum(1, keepdim=True)


class _WritesItsInput(nn.Module):
    def forward(self, x):
        x.mul_(2.0)
        return x.sum(1, keepdim=True)


class _RemembersInputs(nn.Module):
    """Appends every input to a list attribute (state that grows with each call)."""

    def __init__(self):
        super().__init__()
        self.seen = [torch.zeros(2, dtype=torch.float64)]  # (not empty: TorchScript infers List[Tensor])

    def forward(self, x):
        self.seen.append(x)
        return x.sum(1, keepdim=True)


class _ShiftsAConstant(nn.Module):
    """Traced, the plain tensor attribute becomes a constant of the graph, written in place on every call."""

    def __init__(self):
        super().__init__()
        self.shift = torch.zeros(1, dtype=torch.float64)

    def forward(self, x):
        self.shift.add_(1.0)
        return x.sum(1, keepdim=True) + self.shift


class _WritesStateIndirectly(nn.Module):
    """Writes its buffer through a list, a tuple, a loop-carried value, a branch, a helper method or an index
    assignment (``how``, a TorchScript constant: the other branches are compiled away): each path by which a value
    can alias state."""

    __constants__ = ["how"]

    def __init__(self, how: int):
        super().__init__()
        self.how = how
        self.register_buffer("b", torch.ones(2, dtype=torch.float64))

    def helper(self, t: torch.Tensor) -> torch.Tensor:
        return t.add_(1.0)

    def forward(self, x):
        h = x * 2.0
        if self.how == 0:
            pair = [h, self.b]
            pair[1].add_(1.0)
        elif self.how == 1:
            for _ in range(2):
                h.add_(1.0)
                h = self.b
        elif self.how == 2:
            if bool(x.sum() > 0):
                h = self.b
            h.add_(1.0)
        elif self.how == 3:
            h = self.helper(self.b)
        else:
            self.b[0] = 5.0
        return x + h


class _WritesOnlyItsOwn(nn.Module):
    """In-place ops on values it made itself, through loops and lists: loads."""

    def __init__(self):
        super().__init__()
        self.register_buffer("b", torch.ones(2, dtype=torch.float64))

    def forward(self, x):
        h = x * 2.0
        h.add_(self.b)
        outs: list[torch.Tensor] = []
        for _ in range(2):
            g = h.clone()
            g.mul_(2.0)
            outs.append(g)
        y = torch.stack(outs)
        y[0] = 1.0
        return y.sum(0) + self.b.clone().add_(1.0)


class _Prints(nn.Module):
    def forward(self, x):
        print("the polynomial is 42")
        return x.sum(1, keepdim=True)


class _CountsInAnAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.sum(1, keepdim=True) * self.calls


def _script(module: nn.Module, path: pathlib.Path) -> pathlib.Path:
    torch.jit.script(module).save(str(path))
    return path


def _craft_from_file(module: _OneByte, path: pathlib.Path, target: pathlib.Path, shared: bool) -> pathlib.Path:
    """Export ``module`` and rewrite its ``zeros`` node (in the archive's JSON graph) into
    ``from_file(target, shared, size=1, dtype=uint8)``, which torch.export itself would not export."""
    torch.export.save(torch.export.export(module, (X0,)), str(path))
    with zipfile.ZipFile(path) as z:
        members = {info.filename: z.read(info.filename) for info in z.infolist()}
    key = next(n for n in members if n.endswith("/models/model.json"))
    program = json.loads(members[key])
    node = next(n for n in program["graph_module"]["graph"]["nodes"] if n["target"] == "torch.ops.aten.zeros.default")
    node["target"] = "torch.ops.aten.from_file.default"
    node["inputs"] = [{"name": "filename", "arg": {"as_string": str(target)}, "kind": 1},
                      {"name": "shared", "arg": {"as_bool": shared}, "kind": 1},
                      {"name": "size", "arg": {"as_int": 1}, "kind": 1},
                      {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2}]  # 1: uint8 in torch's schema
    members[key] = json.dumps(program).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _crafted(kind: str, d: pathlib.Path, canary: pathlib.Path) -> pathlib.Path:
    """A model file of ``kind`` ('<format> <read|write>') that calls from_file on ``canary``."""
    fmt, action = kind.split()
    if fmt == "torchscript":
        module = _ReadsFile(str(canary)) if action == "read" else _WritesFile(str(canary))
        return _script(module, d / f"{action}.ts")
    return _craft_from_file(_OneByte(action == "write"), d / f"{action}.pt2", canary, shared=action == "write")


class _Canary(type(pathlib.Path())):
    """The file the crafted models point at, written with ``CANARY`` and an old mtime."""

    STAMP = 1_000_000_000 * 10**9  # 2001-09-09, in ns: any write moves it

    def untouched(self) -> bool:
        """Its bytes and mtime are as written."""
        return self.read_bytes() == CANARY and self.stat().st_mtime_ns == self.STAMP


@pytest.fixture
def canary(tmp_path) -> _Canary:
    path = _Canary(tmp_path / "canary.bin")
    path.write_bytes(CANARY)
    os.utime(path, ns=(_Canary.STAMP, _Canary.STAMP))
    return path


def _one_line_refusal(text: str, *names: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "refused" in lines[0] and "--trust-pickle" in lines[0], lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])


FROM_FILE = ["torchscript read", "torchscript write", "exported read", "exported write"]


# --------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", FROM_FILE)
def test_from_file_is_refused_before_anything_runs(tmp_path, canary, capsys, kind):
    evil = _crafted(kind, tmp_path, canary)
    with pytest.raises(ModelLoadError) as info:
        load_model(evil)
    assert canary.untouched()
    _one_line_refusal(str(info.value), "from_file", repr(str(canary)))

    commands = [["expand", str(evil), "--point", "0.5,-0.25", "--order", "2"]]
    if kind.endswith("write"):
        commands.append(["discover", str(evil), "--center", "0,0", "--order", "2", "--points", "4"])
    for argv in commands:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 1 and out == "" and canary.untouched(), (argv, out, err)
        _one_line_refusal(err.removeprefix("hope: error: "), "from_file", str(canary))


@pytest.mark.parametrize("kind", FROM_FILE)
def test_the_crafted_files_really_read_and_write_when_loaded_unchecked(tmp_path, canary, kind):
    """torch's own loaders (no checks): the same files then read the canary's first byte ('A' = 65) into the output,
    or add 1 to it in the file; so the refusals above are what protects."""
    evil = _crafted(kind, tmp_path, canary)
    module = torch.jit.load(str(evil)) if kind.startswith("torchscript") else torch.export.load(str(evil)).module()
    assert canary.untouched()  # loading alone runs nothing
    with torch.no_grad():
        out = module(X0)
        plain = F.linear(X0, module.lin.weight, module.lin.bias)
    if kind.endswith("read"):
        torch.testing.assert_close(out - plain, torch.tensor([[65.0]], dtype=torch.float64))
        assert canary.untouched()
    else:
        torch.testing.assert_close(out - plain, torch.tensor([[66.0]], dtype=torch.float64))
        assert canary.read_bytes() == b"B" + CANARY[1:]


@pytest.mark.parametrize("kind", FROM_FILE)
def test_trust_pickle_keeps_the_op_checks(tmp_path, canary, capsys, kind):
    """trust_pickle allows pickles in a file; it does not make a graph's file ops safe: from_file is refused with it
    too, by load_model and by the CLI's --trust-pickle, before anything runs."""
    evil = _crafted(kind, tmp_path, canary)
    with pytest.raises(ModelLoadError, match="from_file"):
        load_model(evil, trust_pickle=True)
    code = main(["expand", str(evil), "--point", "0.5,-0.25", "--order", "2", "--trust-pickle"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and "from_file" in err and canary.untouched(), (out, err)


class _NoGradInside(nn.Module):
    """A scripted forward with a ``with torch.no_grad():`` block."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1).to(torch.float64)

    def forward(self, x):
        with torch.no_grad():
            c = torch.sin(x) * 2.0
        return self.lin(x * torch.tanh(x)) + (x * c).sum(1, keepdim=True)


def test_torchscript_grad_mode_blocks_load_and_expand(tmp_path):
    """``with torch.no_grad()`` in a scripted forward (an object whose methods only set the grad mode) loads, and
    expands as torch's autograd differentiates it (the no_grad block a constant)."""
    torch.manual_seed(0)
    model = _NoGradInside()
    loaded = load_model(_script(model, tmp_path / "nograd.ts"))
    x0 = torch.tensor([0.3, -0.2], dtype=torch.float64)
    p = expand(loaded, x0.reshape(1, 2), 2)
    xr = x0.reshape(1, 2).clone().requires_grad_()
    (g,) = torch.autograd.grad(model(xr).sum(), xr)
    torch.testing.assert_close(p.coefficients[1:3].reshape(-1), g.reshape(-1), rtol=1e-12, atol=1e-12)


def test_a_grad_mode_class_whose_methods_do_more_is_refused(tmp_path, canary):
    """The no_grad class's code comes from the archive too: rewritten to read a file in ``__enter__``, it is
    refused before anything runs."""
    path = _script(_NoGradInside(), tmp_path / "nograd.ts")
    with zipfile.ZipFile(path) as z:
        members = {info.filename: z.read(info.filename) for info in z.infolist()}
    key = next(n for n in members if n.endswith("torch/autograd/grad_mode.py"))
    code = members[key].decode()
    assert "self.prev = torch.is_grad_enabled()" in code
    members[key] = code.replace("self.prev = torch.is_grad_enabled()",
                                f"self.prev = bool(torch.from_file({str(canary)!r}, True, 1))", 1).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ModelLoadError, match="refused"):
        load_model(path)
    assert canary.untouched()


def test_the_console_command_refuses_a_crafted_export(tmp_path, canary):
    """The real ``hope`` process (``python -m hope_engine.io.cli``): exit status 1, one line, the file unchanged."""
    evil = _crafted("exported write", tmp_path, canary)
    run = subprocess.run([sys.executable, "-m", "hope_engine.io.cli", "expand", str(evil), "--point", "0,0"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 1 and run.stdout == "" and canary.untouched(), run
    _one_line_refusal(run.stderr.removeprefix("hope: error: "), "aten.from_file.default")


def test_torchscript_setstate_is_refused_unread(tmp_path, canary, capsys):
    """``torch.jit.load`` runs a module's ``__setstate__`` while loading, before any graph can be inspected."""
    evil = _script(_RestoresFromFile(str(canary)), tmp_path / "restores.ts")
    assert canary.untouched()  # scripting and saving ran nothing
    with pytest.raises(ModelLoadError) as info:
        load_model(evil)
    assert canary.untouched()
    _one_line_refusal(str(info.value), "__setstate__")
    assert main(["expand", str(evil), "--point", "0,0"]) == 1 and canary.untouched()
    _one_line_refusal(capsys.readouterr().err.removeprefix("hope: error: "), "__setstate__")

    torch.jit.load(str(evil))  # the positive control: torch's own loading writes the file
    assert canary.read_bytes() == b"B" + CANARY[1:]


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_random_ops_are_refused(tmp_path, capsys, fmt):
    model = _Noisy()
    if fmt == "torchscript":
        path = _script(model, tmp_path / "noisy.ts")
    else:
        path = tmp_path / "noisy.pt2"
        torch.export.save(torch.export.export(model, (X0,)), str(path))
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    _one_line_refusal(str(info.value), "randn", "random")
    assert main(["expand", str(path), "--point", "0,0"]) == 1
    _one_line_refusal(capsys.readouterr().err.removeprefix("hope: error: "), "randn")


STATE_WRITERS = {
    "buffer (export)": (lambda: _CountsCalls(), "export", ("add_", "buffer 'calls'")),
    "buffer (script)": (lambda: _CountsCalls(), "script", ("aten::add_", "self.calls")),
    "buffer through a view": (lambda: _ScalesThroughAView(), "script", ("aten::mul_", "self.scale")),
    "the input (export)": (lambda: _WritesItsInput(), "export", ("mul_", "input 'x'")),
    "the input (script)": (lambda: _WritesItsInput(), "script", ("aten::mul_", "the input 'x'")),
    "a list attribute": (lambda: _RemembersInputs(), "script", ("aten::append", "self.seen")),
    "a traced constant": (lambda: _ShiftsAConstant(), "trace", ("aten::add_", "a constant")),
    "through a list": (lambda: _WritesStateIndirectly(0), "script", ("aten::add_", "self.b")),
    "through a loop": (lambda: _WritesStateIndirectly(1), "script", ("aten::add_", "self.b")),
    "through a branch": (lambda: _WritesStateIndirectly(2), "script", ("aten::add_", "self.b")),
    "through a method": (lambda: _WritesStateIndirectly(3), "script", ("aten::add_", "self.b")),
    "by index assignment": (lambda: _WritesStateIndirectly(4), "script", ("aten::copy_", "self.b")),
}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("case", list(STATE_WRITERS))
def test_in_place_writes_to_model_state_are_refused(tmp_path, case):
    make, how, names = STATE_WRITERS[case]
    model = make()
    path = tmp_path / ("model.pt2" if how == "export" else "model.ts")
    if how == "export":
        torch.export.save(torch.export.export(model, (X0.clone(),)), str(path))
    elif how == "script":
        _script(model, path)
    else:
        torch.jit.trace(model, X0.clone(), check_trace=False).save(str(path))
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    _one_line_refusal(str(info.value), *names, "writes in place")


def test_in_place_writes_to_values_the_graph_made_load(tmp_path):
    model = _WritesOnlyItsOwn()
    path = _script(model, tmp_path / "model.ts")
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(X0), model(X0))


@pytest.mark.parametrize("model, names", [(_Prints(), ("prim::Print",)),
                                          (_CountsInAnAttribute(), ("prim::SetAttr", "self.calls"))])
def test_torchscript_print_and_attribute_assignment_are_refused(tmp_path, capsys, model, names):
    path = _script(model, tmp_path / "model.ts")
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    _one_line_refusal(str(info.value), *names, "method forward")
    assert main(["expand", str(path), "--point", "0,0"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "42" not in err  # nothing printed: forward never ran


def test_the_allow_list_follows_op_properties():
    """The rule, applied to every operator TorchScript knows: file arguments, random draws without a switch that is
    off, and ops returning nothing (bar checks) are refused; other namespaces too; pure math and switched-off
    dropout, RNNs and attention pass."""
    unknown = lambda name: UNKNOWN  # noqa: E731 - nothing known before running
    refused: dict[str, str] = {}
    for schema in torch._C._jit_get_all_schemas():
        why = op_refusal(schema, _tags(schema), unknown)
        if why is not None:
            refused[f"{schema.name}.{schema.overload_name}"] = why
        if not schema.name.startswith("aten::"):
            assert why is not None, schema
        elif any(a.name == "filename" for a in schema.arguments):
            assert "file" in why, schema
        elif any("Generator" in str(a.type) for a in schema.arguments):
            assert why is not None, schema
        elif not schema.returns and not any(a.alias_info is not None and a.alias_info.is_write
                                            for a in schema.arguments):
            assert why is not None or schema.name.split("::")[1] in ("warn", "_linalg_check_errors") \
                or "assert" in schema.name or "constrain_range" in schema.name, schema
    for name in ("aten::from_file.", "aten::save.", "aten::_print.", "aten::manual_seed.", "aten::randn.",
                 "aten::rand_like.", "aten::normal.Tensor_float", "aten::bernoulli.", "aten::set_.source_Tensor",
                 "aten::_reshape_alias.", "aten::_sparse_coo_tensor_unsafe.", "quantized::linear."):
        assert name in refused, name
    for name in ("aten::add.Tensor", "aten::tanh.", "aten::linear.", "aten::conv2d.", "aten::relu_.",
                 "aten::append.t", "aten::_assert_async.", "aten::warn.", "aten::masked_fill_.Scalar"):
        assert name not in refused, (name, refused.get(name))

    off = {"train": False, "training": False, "dropout_p": 0.0}.get
    for op in (torch.ops.aten.dropout.default, torch.ops.aten.lstm.input, torch.ops.aten.rrelu.default,
               torch.ops.aten.scaled_dot_product_attention.default):
        assert op_refusal(op._schema, op.tags, unknown) == "which draws random numbers", op
        assert op_refusal(op._schema, op.tags, lambda name: off(name, UNKNOWN)) is None, op


def _tags(schema) -> tuple:
    try:
        packet = getattr(torch.ops.aten, schema.name.split("::")[1])
        return tuple(getattr(packet, schema.overload_name or "default").tags)
    except (AttributeError, RuntimeError):
        return ()


# ------------------------------------------------------------------------------------- ordinary models still load


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)


class _Conv(nn.Module):
    """Conv, an in-place ReLU, a residual ``+=`` and a list of fresh tensors: writes only to its own results."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(2 * 4 * 4, 1)

    def forward(self, x):
        image = x.reshape(-1, 1, 4, 4)
        h = self.act(self.conv(image))
        h += image
        parts = [h[:, :1], h[:, 1:]]
        h = torch.cat(parts, 1)
        return self.head(self.drop(h).flatten(1))


class _Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 3, num_layers=2, dropout=0.2, batch_first=True)
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(-1, 2, 4))
        return self.head(out[:, -1])


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, dropout=0.1, batch_first=True)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        seq = x.reshape(-1, 2, 4)
        out = self.attn(seq, seq, seq)[0]
        return self.head(F.dropout(out, 0.5, self.training)).sum(1)


ORDINARY = {"mlp": (_Mlp, 2), "conv": (_Conv, 16), "lstm": (_Lstm, 8), "attention": (_Attention, 8)}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:The tensor attributes:UserWarning")
@pytest.mark.parametrize("how", ["script", "trace", "export"])
@pytest.mark.parametrize("name", list(ORDINARY))
def test_ordinary_models_load_and_expand(tmp_path, name, how):
    make, n = ORDINARY[name]
    model = make().double().eval()
    x = torch.linspace(-0.5, 0.5, n, dtype=torch.float64).reshape(1, n)
    path = tmp_path / ("model.pt2" if how == "export" else "model.ts")
    if how == "export":
        torch.export.save(torch.export.export(model, (x,)), str(path))
    elif how == "script":
        torch.jit.script(model).save(str(path))
    else:
        torch.jit.trace(model, x, check_trace=False).save(str(path))
    loaded = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    p = expand(loaded, x, 2)
    torch.testing.assert_close(torch.as_tensor(p.value).reshape(-1), model(x).detach().reshape(-1))
