"""Build the Cython engine.

Environment switches (read at build time):

* ``GRU_CY_NO_OPENMP=1``  build without OpenMP (serial engine).
* ``GRU_CY_NATIVE=1``     add ``-march=native`` (fast, but the wheel then only
  runs on CPUs like the build machine).  The default build is portable: the
  gemm micro-kernels carry ``target_clones`` so gcc dispatches AVX-512 / AVX2 /
  baseline versions at run time.
* ``GRU_CY_DEBUG=1``      ``-O0 -g`` and Cython bounds checks.
* ``GRU_CY_ASAN=1``       AddressSanitizer (``tools/asan.sh`` builds and tests
  with it).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags():
    """Return (compile, link) flags for OpenMP, or ([], []) with a warning."""
    if _flag("GRU_CY_NO_OPENMP"):
        return [], []
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            subprocess.run(cc + ["-fopenmp", path, "-o", os.path.join(tmp, "t")],
                           check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            warnings.warn("gru_cy: the C compiler does not support -fopenmp; "
                          "building a serial engine")
            return [], []
    return ["-fopenmp"], ["-fopenmp"]


OMP_COMPILE, OMP_LINK = _openmp_flags()
if _flag("GRU_CY_DEBUG"):
    OPT = ["-O0", "-g"]
else:
    OPT = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
if _flag("GRU_CY_NATIVE"):
    OPT.append("-march=native")
SANITIZE = ["-fsanitize=address", "-fno-omit-frame-pointer"] if _flag("GRU_CY_ASAN") else []
OPT += SANITIZE
COMPILE = OPT + OMP_COMPILE + ["-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION"]
BUILD_INFO = {
    "openmp": bool(OMP_COMPILE),
    "cflags": " ".join(OPT + OMP_COMPILE),
    "native": _flag("GRU_CY_NATIVE"),
}

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": _flag("GRU_CY_DEBUG"),
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}


EXTENSIONS = ("gemm", "cell", "steps", "team", "fused", "engine", "update", "net", "bf16")
"""The engine's modules (gru_cy/_cpu/<name>.pyx); docs/architecture.md says what each holds."""


def ext(name):
    return Extension(
        f"gru_cy._cpu.{name}",
        [f"gru_cy/_cpu/{name}.pyx"],
        include_dirs=[np.get_include(), os.path.join(HERE, "gru_cy", "_cpu")],
        extra_compile_args=COMPILE,
        extra_link_args=OMP_LINK + SANITIZE,
        depends=[os.path.join("gru_cy", "_cpu", f) for f in
                 os.listdir(os.path.join(HERE, "gru_cy", "_cpu"))
                 if f.endswith((".h", ".pxd"))],
    )


class BuildPy(build_py):
    """Ship src_kernels/ as package data (gru_cy/cuda_src) and record build flags."""

    def run(self):
        super().run()
        dst = os.path.join(self.build_lib, "gru_cy", "cuda_src")
        os.makedirs(dst, exist_ok=True)
        src = os.path.join(HERE, "src_kernels")
        for f in sorted(os.listdir(src)) if os.path.isdir(src) else []:
            if f.endswith((".cu", ".cuh")):
                shutil.copy(os.path.join(src, f), os.path.join(dst, f))
        with open(os.path.join(self.build_lib, "gru_cy", "_build_info.py"), "w") as f:
            f.write(f"BUILD_INFO = {BUILD_INFO!r}\n")


JOBS = os.cpu_count() or 1
"""The engine is nine modules: cythonize and compile them in parallel."""

setup(
    ext_modules=cythonize([ext(name) for name in EXTENSIONS],
                          compiler_directives=DIRECTIVES,
                          build_dir="build/cython", nthreads=JOBS),
    cmdclass={"build_py": BuildPy},
    options={"build_ext": {"parallel": JOBS}},
)
