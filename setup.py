"""Build of the compiled jet kernels (hope_engine/algebra/kernels/_ckernels.c) at install / wheel time.

Everything else about the package is declared in pyproject.toml. The extension uses no Python API beyond an empty
module, so it is built against the stable ABI (one ``abi3`` wheel per platform serves CPython >= 3.10). It is optional:
where no C compiler exists at install time the build prints a warning, the install goes on, and the engine runs its
torch formulation (``hope_engine.algebra.kernels.backend_name()`` says which is in use).

Wheels: ``cibuildwheel`` (configuration in pyproject.toml) builds portable wheels for Linux (manylinux, x86_64 and
aarch64), macOS (x86_64 and arm64) and Windows (AMD64). ``HOPE_MARCH_NATIVE=1 pip install .`` adds -march=native (a
local build for this machine's CPU only; about 10-15% faster on the paper's conv net, never used for wheels).
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildKernels(build_ext):
    """Optimisation flags per compiler (MSVC or GCC-like); a failed build leaves the torch formulation in charge."""

    def build_extensions(self) -> None:
        msvc = self.compiler.compiler_type == "msvc"
        flags = ["/O2"] if msvc else ["-O3", "-fno-math-errno", "-fvisibility=hidden"]
        if not msvc and os.environ.get("HOPE_MARCH_NATIVE") == "1":
            flags.append("-march=native")
        for ext in self.extensions:
            ext.extra_compile_args = [*flags, *ext.extra_compile_args]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "hope_engine.algebra.kernels._ckernels",
            sources=["hope_engine/algebra/kernels/_ckernels.c"],
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", "0x030A0000")],
            optional=os.environ.get("HOPE_REQUIRE_KERNELS") != "1",
        )
    ],
    cmdclass={"build_ext": BuildKernels},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
