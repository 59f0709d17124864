"""First contact: %hope points as users type them, whole error messages in Python, %hope, the panel and the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from IPython.core.error import UsageError
from IPython.terminal.interactiveshell import TerminalInteractiveShell
from IPython.testing.globalipapp import start_ipython
from torch import nn

from hope_engine import UnsupportedOperationError, expand
from hope_engine.io.cli import main as cli_main
from hope_widgets import HopePanel


@pytest.fixture(scope="module")
def shell():
    ip = start_ipython() or TerminalInteractiveShell.instance()  # None when another module started it first
    ip.run_line_magic("load_ext", "hope_widgets")
    torch.manual_seed(0)
    ip.user_ns["net"] = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).eval()
    ip.user_ns["bn"] = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).eval()
    ip.user_ns["zeta"] = Zeta()
    yield ip
    for name in ("net", "bn", "zeta"):
        ip.user_ns.pop(name, None)


class Zeta(nn.Module):
    """A model with an op that has no Taylor rule (the error must list it and say what to do)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return torch.special.zeta(self.lin(x), torch.tensor(2.0)).sum(-1, keepdim=True)


def test_negative_point_values_parse(shell):
    panel = shell.run_line_magic("hope", "net --point -0.5,1 --radius 0.5")
    assert panel.point == [-0.5, 1.0]


def test_point_is_parsed_in_float64(shell):
    panel = shell.run_line_magic("hope", "net --point 0.1,0.2")
    assert panel.point == [0.1, 0.2]


def test_point_gets_a_batch_axis_when_the_model_needs_one(shell):
    panel = shell.run_line_magic("hope", "bn --point 0.1,-0.2")
    assert panel.point == [0.1, -0.2]
    want = expand(shell.user_ns["bn"], torch.tensor([[0.1, -0.2]]), 10)
    torch.testing.assert_close(panel.full_polynomial.coefficients, want.coefficients)


def test_shape_option(shell):
    panel = shell.run_line_magic("hope", "net --point 0.3,0.4 --shape 1,2")
    assert panel.full_polynomial.center_values.shape == (1, 2)
    with pytest.raises(UsageError, match="--shape 1,3 holds 3 values"):
        shell.run_line_magic("hope", "net --point 0.3,0.4 --shape 1,3")


def test_unsupported_op_message_is_whole_in_the_magic(shell):
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("hope", "zeta --point 0,0")
    text = str(info.value)
    assert "special_zeta" in text and "Replace them" in text and "\n" in text


def test_unsupported_op_message_is_whole_in_the_panel():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh()).double()
    panel = HopePanel(net, [0.1, 0.2], order=2, max_order=3)
    panel._model = Zeta().double()  # the model a user swaps in: the failure is shown whole, the last result kept
    panel.recompute()
    assert "special_zeta" in panel.error and "Replace them" in panel.error


def test_unsupported_op_message_is_whole_in_the_cli(tmp_path, capsys):
    path = tmp_path / "zeta.pt2"
    model = Zeta().eval()
    torch.export.save(torch.export.export(model, (torch.zeros(1, 2),)), str(path))
    assert cli_main(["expand", str(path), "--point", "0,0"]) == 1
    err = capsys.readouterr().err
    assert "special_zeta" in err and "Replace them" in err


def test_bad_shape_prints_no_torch_log_traceback():
    code = ("import torch\nfrom hope_engine import expand\n"
            "net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())\n"
            "try:\n    expand(net, torch.zeros(1, 2), 2)\nexcept ValueError as e:\n    print('MESSAGE', e)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "MESSAGE the model cannot be run on a point of shape (1, 2)" in run.stdout
    assert "fake_tensor.py" not in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_python_error_is_one_block():
    with pytest.raises(UnsupportedOperationError) as info:
        expand(Zeta(), torch.zeros(1, 2), 2)
    assert "special_zeta" in str(info.value)


class PINN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))

    def forward(self, x, t):
        return self.net(torch.cat([x, t], dim=-1))


def test_magic_and_panel_take_several_inputs(shell):
    torch.manual_seed(0)
    model = PINN().double().eval()
    inputs = (torch.tensor([[0.1, 0.2]], dtype=torch.float64), torch.tensor([[0.3]], dtype=torch.float64))
    shell.user_ns.update(pinn=model, xt=inputs)
    try:
        panel = shell.run_line_magic("hope", "pinn --point-from xt --wrt t --max-order 4")
        assert panel.names == ["t"] and panel.point == [0.3]
        want = expand(model, inputs, 4, wrt="t")
        torch.testing.assert_close(panel.full_polynomial.coefficients, want.coefficients)
        both = HopePanel(model, inputs, max_order=3, order=2)
        assert both.names == ["x_0", "x_1", "t"] and both.point == [0.1, 0.2, 0.3]
        both.point = [0.0, 0.2, 0.3]
        torch.testing.assert_close(both.full_polynomial.coefficients, expand(
            model, (torch.tensor([[0.0, 0.2]], dtype=torch.float64), inputs[1]), 3).coefficients)
    finally:
        shell.user_ns.pop("pinn")
        shell.user_ns.pop("xt")
