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
from . import orthogonal as _orthogonal
from .orthogonal import split_parameters

globals().update({name: getattr(_layers, name) for name in LAYER_NAMES})
globals().update({name: getattr(_cells, name) for name in CELL_NAMES})

#: every host ``build_layer`` takes
HOSTS = (*GATES, *_orthogonal.HOSTS)
#: every paper-named layer of every host: name -> (host, scheme kind, summary)
LAYER_NAMES = {**LAYER_NAMES, **_orthogonal.ORTHOGONAL_LAYER_NAMES}
globals().update({name: getattr(_orthogonal, name) for name in _orthogonal.ORTHOGONAL_LAYER_NAMES})
#: documented aliases of paper names: alias -> canonical name
LAYER_ALIASES: dict = {}

__version__ = "0.1.0"

__all__ = [
    "MomentumState", "Scheme", "SCHEME_KINDS", "GATES", "LAYER_NAMES", "LSTMState", "RNNState",
    "MomentumRNNBase", "build_layer", "layer_class", *LAYER_NAMES, "HOSTS", "LAYER_ALIASES",
    "split_parameters",
    "MomentumCellBase", "CELL_NAMES", "cell_class", *CELL_NAMES,
    "authors_init_", "to_native", "from_native",
]
