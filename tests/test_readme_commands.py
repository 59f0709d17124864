"""The README's commands and Python snippets, run verbatim, so they cannot rot.

Every line of a ```bash block and every ```python block of README.md is collected. ``hope ...`` lines run as they are
written, in a temporary folder holding the ``model.pt2`` / ``model.pt`` files they name; Python blocks run in one
namespace (in order) that defines the names the README says they stand for; the IPython block runs in an IPython
shell. ``make demo`` and ``make test`` are not run (a browser; the whole suite, this test included): the Makefile must
still define every target the README names. A README line this file does not know how to run fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent

#: README lines that are not run, and why (exactly as written, comment stripped)
NOT_RUN = {
    "make demo": "opens JupyterLab in a browser",
    "make test": "runs the whole test suite, this test included",
    ".venv/bin/python benchmarks/run.py": "takes minutes; the --quick line below runs the same code",
}
SLOW = {".venv/bin/python benchmarks/run.py --quick", ".venv/bin/python benchmarks/surrogate.py"}


def code_blocks(language: str) -> list[str]:
    """The bodies of the README's fenced blocks in ``language``."""
    return [m.group(1) for m in re.finditer(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)]


def shell_lines() -> list[str]:
    """Every command line of the ```bash blocks, without its trailing comment."""
    lines = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            command = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def test_the_readme_has_commands_and_snippets():
    assert len(shell_lines()) >= 8 and len(code_blocks("python")) >= 3


def test_make_targets_exist():
    named = [line.split()[1] for line in shell_lines() if line.startswith("make ")]
    named += re.findall(r"`make ([\w-]+)`", README)
    assert named and set(named) <= make_targets(), set(named) - make_targets()


def test_every_shell_line_is_known():
    unknown = [line for line in shell_lines()
               if not (line in NOT_RUN or line in SLOW or line.startswith(("hope ", "make ")))]
    assert unknown == [], f"README commands this test does not run: {unknown}"


def test_make_demo_script_recipe_runs():
    """``make demo-script`` is set-up plus one command: run that command (the set-up would reinstall the venv)."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo-script:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    for line in recipe.splitlines():
        command = line.strip().replace("$(BIN)", str(BIN))
        result = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> Path:
    """model.pt2 (two inputs) and model.pt (an 8x8 digit classifier), torch.export programs with a dynamic batch axis
    (``hope discover`` evaluates many points at once), in a fresh folder."""
    folder = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    batch = {"input": {0: torch.export.Dim("batch")}}
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).eval()
    torch.export.save(torch.export.export(mlp, (torch.zeros(2, 2),), dynamic_shapes=batch), str(folder / "model.pt2"))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 10)).eval()
    program = torch.export.export(cnn, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=batch)
    torch.export.save(program, str(folder / "model.pt"))
    return folder


@pytest.mark.parametrize("command", [line for line in shell_lines() if line.startswith("hope ")])
def test_hope_command(command, model_files):
    args = shlex.split(command)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([str(BIN / "hope"), *args[1:]], cwd=model_files, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, f"{command}\n{result.stdout[-1500:]}\n{result.stderr[-2500:]}"
    assert result.stdout.strip()
    for flag, value in zip(args, args[1:]):
        if flag == "--figure":
            assert (model_files / value).stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(SLOW))
def test_benchmark_command(command):
    assert command in shell_lines()
    args = shlex.split(command)
    args[0] = str(BIN / "python") if args[0] == ".venv/bin/python" else args[0]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2500:]


def test_python_snippets_run():
    """The ```python blocks, in order, in one namespace holding the names the README says they stand for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 10)).double().eval()
    namespace = {
        "torch": torch,
        "model": torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double().eval(),
        "x0": torch.tensor([0.1, -0.2], dtype=torch.float64),
        "x1": torch.tensor([0.3, 0.1], dtype=torch.float64),
        "x": torch.rand(5, 2, dtype=torch.float64),
        "center": torch.tensor([0.0, 0.0], dtype=torch.float64),
        "cnn": cnn,
        "image": torch.rand(1, 1, 8, 8, dtype=torch.float64),
    }
    blocks = code_blocks("python")
    ipython = [b for b in blocks if b.lstrip().startswith("%")]
    plain = [b for b in blocks if b not in ipython]
    assert len(plain) >= 2 and len(ipython) == 1
    try:
        for block in plain:
            exec(compile(block, "<README.md>", "exec"), namespace)  # noqa: S102 - the README's own snippets
    finally:
        plt.close("all")
    assert namespace["a"].shape == namespace["image"].shape


def test_ipython_snippet_runs():
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from IPython.testing.globalipapp import start_ipython

    from hope_widgets import HopePanel

    shell = start_ipython() or TerminalInteractiveShell.instance()
    torch.manual_seed(0)
    shell.user_ns["net"] = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    (block,) = [b for b in code_blocks("python") if b.lstrip().startswith("%")]
    for line in block.splitlines():
        line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
        if not line:
            continue
        result = shell.run_cell(line)
        assert result.success, (line, result.error_in_exec)
        if line.startswith("%hope net"):
            assert isinstance(result.result, HopePanel) or result.result is None
    shell.user_ns.pop("net")


def test_extras_named_in_the_readme_exist():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = set(re.findall(r'pip install -e "\.\[([\w,]+)\]"', README))
    assert {"widgets", "jupyter"} <= {e for group in named for e in group.split(",")} <= set(extras)
    assert {"jupyterlab", "ipykernel"} <= {re.split(r"[<>=\[]", d)[0] for d in extras["jupyter"]}
