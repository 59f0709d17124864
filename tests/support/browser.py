"""JupyterLab on 127.0.0.1 and headless Chromium for the browser tests: one server start and stop, by PID."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def chromium() -> str:
    """Debian's Chromium (installed when absent and we may), or the test is skipped."""
    if not os.path.exists(CHROMIUM) and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent and could not be installed (apt-get install chromium)")
    return CHROMIUM


def launch(playwright):
    """A headless Chromium browser of ``playwright`` (sync API)."""
    return playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(tmp: Path, notebooks: dict, trusted: tuple[str, ...] = ()) -> Iterator[dict]:
    """JupyterLab serving ``notebooks`` ({file name: notebook dict, or a path to copy}) from ``tmp``/root, with its
    own config, data and settings folders (news off) and this working tree on the kernel's path; ``trusted``: names
    to `jupyter trust` first (JupyterLab renders widget outputs of trusted notebooks only). Yields {"url": name ->
    address, "log": the server log}; the server is stopped at exit (shutdown request, then signals by PID)."""
    root = tmp / "root"
    root.mkdir()
    for name, notebook in notebooks.items():
        if isinstance(notebook, Path):
            shutil.copy(notebook, root / name)
        else:
            (root / name).write_text(json.dumps(notebook))
    env = dict(os.environ)
    # the kernel imports this working tree's packages, however the environment was installed
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")]:
        (tmp / sub).mkdir()
        env[var] = str(tmp / sub)
    news = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    for name in trusted:
        subprocess.run([sys.executable, "-m", "jupyter", "trust", str(root / name)], env=env, check=True,
                       capture_output=True, timeout=120)
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed at exit
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         f"--IdentityProvider.token={token}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                log.close()
                pytest.fail(f"JupyterLab did not start:\n{(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
    try:
        yield {"url": {name: f"{base}/lab/tree/{name}?token={token}" for name in notebooks}, "log": tmp / "server.log"}
    finally:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=5)
            server.wait(timeout=10)
        except Exception:  # noqa: BLE001 - fall back to signals, always by PID
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()


def run_all(page) -> None:
    """Wait for the kernel, then Run All (retried: the menu may not act before the notebook is ready)."""
    kernel = page.locator(".jp-NotebookPanel-toolbar .jp-KernelName")
    deadline = time.time() + 60
    while True:
        name = (kernel.text_content() or "").strip()
        if name and name != "No Kernel":
            break
        assert time.time() < deadline, "the kernel did not start"
        page.wait_for_timeout(200)
    for _ in range(4):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        page.wait_for_timeout(1500)
        if (page.locator(".jp-InputPrompt").first.text_content() or "").strip() != "[ ]:":
            return
    pytest.fail("Run All did not start the cells")
