"""The README's Python examples run as written (in order, sharing names, as a
reader would paste them)."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "README.md")


def _blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_has_python_examples():
    assert len(_blocks()) >= 4


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in _blocks():
        if "import torch" in block:
            continue               # test_readme_torch_example
        if "import gru_cy.onnx" in block:
            continue               # test_readme_onnx_example
        exec(compile(block, "README.md", "exec"), namespace)
    # what the examples promise
    assert namespace["y"].shape == (20, 8, 5)
    assert namespace["p"].shape == (20, 8, 5)
    assert namespace["accuracy"] > 0.95


def test_readme_torch_example():
    pytest.importorskip("torch", reason="the PyTorch example needs torch")
    for block in _blocks():
        if "import torch" in block:
            exec(compile(block, "README.md", "exec"), {})


def test_readme_onnx_example(tmp_path, monkeypatch):
    pytest.importorskip("onnx", reason="the ONNX example needs the onnx package")
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in _blocks() if "import gru_cy.onnx" in b]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
