import torch
# Read-only bandwidth reference: sum of rotating float32 buffers of one NVFP4 layer's size (57 MB), CUDA events.
n = 57_100_000 // 4
bufs = [torch.randn(n, device="cuda") for _ in range(8)]
for _ in range(20):
    for b in bufs: b.sum()
ts = []
for r in range(15):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for b in bufs: b.sum()
    e.record(); torch.cuda.synchronize()
    ts.append(s.elapsed_time(e) / len(bufs))
ts.sort(); t = ts[len(ts)//2]
print(f"torch.sum 57 MB: {t*1e3:.2f} us, {n*4/(t*1e-3)/1e9:.0f} GB/s read")
big = torch.randn(1 << 28, device="cuda")
big.sum(); torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(5): big.sum()
e.record(); torch.cuda.synchronize()
t = s.elapsed_time(e) / 5
print(f"torch.sum 1 GiB: {t*1e3:.0f} us, {big.numel()*4/(t*1e-3)/1e9:.0f} GB/s read")
