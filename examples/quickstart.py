"""A MomentumLSTM as a drop-in for torch.nn.LSTM: torch.nn's contract, chunked streaming with the
momentum carried over (carry_momentum=True), one-line conversion of an existing model, and a few
training steps on a toy task. Runs in seconds on a CPU."""

import torch

import momentumrnn as mr

torch.manual_seed(0)
lstm = mr.MomentumLSTM(input_size=1, hidden_size=32, batch_first=True, mu=0.6, epsilon=0.6)
head = torch.nn.Linear(32, 1)
x = torch.randn(16, 100, 1)  # (batch, time, features)

out, (h_n, c_n) = lstm(x)  # exactly torch.nn.LSTM's contract: out (16, 100, 32), h_n (1, 16, 32)
print("output", tuple(out.shape), "| h_n", tuple(h_n.shape))

# Streaming: carry the momentum across calls. The state is then (h, c, v), all tensors.
streaming = mr.MomentumLSTM(input_size=1, hidden_size=32, batch_first=True, carry_momentum=True)
streaming.load_state_dict(lstm.state_dict())
out1, state = streaming(x[:, :60])
out2, _ = streaming(x[:, 60:], state)
print(
    "state", streaming.state_names, "| chunked == one call:", torch.allclose(torch.cat([out1, out2], 1), out, atol=1e-6)
)

# Any model written for torch.nn: one line swaps its LSTMs for momentum layers, weights kept.
model = torch.nn.Sequential()
model.add_module("rnn", torch.nn.LSTM(1, 32, batch_first=True))
model = mr.convert(model, "heavy_ball", mu=0.6, epsilon=0.6)
print("converted:", type(model.rnn).__name__)

# Toy task: predict the running mean of the input.
target = x.cumsum(1) / torch.arange(1, 101).view(1, -1, 1)
opt = torch.optim.RMSprop([*lstm.parameters(), *head.parameters()], lr=1e-2, alpha=0.9)
for step in range(30):
    loss = torch.nn.functional.mse_loss(head(lstm(x)[0]), target)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lstm.parameters(), 1.0)
    opt.step()
    if step % 10 == 0 or step == 29:
        print(f"step {step:2d}  loss {loss.item():.4f}")
