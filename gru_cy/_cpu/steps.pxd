# The per-kernel step loops (steps.pyx): every configuration's forward and backward.
from cython cimport floating

from gru_cy._cpu.layout cimport Dims, Ptrs

# x (T, B, I) -> y (T, B, H), with the training cache when train (Ptrs says where).
cdef void forward_steps(floating* theta, Dims d, Ptrs p, bint train) noexcept nogil

# dy (T, B, H), dh (B, H) dstate in / dh0 out -> dx (T, B, I); gradients +=.
cdef void backward_steps(floating* theta, Dims d, Ptrs p) noexcept nogil

# The backward of a padded batch's limited training forward (no BN, c kept):
# rows sorted by decreasing length (p.limits), dy read and dx written through
# p.xrows (p.order: zeros in dx where a sequence has ended); p.xc (chunk rows
# x I) and p.lbuf (chunk rows x (2H + I) + B x H) its buffers.
cdef void backward_limited(floating* theta, Dims d, Ptrs p) noexcept nogil
