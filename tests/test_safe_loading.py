"""Safe loading: no code stored in a model file runs unless the user passes --trust-pickle (trust_pickle=True).

The crafted archives below are real ``torch.export.save`` archives with one member swapped for a pickle whose
unpickling touches a marker file. ``torch.export.load`` unpickles such members (sample inputs with a fallback to
``weights_only=False``, weights and tensor constants marked ``use_pickle``, legacy weight files, opaque constants with
``pickle.loads``), so hope must inspect the archive first and refuse them; with trust_pickle the payload does run, which
shows the archives are not harmless by accident.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import pickle
import zipfile
from collections.abc import Callable

import pytest
import torch
from torch import nn

from hope_engine.io.cli import main
from hope_engine.io.loading import ModelLoadError, load_model
from hope_engine.models import sine_mlp

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # saving TorchScript fixtures

X0 = torch.tensor([[0.5, -0.25]], dtype=torch.float64)

Members = dict[str, bytes]


class _Touch:
    """Unpickling this object creates ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


class _System:
    """Unpickling this object runs a shell command (the classic ``os.system`` payload)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _rewrite(src: pathlib.Path, dst: pathlib.Path, edit: Callable[[Members], None]) -> pathlib.Path:
    """Copy the zip archive ``src`` to ``dst`` with its members changed by ``edit`` (a dict name -> bytes)."""
    with zipfile.ZipFile(src) as z:
        members = {info.filename: z.read(info.filename) for info in z.infolist()}
    edit(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def _member(members: Members, suffix: str) -> str:
    return next(n for n in members if n.endswith(suffix))


def _evil_sample_inputs(marker: pathlib.Path) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        members[_member(members, "/data/sample_inputs/model.pt")] = _torch_saved(_Touch(marker))
    return edit


def _evil_weight(marker: pathlib.Path) -> Callable[[Members], None]:
    """Mark the first weight ``use_pickle`` (as torch does for tensor subclasses) and make it the payload."""
    def edit(members: Members) -> None:
        key = _member(members, "/data/weights/model_weights_config.json")
        config = json.loads(members[key])
        meta = next(iter(config["config"].values()))
        meta["use_pickle"] = True
        members[key] = json.dumps(config).encode()
        members[_member(members, "/data/weights/" + meta["path_name"])] = _torch_saved(_Touch(marker))
    return edit


def _evil_constant(marker: pathlib.Path, prefix: str, payload: bytes) -> Callable[[Members], None]:
    """Add a constant stored under ``prefix`` (tensor_ with use_pickle, or opaque_obj_) holding ``payload``."""
    def edit(members: Members) -> None:
        key = _member(members, "/data/constants/model_constants_config.json")
        config = json.loads(members[key])
        name = f"{prefix}0"
        config["config"]["evil"] = {"path_name": name, "is_param": False, "use_pickle": True, "tensor_meta": None}
        members[key] = json.dumps(config).encode()
        members[key.replace("model_constants_config.json", name)] = payload
    return edit


def _evil_legacy_weights(marker: pathlib.Path) -> Callable[[Members], None]:
    """A legacy ``data/weights/model.pt`` file, which torch loads with a fallback to weights_only=False."""
    def edit(members: Members) -> None:
        root = _member(members, "/archive_format").split("/")[0]
        members[f"{root}/data/weights/model.pt"] = _torch_saved(_Touch(marker))
    return edit


CRAFTED = {
    "sample inputs": (_evil_sample_inputs, "sample inputs"),
    "pickled weight": (_evil_weight, "weight '0.weight'"),
    "pickled tensor constant": (lambda m: _evil_constant(m, "tensor_", _torch_saved(_Touch(m))), "constant 'evil'"),
    "opaque constant": (lambda m: _evil_constant(m, "opaque_obj_", pickle.dumps(_Touch(m), protocol=2)),
                        "constant 'evil'"),
    "legacy weights file": (_evil_legacy_weights, "data/weights/model.pt"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A normal torch.export.save archive (static batch of 1, as torch saves by default) and its model."""
    d = tmp_path_factory.mktemp("safe")
    model = sine_mlp([2, 16, 16, 1], seed=0)
    torch.export.save(torch.export.export(model, (X0,)), str(d / "model.pt2"))
    return d / "model.pt2", model


def _one_line_refusal(text: str, what: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "refused" in lines[0] and what in lines[0] and "--trust-pickle" in lines[0], lines[0]


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_crafted_exported_programs_are_refused_without_running_code(exported, tmp_path, capsys, kind):
    good, _ = exported
    craft, what = CRAFTED[kind]
    marker = tmp_path / "pwned"
    evil = _rewrite(good, tmp_path / "evil.pt2", craft(marker))

    with pytest.raises(ModelLoadError) as info:
        load_model(evil)
    assert not marker.exists()
    _one_line_refusal(str(info.value), what)

    code = main(["expand", str(evil), "--point", "0,0"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and not marker.exists()
    _one_line_refusal(err.removeprefix("hope: error: "), what)


@pytest.mark.parametrize("kind", ["sample inputs", "pickled weight", "opaque constant"])
def test_trust_pickle_really_unpickles_the_crafted_members(exported, tmp_path, kind):
    """The refusals above are what protects: with trust_pickle the same archives run their payload."""
    good, _ = exported
    marker = tmp_path / "pwned"
    evil = _rewrite(good, tmp_path / "evil.pt2", CRAFTED[kind][0](marker))
    with pytest.raises(ModelLoadError):  # the payload returns None where torch expects tensors
        load_model(evil, trust_pickle=True)
    assert marker.exists()


def test_old_format_export_with_pickled_example_inputs_is_refused(exported, tmp_path):
    """torch.export.load falls back to the pre-2.8 zip layout, whose pickles it also loads with a fallback."""
    from torch._export.serde.schema import SCHEMA_VERSION

    good, _ = exported
    with zipfile.ZipFile(good) as z:
        program = z.read(_member({n: b"" for n in z.namelist()}, "/models/model.json"))
    marker = tmp_path / "pwned"
    evil = tmp_path / "old.pt2"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("serialized_exported_program.json", program)
        z.writestr("serialized_state_dict.pt", _torch_saved({}))
        z.writestr("serialized_constants.pt", _torch_saved({}))
        z.writestr("serialized_example_inputs.pt", _torch_saved(_Touch(marker)))
        z.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
    with pytest.raises(ModelLoadError) as info:
        load_model(evil)
    assert not marker.exists()
    _one_line_refusal(str(info.value), "serialized_example_inputs.pt")


def test_custom_objects_and_compiled_code_in_an_archive_are_refused(exported, tmp_path):
    """TorchScript custom objects (torchbind __setstate__) and AOTInductor shared libraries run code when loaded."""
    good, _ = exported
    custom = _rewrite(good, tmp_path / "custom.pt2", _evil_constant(tmp_path / "x", "custom_obj_", b"\x80\x02N."))
    with pytest.raises(ModelLoadError) as info:
        load_model(custom)
    _one_line_refusal(str(info.value), "constant 'evil'")

    def add_library(members: Members) -> None:
        root = _member(members, "/archive_format").split("/")[0]
        members[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF not really"

    compiled = _rewrite(good, tmp_path / "compiled.pt2", add_library)
    with pytest.raises(ModelLoadError) as info:
        load_model(compiled)
    _one_line_refusal(str(info.value), "AOTInductor")


def test_duplicate_member_names_are_refused(exported, tmp_path):
    """A zip with two members of one name is ambiguous (zip readers may pick either one): refused outright."""
    good, _ = exported
    marker = tmp_path / "pwned"
    dup = tmp_path / "dup.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dup, "w") as z, pytest.warns(UserWarning, match="Duplicate"):
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))
        inputs = _member({n: b"" for n in src.namelist()}, "/data/sample_inputs/model.pt")
        z.writestr(inputs, _torch_saved(_Touch(marker)))
    with pytest.raises(ModelLoadError) as info:
        load_model(dup)
    assert not marker.exists()
    _one_line_refusal(str(info.value), "duplicate")


@pytest.mark.filterwarnings("ignore:Unable to execute the generated python source code:UserWarning")
def test_a_graph_passing_a_python_function_to_an_operator_is_refused(exported, tmp_path):
    """The JSON graph names callable arguments by attribute path from ``torch`` (``as_operator``): a crafted node can
    hand ``os.popen`` (reachable as ``torch.os.popen``) to the ``wrap`` higher-order operator, which calls it."""
    good, _ = exported
    marker = tmp_path / "pwned"

    def add_node(members: Members) -> None:
        key = _member(members, "/models/model.json")
        program = json.loads(members[key])
        program["graph_module"]["graph"]["nodes"].insert(0, {
            "target": "torch.ops.higher_order.wrap", "name": "evil", "metadata": {},
            "inputs": [{"name": "func", "arg": {"as_operator": "torch.os.popen"}, "kind": 1},
                       {"name": "cmd", "arg": {"as_string": f"touch '{marker}'"}, "kind": 1}],
            "outputs": [{"as_none": True}], "is_hop_single_tensor_return": None})
        members[key] = json.dumps(program).encode()

    evil = _rewrite(good, tmp_path / "graph.pt2", add_node)
    with pytest.raises(ModelLoadError) as info:
        load_model(evil)
    assert not marker.exists()
    _one_line_refusal(str(info.value), "os.popen")


def test_normal_exports_load_without_and_with_trust(exported, capsys):
    good, model = exported
    for trust in (False, True):
        loaded = load_model(good, trust_pickle=trust)
        assert loaded.kind == "exported program"
        with torch.no_grad():
            torch.testing.assert_close(loaded(X0), model(X0))
    assert main(["expand", str(good), "--point", "0.5,-0.25", "--order", "2"]) == 0
    assert "TaylorPolynomial" in capsys.readouterr().out


def test_exported_program_with_a_buffer_and_a_tensor_constant_loads(tmp_path):
    """Plain (non-subclass) buffers and lifted tensor constants are stored raw, not pickled: nothing is refused."""

    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1).double()
            self.register_buffer("shift", torch.tensor([0.25], dtype=torch.float64))
            self.scale = torch.tensor([2.0], dtype=torch.float64)  # a tensor attribute: a lifted constant

        def forward(self, x):
            return self.lin(x) * self.scale + self.shift

    model = Shifted().eval()
    path = tmp_path / "shifted.pt2"
    torch.export.save(torch.export.export(model, (X0,)), str(path))
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(X0), model(X0))


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_torchscript_pickles_cannot_name_python_callables(tmp_path, member):
    """TorchScript's own (C++) unpickler resolves only torch's tensor/container globals and classes compiled from the
    archive's TorchScript code, so an ``os.system`` reduce in data.pkl or constants.pkl fails instead of running."""
    model = nn.Sequential(nn.Linear(2, 1)).double()
    good = tmp_path / "model.ts"
    torch.jit.trace(model, X0).save(str(good))
    marker = tmp_path / "pwned"

    def edit(members: Members) -> None:
        members[_member(members, "/" + member)] = pickle.dumps(_System(f"touch '{marker}'"), protocol=2)

    evil = _rewrite(good, tmp_path / "evil.ts", edit)
    with pytest.raises(ModelLoadError, match="TorchScript archive could not be loaded"):
        load_model(evil)
    assert not marker.exists()


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory):
    """A normal export with a dynamic batch axis: its JSON holds a symbolic-shape expression (``expr_str``)."""
    path = tmp_path_factory.mktemp("dynamic") / "model.pt2"
    model = sine_mlp([2, 8, 1], seed=0)
    batch = {0: torch.export.Dim("batch", min=1, max=64)}
    torch.export.save(torch.export.export(model, (X0.repeat(3, 1),), dynamic_shapes=(batch,)), str(path))
    return path


def _with_program_text(edit: Callable[[dict], None]) -> Callable[[Members], None]:
    def rewrite(members: Members) -> None:
        key = _member(members, "/models/model.json")
        program = json.loads(members[key])
        edit(program)
        members[key] = json.dumps(program).encode()
    return rewrite


def _payload_expression(marker: pathlib.Path) -> Callable[[Members], None]:
    """Prefix every symbolic-shape expression with Python that touches ``marker`` (sympy.sympify evaluates it)."""
    def edit(program: dict) -> None:
        stack: list = [program]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if isinstance(item.get("expr_str"), str):
                    item["expr_str"] = f"0*(__import__('pathlib').Path('{marker}').touch() or 1) + {item['expr_str']}"
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return _with_program_text(edit)


def _payload_guard(marker: pathlib.Path) -> Callable[[Members], None]:
    """A guard (compiled with exec by ExportedProgram.module(), run on each call) that touches ``marker``."""
    def edit(program: dict) -> None:
        program["guards_code"] = [f"__import__('pathlib').Path('{marker}').touch() is None"]
    return _with_program_text(edit)


def _payload_name(marker: pathlib.Path) -> Callable[[Members], None]:
    """Rename the first parameter (in the graph signature and the weights config) to a name that closes the string
    torch.fx quotes it in (``getattr(self.lin, "<name>")`` in the code it generates) and touches ``marker``."""
    path = '"' + str(marker).replace(".", '"+chr(46)+"') + '"'  # (an attribute name holds no dot)
    payload = f'w")if getattr(getattr(__import__("pathlib"),"Path")({path}),"touch")()else(0,"w'

    def rewrite(members: Members) -> None:
        key = _member(members, "/models/model.json")
        program = json.loads(members[key])
        spec = next(s["parameter"] for s in program["graph_module"]["signature"]["input_specs"] if "parameter" in s)
        old = spec["parameter_name"]
        spec["parameter_name"] = new = old.rpartition(".")[0] + "." + payload
        members[key] = json.dumps(program).encode()
        key = _member(members, "/data/weights/model_weights_config.json")
        config = json.loads(members[key])
        config["config"][new] = config["config"].pop(old)
        members[key] = json.dumps(config).encode()
    return rewrite


@pytest.mark.parametrize("craft, what", [(_payload_expression, "shape expression"), (_payload_guard, "guard"),
                                         (_payload_name, "not a plain name")])
def test_shape_expressions_and_guards_holding_code_are_refused(dynamic, tmp_path, capsys, craft, what):
    """torch.export.load reads ``expr_str`` with sympy.sympify (an eval), ``.module()`` compiles ``guards_code`` with
    exec and writes parameter names into the forward it generates: expressions and guards must be plain arithmetic
    over shape symbols and input sizes, names plain names."""
    marker = tmp_path / "pwned"
    evil = _rewrite(dynamic, tmp_path / "evil.pt2", craft(marker))
    with pytest.raises(ModelLoadError) as info:
        load_model(evil)
    assert not marker.exists()
    _one_line_refusal(str(info.value), what)
    assert main(["expand", str(evil), "--point", "0,0"]) == 1 and not marker.exists()
    _one_line_refusal(capsys.readouterr().err.removeprefix("hope: error: "), what)

    loaded = load_model(evil, trust_pickle=True)  # the positive control: trusted, the code runs
    with contextlib.suppress(Exception):  # (what the injected code leaves behind may not compute)
        loaded(X0.repeat(3, 1))
    assert marker.exists()


def test_dynamic_exports_with_guards_still_load(dynamic, tmp_path):
    """torch's own expressions (``Symbol('s0', positive=True, integer=True)``) and guards
    (``L['input'].size()[0] >= 2``) are plain arithmetic: a normal dynamic export, and one with guards, load."""
    def edit(program: dict) -> None:  # (``input``: the name of nn.Sequential.forward's argument)
        program["guards_code"] = ["L['input'].size()[0] >= 1", "L['input'].size()[1] == 2"]

    guarded = _rewrite(dynamic, tmp_path / "guarded.pt2", _with_program_text(edit))
    for path in (dynamic, guarded):
        assert load_model(path)(X0.repeat(5, 1)).shape == (5, 1)
