import torch, time, statistics
torch.set_num_threads(2)
R, S, A = 320, 15, 512
K = torch.randn(R, S, A); q = torch.randn(R, A); v = torch.nn.Linear(A, 1, bias=False)
def base():
    return v(torch.tanh(K + q.unsqueeze(1))).squeeze(-1)
def inplace():
    h = K + q.unsqueeze(1); h.tanh_(); return (h @ v.weight.squeeze(0))
def chunked():
    out = torch.empty(R, S)
    w = v.weight.squeeze(0)
    for i in range(0, R, 64):
        h = K[i:i+64] + q[i:i+64].unsqueeze(1); h.tanh_(); out[i:i+64] = h @ w
    return out
f = torch.compile(base, dynamic=True)
with torch.no_grad():
    f()
    for fn in (base, inplace, chunked, f):
        assert torch.allclose(fn(), base(), atol=1e-4)
    for r in range(3):
        res = {}
        for name, fn in (("base", base), ("inplace", inplace), ("chunked", chunked), ("compiled", f)):
            ts = []
            for _ in range(30):
                t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
            res[name] = statistics.median(ts) * 1000
        print("  ".join(f"{k} {v:.2f} ms" for k, v in res.items()))
