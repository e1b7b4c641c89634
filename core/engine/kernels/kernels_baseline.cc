// The engine's kernels (kernels_impl.inc) compiled for the build's own -march (RNNSERVE_MARCH):
// runs wherever the binary runs.
// The flags and the renamed Eigen namespace come from core/engine/CMakeLists.txt.
#define RNNSERVE_KERNEL_NAMESPACE kernels_baseline
#define RNNSERVE_KERNEL_ISA KernelIsa::kBaseline
#include "core/engine/kernels/kernels_impl.inc"
