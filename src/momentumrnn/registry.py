"""The registry of hosts, layers and cells, and the naming rule.

A host registers once (:func:`register_host`: its name, title and family); its paper-named
layer and cell classes register themselves when they are defined (``class MomentumLSTM(...,
scheme=HEAVY_BALL)``). Names follow one rule, ``<scheme prefix><host title>`` (``MomentumLSTM``,
``AdamDTRIV``, ``NesterovENRNN``, cells with ``Cell`` appended), and the scheme table adds the
paper's own names as documented aliases (``SRLSTM`` = ``NesterovLSTM``, the authors'
``SRDTRIV`` = ``RestartMomentumDTRIV``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from torch import nn

from .schemes import SCHEMES, canonical_kind

# The layer and cell classes sit above this module (they register themselves here), so it names
# them as modules (SequenceBase / MomentumCellBase subclasses: sequence.py and cells.py register them).

__all__ = [
    "HostInfo",
    "HOSTS",
    "LAYER_NAMES",
    "LAYER_ALIASES",
    "CELL_NAMES",
    "CELL_ALIASES",
    "register_host",
    "register_layer",
    "register_cell",
    "paper_name",
    "build_layer",
    "layer_class",
    "cell_class",
    "hosts",
]


class HostInfo(NamedTuple):
    name: str
    title: str
    family: str
    summary: str


#: host name -> HostInfo, in registration order
HOSTS: dict = {}
#: canonical paper name -> (host, scheme kind, one-line summary), every host
LAYER_NAMES: dict = {}
#: paper alias -> canonical name
LAYER_ALIASES: dict = {}
#: cell name -> (host, scheme kind)
CELL_NAMES: dict = {}
#: cell alias -> canonical cell name
CELL_ALIASES: dict = {}
_LAYERS: dict[tuple[str, str], type[nn.Module]] = {}  # (host, kind) -> class
_CELLS: dict[str, type[nn.Module]] = {}
_BY_NAME: dict[str, type[nn.Module]] = {}


def register_host(name: str, title: str, family: str, summary: str) -> None:
    """Register a host: ``name`` (``build_layer``'s), ``title`` (the end of its paper names),
    ``family`` (which backends run it: ``"gated"`` or ``"modrelu"``)."""
    HOSTS[name] = HostInfo(name, title, family, summary)


def hosts() -> tuple[str, ...]:
    return tuple(HOSTS)


def paper_name(host: str, kind: str) -> str:
    """The canonical paper name of a host and scheme: the scheme's prefix and the host's title
    (``AdamLSTM``)."""
    return SCHEMES[kind].prefix + HOSTS[host].title


def _aliases(host: str, kind: str) -> list[str]:
    alias = SCHEMES[kind].paper_alias
    if alias is not None and alias[1] == HOSTS[host].family:
        return [alias[0] + HOSTS[host].title]
    return []


def register_layer(cls: type[nn.Module]) -> None:
    """Record a paper-named layer class (called when the class is defined)."""
    named = cast(Any, cls)  # a SequenceBase subclass (sequence.py registers it when it is defined)
    host, kind = named.host, cast(str, named.scheme_kind)  # (set: a paper-named class)
    if host not in HOSTS:
        raise ValueError(f"layer {cls.__name__}: host {host!r} is not registered")
    name = paper_name(host, kind)
    if cls.__name__ != name:
        raise ValueError(f"layer class {cls.__name__} of host {host!r} and scheme {kind!r} must be named {name}")
    _LAYERS[(host, kind)] = cls
    _BY_NAME[name] = cls
    LAYER_NAMES[name] = (host, kind, f"{SCHEMES[kind].summary} ({HOSTS[host].summary})")
    for alias in _aliases(host, kind):
        LAYER_ALIASES[alias] = name
        _BY_NAME[alias] = cls


def register_cell(cls: type[nn.Module]) -> None:
    """Record a paper-named cell class (called when the class is defined)."""
    named = cast(Any, cls)  # a MomentumCellBase subclass (cells.py registers it when it is defined)
    host, kind = named.host, cast(str, named.scheme_kind)  # (set: a paper-named class)
    name = paper_name(host, kind) + "Cell"
    if cls.__name__ != name:
        raise ValueError(f"cell class {cls.__name__} of host {host!r} and scheme {kind!r} must be named {name}")
    _CELLS[name] = cls
    CELL_NAMES[name] = (host, kind)
    for alias in _aliases(host, kind):
        CELL_ALIASES[alias + "Cell"] = name
        _CELLS[alias + "Cell"] = cls


def build_layer(host: str, scheme: str, input_size: int, hidden_size: int, **kwargs: Any) -> nn.Module:
    """Build a layer from a host (one of :data:`HOSTS`: ``"rnn"``, ``"lstm"``, ``"gru"``,
    ``"exprnn"``, ``"dtriv"``, ``"scornn"``, ``"scurnn"``, ``"enrnn"``) and a scheme (a kind of
    :data:`~momentumrnn.SCHEMES` or an alias); ``kwargs`` are the class's constructor
    arguments (``torch.nn``'s, the hyper-parameters, host options)."""
    if not isinstance(host, str) or host.lower() not in HOSTS:
        raise ValueError(f"unknown host {host!r}; expected one of {', '.join(HOSTS)}")
    key = (host.lower(), canonical_kind(scheme))
    if key not in _LAYERS:
        raise ValueError(f"no layer of host {key[0]!r} with scheme {key[1]!r} is registered")
    return _LAYERS[key](input_size, hidden_size, **kwargs)


def layer_class(name: str) -> type[nn.Module]:
    """The layer class of a paper name or alias: ``"MomentumLSTM"``, ``"AdamGRU"``, ``"SRLSTM"``,
    ``"LSTM"``, ``"MomentumDTRIV"``, ``"SRDTRIV"``, ``"ENRNN"``, ..."""
    if not isinstance(name, str) or name not in _BY_NAME:
        raise ValueError(
            f"unknown layer {name!r}; expected one of {', '.join(LAYER_NAMES)} "
            f"(or an alias: {', '.join(LAYER_ALIASES)})"
        )
    return _BY_NAME[name]


def cell_class(name: str) -> type[nn.Module]:
    """The cell class of a name (``"MomentumLSTMCell"``, ``"SRLSTMCell"``, ...)."""
    if not isinstance(name, str) or name not in _CELLS:
        raise ValueError(f"unknown cell {name!r}; expected one of {', '.join(CELL_NAMES)}")
    return _CELLS[name]
