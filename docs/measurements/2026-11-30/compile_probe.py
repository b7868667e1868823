"""Eager vs torch.compile for the decoder's per-step elementwise work (protocol sizes), fwd+bwd."""
import time, statistics, torch
torch.set_num_threads(2)
torch.manual_seed(0)
B, H, S, A, T = 64, 512, 15, 512, 16

def lstm_pw(gates, c_prev):
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c

def additive(q, keys, v, values, mask):
    hidden = torch.tanh(keys + q.unsqueeze(1))
    scores = (hidden @ v).masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, -1)
    return torch.bmm(w.unsqueeze(1), values).squeeze(1), w

def run(pw, att, reps=5):
    gates = torch.randn(T, B, 4 * H, requires_grad=True)
    keys = torch.randn(B, S, A, requires_grad=True)
    values = torch.randn(B, S, 2 * 256, requires_grad=True)
    v = torch.randn(A, requires_grad=True)
    mask = torch.ones(B, S, dtype=torch.bool); mask[: B // 2, S - 4:] = False
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        c = torch.zeros(B, H); total = 0
        for t in range(T):
            h, c = pw(gates[t], c)
            ctx, w = att(h, keys, v, values, mask)
            total = total + ctx.sum() + h.sum()
        total.backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)

eager = run(lstm_pw, additive)
t0 = time.perf_counter()
cpw, catt = torch.compile(lstm_pw, dynamic=True), torch.compile(additive, dynamic=True)
run(cpw, catt, reps=1)
print(f"compile+first {time.perf_counter()-t0:.1f}s")
for r in range(3):
    e = run(lstm_pw, additive); c = run(cpw, catt)
    print(f"eager {e*1000:.1f} ms  compiled {c*1000:.1f} ms  ratio {e/c:.2f}")
