"""Does Richardson-Lucy already use both cores? (issue 16: LB-DVD <= 0.2 s on 2 cores)

A chunk of lbdvd's RL (8 frames of 256 x 256, 15 iterations of the same transforms and quotients as
``core.rl_batch``) at 1 and 2 torch threads, two chunks in a row, and two chunks at once in two Python
threads with torch at 1 thread each (the alternative: parallel chunks instead of parallel transforms).
Prints the best of 5; writes nothing (the reading is in BENCHMARKS.md "LB-DVD speed").

    python benchmarks/rl_threads.py
"""
import time, threading, torch, statistics
N = 256
x = torch.rand(8, N, N) + 0.1
otf = torch.fft.rfft2(torch.rand(1, N, N)); otf = otf / otf.abs().max()
def it(x):
    for _ in range(15):
        b = torch.fft.irfft2(torch.fft.rfft2(x).mul_(otf), s=(N, N))
        r = torch.div(x, b.clamp_min_(1e-12))
        f = torch.fft.irfft2(torch.fft.rfft2(r).mul_(otf.conj()), s=(N, N))
        x = x * f
    return x
def timeit(fn, n=5):
    fn(); ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts)
for th in (1, 2):
    torch.set_num_threads(th)
    print(f"threads {th}: one batch of 8, 15 iterations: {timeit(lambda: it(x)):.3f} s; two batches in a row: {timeit(lambda: (it(x), it(x))):.3f} s")
torch.set_num_threads(1)
def two_threads():
    ts = [threading.Thread(target=it, args=(x,)) for _ in range(2)]
    [t.start() for t in ts]; [t.join() for t in ts]
print(f"torch 1 thread, two Python threads, one batch each: {timeit(two_threads):.3f} s")
for name, f in (("rfft2", lambda: torch.fft.rfft2(x)), ("mul", lambda: x * x)):
    for th in (1, 2):
        torch.set_num_threads(th); print(name, th, f"{timeit(f, 50)*1e3:.2f} ms")
