"""asv benchmarks of gru_cy: shared sizes and fixtures.

Configurations are the project's benchmark sizes, ``gru_cy.bench.configs.CONFIGS``
(``B`` batch, ``T`` steps, ``I`` inputs, ``H`` outputs); config C, the largest,
lives in the ``*SlowTier`` classes.
Every fixture is built from a fixed seed so that runs compare like with like.
"""
import numpy as np

try:
    from gru_cy.bench.configs import CONFIGS  # name -> (B, T, I, H)
except ImportError:  # commits before gru_cy/bench/ became a package
    from gru_cy.bench import CONFIGS

FAST_CONFIGS = ["A", "B", "D"]
DTYPES = ["float32", "float64"]
VARIANTS = ["darknet", "reset_after"]
SEED = 20240601


def make_layer(config, dtype, variant):
    """A seeded ``gru_cy.GRU`` of the config's sizes (default settings otherwise)."""
    import gru_cy

    _, _, I, H = CONFIGS[config]
    return gru_cy.GRU(I, H, variant=variant, dtype=np.dtype(dtype), seed=SEED)


def make_data(config, dtype):
    """Input ``x`` (T, B, I), upstream gradient ``dy`` (T, B, H), state ``h0`` (B, H)."""
    B, T, I, H = CONFIGS[config]
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    h0 = (0.1 * rng.standard_normal((B, H))).astype(dtype)
    return x, dy, h0


def train_step(layer, x, dy, h0):
    """One training step: forward (train), backward, SGD update."""
    layer.forward(x, train=True, h0=h0)
    layer.backward(dy)
    layer.update(learning_rate=1e-3)
