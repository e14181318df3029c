"""Hosts: the recurrent cells a momentum scheme drives. One module per host (family), each
registering itself in :mod:`momentumrnn.registry`: ``gated`` (RNN, LSTM, GRU), ``orthogonal``
(expRNN, DTRIV, scoRNN, scuRNN) and ``enrnn`` over the shared modReLU base (``modrelu``)."""
