"""A MomentumLSTM as a drop-in for torch.nn.LSTM: forward, chunked streaming with the momentum
state carried over, and a few training steps on a toy task. Runs in seconds on a CPU."""

import torch

import momentumrnn as mr

torch.manual_seed(0)
lstm = mr.MomentumLSTM(input_size=1, hidden_size=32, batch_first=True, mu=0.6, epsilon=0.6)
head = torch.nn.Linear(32, 1)
x = torch.randn(16, 100, 1)  # (batch, time, features)

out, state = lstm(x)  # out: (16, 100, 32); state = LSTMState(h, c, momentum)
print("output", tuple(out.shape), "| momentum v", tuple(state.momentum.v.shape))

# The same sequence in two chunks, state (momentum included) passed on: identical result.
out1, st = lstm(x[:, :60])
out2, _ = lstm(x[:, 60:], st)
print("chunked == one call:", torch.allclose(torch.cat([out1, out2], 1), out, atol=1e-6))

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
