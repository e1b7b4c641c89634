// Which compiled kernel table (kernel_abi.h) this host runs: the CPU's features, read once,
// against the tables this build has. The portable image is built for x86-64-v3 and still runs
// the AVX-512 kernels on hosts that have them. Free functions; thread-safe.
#ifndef RNNSERVE_CORE_ENGINE_KERNELS_KERNEL_ISA_H_
#define RNNSERVE_CORE_ENGINE_KERNELS_KERNEL_ISA_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/engine/kernels/kernel_abi.h"

namespace rnnserve {

// "baseline", "avx2", "avx512".
absl::string_view KernelIsaName(KernelIsa isa);

// The tables compiled into this build that this CPU can run, best last. Always has kBaseline.
const std::vector<KernelIsa>& SupportedKernelIsas();

// SupportedKernelIsas() as "baseline, avx2, avx512", for messages and logs.
std::string SupportedKernelIsaList();

// The best of SupportedKernelIsas(): what "auto" means.
KernelIsa BestKernelIsa();

// "auto" (the best) or a name from KernelIsaName(). INVALID_ARGUMENT for an unknown name,
// FAILED_PRECONDITION for a table this build or this CPU lacks; both list what is supported.
absl::StatusOr<KernelIsa> ChooseKernelIsa(absl::string_view request);

// OK when `isa` is in SupportedKernelIsas(); else FAILED_PRECONDITION naming what is.
absl::Status CheckKernelIsaAvailable(KernelIsa isa);

// The table for `isa`, which must be in SupportedKernelIsas().
const KernelTable& KernelTableFor(KernelIsa isa);

// OK when this CPU has every instruction set the build's baseline (RNNSERVE_MARCH) assumes;
// otherwise FAILED_PRECONDITION naming what is missing, for main() to print before it runs
// anything that could fault on an illegal instruction.
absl::Status CheckCpuRunsThisBuild();

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_KERNELS_KERNEL_ISA_H_
