"""momentumrnn: momentum recurrent networks (MomentumRNN, NeurIPS 2020) for PyTorch.

Every momentum scheme (``SCHEME_KINDS``) on every recurrent host (``HOSTS``): drop-in replacements
for ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` and the orthogonal, unitary and eigenvalue-normalized
modReLU hosts, by paper name (``MomentumLSTM``, ``AdamDTRIV``, ``NesterovENRNN``, ...) or with
``build_layer(host, scheme, ...)``. The mathematics: docs/equations.md.

The core (this package's top level) depends on torch and numpy only. The experiment toolkit
(``momentumrnn.toolkit``, the ``momentumrnn`` command) needs the ``train`` extra.
"""

from . import backends
from .cells import *
from .cells import MomentumCellBase
from .cells import __all__ as _CELLS
from .convert import convert, revert
from .hosts.enrnn import EigenvalueNormalizedRNN
from .hosts.gated import GATES, MomentumRNNBase
from .hosts.orthogonal import OrthogonalRNN
from .init import authors_init_
from .layers import *
from .layers import __all__ as _LAYERS
from .native import from_native, to_native
from .orthogonal.training import DynamicTrivialization, register_optimizer_hook, split_parameters
from .registry import CELL_ALIASES, CELL_NAMES, LAYER_ALIASES, LAYER_NAMES, build_layer, cell_class, layer_class
from .registry import hosts as _hosts
from .schemes import SCHEME_KINDS, SCHEMES, Scheme
from .sequence import SequenceBase

#: every host ``build_layer`` takes
HOSTS = _hosts()

__version__ = "0.1.0"

__all__ = [
    "Scheme",
    "SCHEMES",
    "SCHEME_KINDS",
    "GATES",
    "HOSTS",
    "SequenceBase",
    "MomentumRNNBase",
    "OrthogonalRNN",
    "EigenvalueNormalizedRNN",
    "MomentumCellBase",
    "build_layer",
    "layer_class",
    "cell_class",
    "LAYER_NAMES",
    "LAYER_ALIASES",
    "CELL_NAMES",
    "CELL_ALIASES",
    *_LAYERS,
    *[n for n in _CELLS if n not in ("MomentumCellBase", "CELL_NAMES", "CELL_ALIASES", "cell_class")],
    "authors_init_",
    "to_native",
    "from_native",
    "convert",
    "revert",
    "split_parameters",
    "DynamicTrivialization",
    "register_optimizer_hook",
    "backends",
]
