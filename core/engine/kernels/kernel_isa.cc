#include "core/engine/kernels/kernel_isa.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace rnnserve {

// Each per-ISA object (kernels_<isa>.cc) defines its table in its own namespace.
namespace kernels_baseline {
const KernelTable& Table();
}
#if defined(RNNSERVE_X86_KERNELS)
namespace kernels_avx2 {
const KernelTable& Table();
}
namespace kernels_avx512 {
const KernelTable& Table();
}
#endif

namespace {

#if defined(RNNSERVE_X86_KERNELS)
// __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0).
bool CpuHasAvx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool CpuHasAvx512() {
  return CpuHasAvx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
#endif

}  // namespace

absl::string_view KernelIsaName(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kBaseline:
      return "baseline";
    case KernelIsa::kAvx2:
      return "avx2";
    case KernelIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

const std::vector<KernelIsa>& SupportedKernelIsas() {
  static const std::vector<KernelIsa> supported = [] {
    std::vector<KernelIsa> isas = {KernelIsa::kBaseline};
#if defined(RNNSERVE_X86_KERNELS)
    __builtin_cpu_init();
    if (CpuHasAvx2()) isas.push_back(KernelIsa::kAvx2);
    if (CpuHasAvx512()) isas.push_back(KernelIsa::kAvx512);
#endif
    return isas;
  }();
  return supported;
}

std::string SupportedKernelIsaList() {
  std::vector<std::string> names;
  for (KernelIsa isa : SupportedKernelIsas()) names.emplace_back(KernelIsaName(isa));
  return absl::StrJoin(names, ", ");
}

KernelIsa BestKernelIsa() { return SupportedKernelIsas().back(); }

absl::Status CheckKernelIsaAvailable(KernelIsa isa) {
  const std::vector<KernelIsa>& supported = SupportedKernelIsas();
  if (std::find(supported.begin(), supported.end(), isa) != supported.end()) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("kernel instruction set '", KernelIsaName(isa), "' is not available: ",
#if defined(RNNSERVE_X86_KERNELS)
                   "this CPU lacks it",
#else
                   "this build is not for x86-64",
#endif
                   "; available here: auto, ", SupportedKernelIsaList()));
}

absl::StatusOr<KernelIsa> ChooseKernelIsa(absl::string_view request) {
  if (request == "auto") return BestKernelIsa();
  for (KernelIsa isa : {KernelIsa::kBaseline, KernelIsa::kAvx2, KernelIsa::kAvx512}) {
    if (request != KernelIsaName(isa)) continue;
    RETURN_IF_ERROR(CheckKernelIsaAvailable(isa));
    return isa;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown kernel instruction set '", request.substr(0, 32),
                   "': expected auto, baseline, avx2 or avx512"));
}

const KernelTable& KernelTableFor(KernelIsa isa) {
#if defined(RNNSERVE_X86_KERNELS)
  if (isa == KernelIsa::kAvx2) return kernels_avx2::Table();
  if (isa == KernelIsa::kAvx512) return kernels_avx512::Table();
#endif
  return kernels_baseline::Table();
}

absl::Status CheckCpuRunsThisBuild() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  std::vector<std::string> missing;
  // What the compiler was told it may use everywhere (the -march of this build).
#if defined(__AVX2__)
  if (!__builtin_cpu_supports("avx2")) missing.push_back("avx2");
#endif
#if defined(__FMA__)
  if (!__builtin_cpu_supports("fma")) missing.push_back("fma");
#endif
#if defined(__AVX512F__)
  if (!__builtin_cpu_supports("avx512f")) missing.push_back("avx512f");
#endif
#if defined(__AVX512BW__)
  if (!__builtin_cpu_supports("avx512bw")) missing.push_back("avx512bw");
#endif
  if (!missing.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this rnnserve was built for CPUs with ", absl::StrJoin(missing, ", "),
        " (cmake -DRNNSERVE_MARCH=...), and this CPU lacks them: rebuild with "
        "-DRNNSERVE_MARCH=x86-64-v3, or x86-64 for CPUs without AVX2"));
  }
#endif
  return absl::OkStatus();
}

}  // namespace rnnserve
