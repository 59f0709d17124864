"""%hope / %%hope in IPython's InteractiveShell: every option, and every bad input as one readable line."""

from __future__ import annotations

import pytest
import torch
from IPython.core.error import UsageError
from IPython.terminal.interactiveshell import TerminalInteractiveShell
from IPython.testing.globalipapp import start_ipython

from hope_engine import expand
from hope_widgets import HopePanel


@pytest.fixture(scope="module")
def shell():
    # start_ipython() answers None after its first call in a process (another test module made the shell)
    ip = start_ipython() or TerminalInteractiveShell.instance()
    ip.run_line_magic("load_ext", "hope_widgets")
    torch.manual_seed(0)
    ip.user_ns["net"] = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    ip.user_ns["f"] = lambda x: torch.sin(x[0]) * torch.exp(x[1])
    ip.user_ns["x0"] = torch.tensor([0.25, -0.5])
    ip.user_ns["xb"] = torch.tensor([[0.25, -0.5]])
    ip.user_ns["not_a_model"] = 3
    ip.user_ns["conv"] = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                             torch.nn.Linear(2 * 4 * 4, 1)).eval()
    yield ip
    for name in ("net", "f", "x0", "xb", "not_a_model", "conv"):
        ip.user_ns.pop(name, None)


def hope(shell, line: str) -> HopePanel:
    return shell.run_line_magic("hope", line)


def test_defaults_point_from_first_linear_layer(shell):
    panel = hope(shell, "net")
    assert isinstance(panel, HopePanel)
    assert panel.point == [0.0, 0.0] and panel.order == 6 and panel.max_order == 10
    assert panel.n_outputs == 3 and panel.output == 0 and panel.method == "exact" and panel.terms_kind == "total"
    assert panel.title == "net"
    engine = expand(shell.user_ns["net"], torch.zeros(2), 10).truncate(6).select(0)
    assert panel.latex == engine.latex()


def test_every_option(shell):
    panel = hope(shell, "net --point 0.5,-1 --order 3 --max-order 5 --terms pure --output 2 --names a,b "
                        "--method exact --radius 2")
    assert panel.point == [0.5, -1.0] and panel.order == 3 and panel.max_order == 5
    assert panel.terms_kind == "pure" and panel.output == 2 and panel.names == ["a", "b"]
    assert panel.bounds == [[-1.5, 2.5], [-3.0, 1.0]] and panel.radius == 2.0
    engine = expand(shell.user_ns["net"], torch.tensor([0.5, -1.0]), 5, terms="pure", names=["a", "b"])
    assert panel.latex == engine.truncate(3).select(2).latex()
    assert torch.equal(panel.polynomial.coefficients, engine.truncate(3).select(2).coefficients)


def test_point_from_variable_and_function_model(shell):
    panel = hope(shell, "f --point-from x0 --order 2 --max-order 4")
    assert panel.point == pytest.approx([0.25, -0.5])
    engine = expand(shell.user_ns["f"], shell.user_ns["x0"], 4).truncate(2)
    assert panel.latex == engine.latex()


def test_point_from_a_batch_of_one(shell):
    panel = hope(shell, "net --point-from xb --order 2 --max-order 3 --output 1")
    engine = expand(shell.user_ns["net"], shell.user_ns["xb"], 3).truncate(2).select(1)
    assert panel.full_polynomial.batched and panel.latex == engine.latex()
    assert torch.equal(panel.polynomial.coefficients, engine.coefficients)


def test_assignment_form_returns_the_panel(shell):
    shell.run_cell("panel = %hope net --order 2")
    assert isinstance(shell.user_ns["panel"], HopePanel) and shell.user_ns["panel"].order == 2
    shell.user_ns.pop("panel")


def test_help_is_ipython_usage_text(shell, capsys):
    assert hope(shell, "--help") is None
    out = capsys.readouterr().out
    assert "%hope [--point X1,X2,...]" in out and "--point-from VAR" in out and "--radius" in out


@pytest.mark.parametrize(("line", "message"), [
    ("", "needs a model"),
    ("nope", "no variable named 'nope'"),
    ("not_a_model", "not a torch.nn.Module"),
    ("net --point 1,2,3", "has 3 value(s) but the model's first layer takes 2"),
    ("net --point a,b", "not a list of numbers"),
    ("net --point 1,nan", "must be finite"),
    ("net --point-from missing", "no variable named 'missing'"),
    ("net --point 0,0 --point-from x0", "either --point or --point-from"),
    ("net --order 12", "--order must be between 0 and 10, got 12"),
    ("net --order -1", "--order must be between 0 and 10"),
    ("net --order two", "--order must be an integer"),
    ("net --max-order -2", "--max-order must be >= 0"),
    ("net --output 3", "output 3 does not exist: the model has 3 output(s)"),
    ("net --terms mixed", "invalid choice"),
    ("net --method newton", "invalid choice"),
    ("net --radius 0", "--radius must be a positive number"),
    ("net --names x", "names has 1 entries but the point has 2 values"),
    ("net --names 1a,b", "--names must be identifiers"),
    ("net --bogus", "unrecognized arguments"),
    ("conv", "cannot tell how many inputs"),
    ("f --point 0", "%hope: "),
])
def test_bad_input_is_one_usage_error_line(shell, line, message):
    with pytest.raises(UsageError) as info:
        hope(shell, line)
    text = str(info.value)
    assert message in text and text.startswith("%hope") and "\n" not in text


def test_bad_input_in_a_cell_prints_one_line_no_traceback(shell, capsys):
    result = shell.run_cell("%hope net --order 99")
    assert isinstance(result.error_in_exec, UsageError)
    captured = capsys.readouterr()
    lines = [s for s in (captured.out + captured.err).splitlines() if s.strip()]
    assert lines == ["UsageError: %hope: --order must be between 0 and 10, got 99"]


def test_cell_magic_expression_of_x(shell):
    panel = shell.run_cell_magic("hope", "--point 0.5,1 --order 3 --max-order 4", "sin(x[0]) * exp(x[1])")
    engine = expand(lambda x: torch.sin(x[0]) * torch.exp(x[1]), torch.tensor([0.5, 1.0]), 4).truncate(3)
    assert panel.latex == engine.latex()


def test_cell_magic_names_statements_and_namespace(shell):
    shell.user_ns["scale"] = 2.0
    body = "s = scale * a\ntanh(s) + b ** 2"
    panel = shell.run_cell_magic("hope", "--names a,b --point 0.1,0.2 --max-order 3", body)
    engine = expand(lambda x: torch.tanh(2.0 * x[0]) + x[1] ** 2, torch.tensor([0.1, 0.2]), 3,
                    names=["a", "b"]).truncate(3)
    assert panel.names == ["a", "b"] and panel.latex == engine.latex()
    shell.user_ns.pop("scale")


def test_cell_magic_one_variable_by_default(shell):
    panel = shell.run_cell_magic("hope", "--max-order 4 --order 4", "exp(x)")
    assert panel.point == [0.0]
    assert panel.term_records["c"] == pytest.approx([1.0, 1.0, 0.5, 1 / 6, 1 / 24], rel=1e-6)


@pytest.mark.parametrize(("body", "message"), [
    ("x = ", "not valid Python"),
    ("y = x", "must end with an expression"),
    ("sin(x[0]) * x[5]", "%hope: "),
])
def test_cell_magic_bad_cells(shell, body, message):
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("hope", "--point 0,0", body)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_panel_is_displayed_once(shell, monkeypatch):
    shown = []
    original = HopePanel._repr_mimebundle_

    def spy(self, **kwargs):
        shown.append(self)
        return original(self, **kwargs)

    monkeypatch.setattr(HopePanel, "_repr_mimebundle_", spy)
    shell.run_cell("%hope net --max-order 3")  # shown by the magic; the returned value is not shown again
    assert len(shown) == 1
    shell.run_cell("panel = %hope net --max-order 3")
    assert len(shown) == 2
    shell.run_cell("panel")  # a later cell shows it as usual
    assert len(shown) == 3
    shell.user_ns.pop("panel")
