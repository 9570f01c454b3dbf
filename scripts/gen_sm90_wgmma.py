# Writes src/cuda/sm90_wgmma.cuh: inline-PTX wrappers of wgmma.mma_async with every accumulator register named,
# one per N. Run from the repository root after changing the list of N.
import sys
out = []
out.append('''// The sm_90a warpgroup MMA (wgmma) forms the W4A16 kernels use: BF16 inputs, FP32 accumulators, A (the
// dequantized weights) from registers in the mma.sync A-fragment layout, B (the activations) from shared memory
// through a matrix descriptor. Inline PTX names every accumulator register, so each N has its own spelled-out
// form (written by scripts/gen_sm90_wgmma.py). scale_d = 0 overwrites the accumulators (D = A.B), 1 adds to
// them. Only compiled for sm_90a (the instructions do not exist elsewhere); callers guard with
// FP4LAB_WGMMA_ENABLED.
#pragma once
#include <cstdint>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FP4LAB_WGMMA_ENABLED 1
#endif

namespace fp4lab::ptx {

#ifdef FP4LAB_WGMMA_ENABLED
// Shared-memory matrix descriptor, no swizzle: 8-row x 16-byte core matrices, lbo bytes apart along K and
// sbo bytes apart along N (PTX ISA, "Matrix Descriptor Format").
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
         (static_cast<uint64_t>(sbo >> 4) << 32);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\\n" ::"n"(N) : "memory");
}
// mbarrier phases and the bulk (TMA, non-tensor) copy: a contiguous global range into shared memory, its
// bytes counted against the barrier's expected transaction count.
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\\n" ::: "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bulk_copy_g2s(uint32_t dst, const void* src, int bytes, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}
// Waits until the barrier's phase with this parity has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  asm volatile(
      "{\\n.reg .pred done;\\nWAIT:\\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\\n"
      "@!done bra WAIT;\\n}\\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Keeps the compiler from moving reads or writes of the accumulators across the asynchronous MMAs.
template <int R>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The same for the A fragments of a k-chunk (four k16 steps), which wgmma reads after the instruction issues.
__device__ __forceinline__ void wgmma_fence_operands(uint32_t (&a)[4][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) asm volatile("" : "+r"(a[j][i])::"memory");
}

template <int N>
__device__ void wgmma_bf16_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                              int scale_d);
''')
for n in (32, 64, 128, 256):
    r = n // 2
    regs = ", ".join(f"%{i}" for i in range(r))
    a0 = r
    lines = []
    lines.append(f"template <>\n__device__ __forceinline__ void wgmma_bf16_rs<{n}>(float (&d)[{r}], const uint32_t (&a)[4],\n                                                     uint64_t desc_b, int scale_d) {{")
    lines.append('  asm volatile(')
    lines.append('      "{\\n.reg .pred p;\\nsetp.ne.b32 p, %' + str(a0+5) + ', 0;\\n"')
    lines.append(f'      "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 "')
    # wrap register list
    chunk = []
    s = "{"
    parts = [f"%{i}" for i in range(r)]
    line = '      "{'
    for i, p in enumerate(parts):
        add = p + ("," if i < r - 1 else "")
        if len(line) + len(add) > 100:
            lines.append(line + '"')
            line = '      "'
        line += add
    lines.append(line + '}, "')
    lines.append(f'      "{{%{a0},%{a0+1},%{a0+2},%{a0+3}}}, %{a0+4}, p, 1, 1, 0;\\n"')
    lines.append('      "}\\n"')
    outs = [f'"+f"(d[{i}])' for i in range(r)]
    line = '      : '
    for i, o in enumerate(outs):
        add = o + (", " if i < r - 1 else "")
        if len(line) + len(add) > 110:
            lines.append(line.rstrip())
            line = '        '
        line += add
    lines.append(line)
    lines.append('      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));')
    lines.append('}')
    out.append("\n".join(lines) + "\n")
out.append("#endif  // FP4LAB_WGMMA_ENABLED\n\n}  // namespace fp4lab::ptx\n")
open(sys.argv[1] if len(sys.argv) > 1 else "src/cuda/sm90_wgmma.cuh", "w").write("\n".join(out))
