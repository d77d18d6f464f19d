"""The CUDA sources compile: with nvcc to PTX for sm_80 and sm_90 (warnings are
errors), and through NVRTC (CuPy's, the compiler gru_cy.cuda uses at run time)
for compute_80 and compute_90, file by file and as the one module gru_cy.cuda
builds.  Neither needs a GPU; each part skips, saying why, when its compiler is
missing.
"""
import os
import shutil
import subprocess

import pytest

from gru_cy import cuda

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src_kernels")
ARCHS = ("80", "90")
NVCC = shutil.which("nvcc")

pytestmark = pytest.mark.slow           # every test runs a CUDA compiler


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", cuda.SOURCE_FILES)
def test_nvcc_ptx(tmp_path, source, arch):
    out = tmp_path / (source + ".ptx")
    proc = subprocess.run(
        [NVCC, "-ptx", f"-arch=sm_{arch}", "-std=c++17", "-Werror", "all-warnings",
         "-I", SRC, os.path.join(SRC, source), "-o", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ptx = out.read_text()
    for entry in cuda.parse_entry_points(open(os.path.join(SRC, source)).read()):
        assert f".entry {entry}(" in ptx, entry


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
    except Exception as exc:  # ImportError, or a CuPy that cannot load libnvrtc
        pytest.skip(f"CuPy's NVRTC is not importable: {type(exc).__name__}: {exc}")
    try:
        nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"libnvrtc could not be loaded: {type(exc).__name__}: {exc}")
    return nvrtc


def _nvrtc_compile(nvrtc, text, name, arch, headers):
    prog = nvrtc.createProgram(text, name, [h.encode() for h in headers.values()],
                               [k.encode() for k in headers])
    try:
        nvrtc.compileProgram(prog, list(cuda.NVRTC_OPTIONS)
                             + [f"--gpu-architecture=compute_{arch}"])
    except Exception as exc:
        pytest.fail(f"NVRTC failed on {name} (compute_{arch}): {exc}\n"
                    f"{nvrtc.getProgramLog(prog)}")
    log = nvrtc.getProgramLog(prog).strip()
    assert "warning" not in log.lower(), log
    ptx = nvrtc.getPTX(prog)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_each_file(arch):
    nvrtc = _nvrtc()
    src = {n: open(os.path.join(SRC, n)).read() for n in cuda.SOURCE_FILES + (cuda.HEADER,)}
    for name in cuda.SOURCE_FILES:
        ptx = _nvrtc_compile(nvrtc, src[name], name, arch, {cuda.HEADER: src[cuda.HEADER]})
        for entry in cuda.parse_entry_points(src[name]):
            assert f".entry {entry}(" in ptx, entry


def test_nvrtc_module_as_loaded():
    # The exact text gru_cy.cuda hands to cupy.RawModule: header inlined once.
    nvrtc = _nvrtc()
    ptx = _nvrtc_compile(nvrtc, cuda.module_source(), "gru_cy_kernels.cu", "80", {})
    for entry in cuda.entry_points():
        assert f".entry {entry}(" in ptx, entry
