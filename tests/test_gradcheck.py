"""torch.autograd.gradcheck on small sizes for every host x scheme (the hand-written backward
of the fused recurrence and the filters included)."""

import itertools

import pytest
import torch
from states import parts_of
from test_layers import HOSTS, KINDS, make, random_state, to_layer_state
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_gradcheck(host, kind):
    layer = make(host, kind, input_size=2, hidden=3, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 2, layer.scheme.state_fields)
    names = [k for k, v in st.items() if v.requires_grad]
    params = list(layer.parameters())

    def f(x, *tensors):
        s = dict(st)
        s.update(zip(names, tensors[: len(names)]))
        packed = pack_padded_sequence(x, [4, 3], enforce_sorted=False)
        out, state = torch.func.functional_call(
            layer,
            dict(zip([n for n, _ in layer.named_parameters()], tensors[len(names) :])),
            (packed, to_layer_state(layer, s)),
        )
        out = pad_packed_sequence(out)[0]
        return (out, *[t for t in parts_of(layer, state).values() if t.is_floating_point()])  # h, c, momentum

    assert torch.autograd.gradcheck(f, (x, *[st[n] for n in names], *params), eps=1e-6, atol=1e-7, fast_mode=True)
