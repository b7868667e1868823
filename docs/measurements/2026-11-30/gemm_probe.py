"""float32 GFLOP/s of the training step's product shapes against a 2048^2 square product, 2 threads."""
import time, statistics, torch
torch.set_num_threads(2)
def rate(m, k, n, reps=30):
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); torch.mm(a, b); ts.append(time.perf_counter() - t)
    return 2 * m * k * n / statistics.median(ts) / 1e9
for r in range(3):
    print(f"round {r+1}: square 2048x2048x2048 {rate(2048, 2048, 2048, 5):.0f} GFLOP/s; "
          f"decoder step forward 64x1024 @ 1024x2048 {rate(64, 1024, 2048):.0f}; "
          f"its input gradient 64x2048 @ 2048x1024 {rate(64, 2048, 1024):.0f}; "
          f"output layer 1000x512 @ 512x5486 {rate(1000, 512, 5486, 10):.0f}")
