"""Both engines implement exactly the kernels of gru_cy.kernels, with the
contract's argument order: the extern "C" entry points of src_kernels/*.cu,
the CUDA launchers of gru_cy.cuda and the Cython engine's test wrappers."""
import glob
import inspect
import os

import pytest

from gru_cy import cuda
from gru_cy.kernels import KERNELS, KERNEL_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src_kernels")


INDEX_ARRAYS = ("rows",)
"""Pointer arguments holding int64 indices (all others hold the element type)."""


def _entries():
    out = {}
    for path in sorted(glob.glob(os.path.join(SRC, "*.cu"))):
        found = cuda.parse_entry_points(open(path, encoding="utf-8").read())
        assert not set(found) & set(out), f"{path}: entry points defined twice"
        out.update(found)
    return out


def test_names_are_unique_and_match_the_contract():
    assert len(set(KERNEL_NAMES)) == len(KERNEL_NAMES) == len(KERNELS)


def test_cuda_entry_points_are_exactly_the_kernel_list():
    expected = {f"{n}_{s}" for n in KERNEL_NAMES for s in ("f32", "f64")}
    assert set(_entries()) == expected


def test_cuda_loader_finds_the_same_entry_points():
    assert cuda.entry_points() == _entries()


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_cuda_argument_order_and_types(name):
    expected = cuda.contract_args(name)
    entries = _entries()
    for suffix, real in (("f32", "float"), ("f64", "double")):
        params = entries[f"{name}_{suffix}"]
        assert tuple(p for _, p in params) == expected
        for ctype, pname in params:
            # Pointers and scalars are of the element type (index arrays:
            # long long); sizes long long; flags (transA, transB, act) and
            # Adam's t int.
            base = ctype.replace("const ", "").rstrip("*")
            assert base in (real, "long long", "int"), (pname, ctype)
            if ctype.endswith("*"):
                assert base == (("long long" if pname in INDEX_ARRAYS else real)), (pname, ctype)
            elif pname in ("transA", "transB", "act", "t"):
                assert ctype == "int", (pname, ctype)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_cuda_launcher_signature(name):
    launcher = getattr(cuda, name)
    assert tuple(inspect.signature(launcher).parameters) == cuda.contract_args(name)
    grid, block = cuda.launch_geometry(name, {a: 7 for a in cuda.contract_args(name)})
    assert len(grid) == len(block) == 3 and grid[0] >= 1


def _cpu():
    try:
        from gru_cy import _cpu
    except ImportError as exc:
        pytest.skip(f"the Cython engine is not built: {exc}")
    return _cpu


def test_cpu_engine_implements_exactly_the_kernel_list():
    assert set(_cpu().CPU_KERNELS) == set(KERNEL_NAMES)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_cpu_wrapper_argument_order(name):
    # py_<name>(<the contract's arguments>, nthreads=1)
    names = tuple(inspect.signature(_cpu().cpu_kernel(name)).parameters)
    assert names[-1] == "nthreads"
    assert names[:-1] == cuda.contract_args(name)
