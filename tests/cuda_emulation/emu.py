"""Build the CUDA sources as a C++ shared library and launch their kernels on the CPU.

``build(cache_dir)`` compiles ``src_kernels/*.cu`` with g++ through
``cuda_shim.h`` into one shared library, with a generated C wrapper per
``extern "C" __global__`` entry point::

    extern "C" void emu_<entry>(unsigned gx, gy, gz, bx, by, bz, <kernel params>)

that runs the kernel over that grid with :func:`emu::launch`.  The library is
cached under ``cache_dir`` by a hash of every input (sources, shim, flags), so
a test session compiles it once.  :class:`Emulator` calls the wrappers through
ctypes with NumPy arrays, using the launch geometry of ``gru_cy.cuda``.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

from gru_cy import cuda

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SRC = os.path.join(REPO, "src_kernels")
SHIM = os.path.join(HERE, "cuda_shim.h")
CXX = os.environ.get("CXX", "g++")
CXXFLAGS = ("-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-w")

_CTYPES = {"long long": ctypes.c_longlong, "int": ctypes.c_int,
           "float": ctypes.c_float, "double": ctypes.c_double}


def compiler_missing():
    """None when the C++ compiler is usable, else the reason."""
    if shutil.which(CXX) is None:
        return f"no C++ compiler ({CXX}) on PATH"
    return None


def _sources():
    return {name: open(os.path.join(SRC, name), encoding="utf-8").read()
            for name in cuda.SOURCE_FILES + (cuda.HEADER,)}


def entry_points():
    """Entry points of the checkout's ``src_kernels`` (not the installed copy)."""
    out = {}
    src = _sources()
    for name in cuda.SOURCE_FILES:
        out.update(cuda.parse_entry_points(src[name]))
    return out


def translation_unit():
    """The C++ source compiled: the shim, every .cu file, then the wrappers."""
    lines = [f'#include "{SHIM}"']
    lines += [f'#include "{os.path.join(SRC, name)}"' for name in cuda.SOURCE_FILES]
    for entry, params in sorted(entry_points().items()):
        decl = ", ".join(f"{t} {n}" for t, n in params)
        call = ", ".join(n for _, n in params)
        lines.append(
            f'extern "C" void emu_{entry}(unsigned gx, unsigned gy, unsigned gz, '
            f'unsigned bx, unsigned by, unsigned bz, {decl}) {{\n'
            f'    emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), '
            f'[&] {{ {entry}({call}); }});\n}}')
    return "\n".join(lines) + "\n"


def build(cache_dir):
    """Compile (or reuse) the emulation library; returns its path."""
    tu = translation_unit()
    key = hashlib.sha256()
    for part in [tu, open(SHIM).read(), CXX, *CXXFLAGS, *_sources().values()]:
        key.update(part.encode())
    os.makedirs(cache_dir, exist_ok=True)
    lib = os.path.join(cache_dir, f"gru_cy_emu_{key.hexdigest()[:16]}.so")
    if os.path.exists(lib):
        return lib
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cpp = os.path.join(tmp, "emu_all.cpp")
        with open(cpp, "w") as f:
            f.write(tu)
        out = os.path.join(tmp, "lib.so")
        proc = subprocess.run([CXX, *CXXFLAGS, "-I", SRC, "-x", "c++", cpp, "-o", out],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"emulation build failed:\n{proc.stderr[-4000:]}")
        os.replace(out, lib)
    return lib


class Emulator:
    """Launch the emulated kernels with the geometry of ``gru_cy.cuda``."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.params = entry_points()
        self._fns = {}

    def _fn(self, entry):
        fn = self._fns.get(entry)
        if fn is None:
            fn = getattr(self.lib, f"emu_{entry}")
            types = [ctypes.c_uint] * 6
            for ctype, _ in self.params[entry]:
                types.append(ctypes.c_void_p if ctype.endswith("*") else _CTYPES[ctype])
            fn.argtypes = types
            fn.restype = None
            self._fns[entry] = fn
        return fn

    def run(self, name, args, geometry=None, dtype=None):
        """Run kernel ``name`` on ``args`` (dict by contract argument name).

        Array arguments are NumPy arrays whose data pointer is passed (a view
        with an offset passes the offset address), int addresses, or None
        (NULL).  ``geometry`` (grid, block) overrides
        ``gru_cy.cuda.launch_geometry``; ``dtype`` defaults to the first array's.
        """
        if dtype is None:
            dtype = next(v.dtype for v in args.values() if isinstance(v, np.ndarray))
        entry = f"{name}_{'f32' if dtype == np.float32 else 'f64'}"
        if geometry is None:
            geometry = cuda.launch_geometry(name, args)
        grid, block = geometry
        values = []
        for (ctype, pname) in self.params[entry]:
            v = args[pname]
            if ctype.endswith("*"):
                if isinstance(v, np.ndarray):
                    want = np.int64 if "long long" in ctype else dtype
                    assert v.dtype == want, (pname, v.dtype, want)
                    v = v.ctypes.data
                values.append(v)
            else:
                values.append(v)
        self._fn(entry)(*grid, *block, *values)
