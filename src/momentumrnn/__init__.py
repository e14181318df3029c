"""momentumrnn: momentum recurrent networks (MomentumRNN, NeurIPS 2020) for PyTorch.

The core (this package's top level) depends on torch and numpy only. The experiment toolkit
(``momentumrnn.toolkit``, the ``momentumrnn`` command) needs the ``train`` extra.
"""

from .schemes import MomentumState, Scheme, SCHEME_KINDS
from .layers import (  # noqa: F401  (the paper-named classes are generated in layers.py)
    GATES,
    LAYER_NAMES,
    LSTMState,
    MomentumRNNBase,
    RNNState,
    build_layer,
    layer_class,
)
from . import layers as _layers
from . import cells as _cells
from .cells import CELL_NAMES, MomentumCellBase, cell_class
from .init import authors_init_
from .native import from_native, to_native

globals().update({name: getattr(_layers, name) for name in LAYER_NAMES})
globals().update({name: getattr(_cells, name) for name in CELL_NAMES})

__version__ = "0.1.0"

__all__ = [
    "MomentumState", "Scheme", "SCHEME_KINDS", "GATES", "LAYER_NAMES", "LSTMState", "RNNState",
    "MomentumRNNBase", "build_layer", "layer_class", *LAYER_NAMES,
    "MomentumCellBase", "CELL_NAMES", "cell_class", *CELL_NAMES,
    "authors_init_", "to_native", "from_native",
]
