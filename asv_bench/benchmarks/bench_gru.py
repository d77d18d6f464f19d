"""Forward, backward, training step and batch-1 streaming of ``gru_cy.GRU``.

``time_*`` methods time only the call; ``peakmem_*`` report the process's
peak resident memory with the fixtures of ``setup()`` in place.
"""
from . import DTYPES, FAST_CONFIGS, VARIANTS, make_data, make_layer, train_step


class _LayerBench:
    params = [FAST_CONFIGS, DTYPES, VARIANTS]
    param_names = ["config", "dtype", "variant"]

    def setup(self, config, dtype, variant):
        self.layer = make_layer(config, dtype, variant)
        self.x, self.dy, self.h0 = make_data(config, dtype)


class Forward(_LayerBench):
    """Inference forward over the whole sequence, from a fixed ``h0``."""

    def time_forward(self, config, dtype, variant):
        self.layer.forward(self.x, h0=self.h0)

    def peakmem_forward(self, config, dtype, variant):
        self.layer.forward(self.x, h0=self.h0)


class Backward(_LayerBench):
    """Backward through one training forward (gradients accumulate across calls)."""

    def setup(self, config, dtype, variant):
        super().setup(config, dtype, variant)
        self.layer.forward(self.x, train=True, h0=self.h0)

    def time_backward(self, config, dtype, variant):
        self.layer.backward(self.dy)

    def peakmem_backward(self, config, dtype, variant):
        self.layer.backward(self.dy)


class TrainStep(_LayerBench):
    """Training forward + backward + SGD update."""

    def time_train_step(self, config, dtype, variant):
        train_step(self.layer, self.x, self.dy, self.h0)

    def peakmem_train_step(self, config, dtype, variant):
        train_step(self.layer, self.x, self.dy, self.h0)


class Streaming:
    """Batch-1 streaming: one call per time step (T=1, B=1), state carried; config A sizes."""

    params = [DTYPES, VARIANTS]
    param_names = ["dtype", "variant"]

    def setup(self, dtype, variant):
        self.layer = make_layer("A", dtype, variant)
        x, _, _ = make_data("A", dtype)
        self.xt = x[:1].copy()          # (1, 1, I)
        self.layer.forward(self.xt)     # the state exists from here on

    def time_stream_step(self, dtype, variant):
        self.layer.forward(self.xt)

    def peakmem_stream_step(self, dtype, variant):
        self.layer.forward(self.xt)


class SlowTierC:
    """Config C (B=64, T=100, I=512, H=1024), float32 only, one repeat per sample."""

    params = [VARIANTS]
    param_names = ["variant"]
    number = 1
    repeat = (1, 3, 60.0)
    warmup_time = 0
    timeout = 900

    def setup(self, variant):
        self.layer = make_layer("C", "float32", variant)
        self.x, self.dy, self.h0 = make_data("C", "float32")

    def time_forward(self, variant):
        self.layer.forward(self.x, h0=self.h0)

    def time_train_step(self, variant):
        train_step(self.layer, self.x, self.dy, self.h0)

    def peakmem_train_step(self, variant):
        train_step(self.layer, self.x, self.dy, self.h0)



class ForwardBf16:
    """Inference forward with ``inference_precision="bfloat16"`` (float32 layer),
    configs A-D; skipped where the CPU lacks AVX512_BF16 or the commit predates it."""

    params = [FAST_CONFIGS + ["C"], VARIANTS]
    param_names = ["config", "variant"]

    def setup(self, config, variant):
        self.layer = make_layer(config, "float32", variant)
        if not hasattr(type(self.layer), "inference_precision"):
            raise NotImplementedError("no bfloat16 inference at this commit")
        try:
            self.layer.inference_precision = "bfloat16"
        except RuntimeError as e:       # the CPU lacks AVX512_BF16
            raise NotImplementedError(str(e))
        self.x, _, self.h0 = make_data(config, "float32")
        self.layer.forward(self.x, h0=self.h0)      # the weights' conversion

    def time_forward(self, config, variant):
        self.layer.forward(self.x, h0=self.h0)
