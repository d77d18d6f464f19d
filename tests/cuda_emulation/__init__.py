"""CPU emulation of the CUDA kernels (see emu.py and cuda_shim.h)."""
