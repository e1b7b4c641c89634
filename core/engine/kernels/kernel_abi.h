// The engine's compute kernels as one table of plain function pointers, compiled once per
// instruction set (kernels_baseline.cc, kernels_avx2.cc, kernels_avx512.cc) and chosen at model
// load (kernel_isa.h). This header is the only thing the per-ISA objects and the rest of the
// engine share, so it holds plain structs and pointers only: no Eigen type crosses it (each
// per-ISA object has its own renamed copy of Eigen; see core/engine/CMakeLists.txt).
//
// Every kernel is a pure function of its arguments: thread-safe, allocates nothing, borrows
// every pointer for the call. A KernelTable is a static constant.
#ifndef RNNSERVE_CORE_ENGINE_KERNELS_KERNEL_ABI_H_
#define RNNSERVE_CORE_ENGINE_KERNELS_KERNEL_ABI_H_

#include <cstdint>

namespace rnnserve {

// The instruction sets the kernels are compiled for. kBaseline is the build's own -march
// (RNNSERVE_MARCH), so it runs wherever the binary runs.
enum class KernelIsa { kBaseline, kAvx2, kAvx512 };

enum class Epilogue { kNone, kTanh, kRelu };

// A weight matrix packed for one table (PackedMatrix in packed_gemm.h owns the memory):
// `panels` panels of panel_rows rows; panel p's element (r, k) is row p * panel_rows + r,
// column k, at data[p * depth * panel_rows + k * panel_rows + r]; rows past `rows` are zero.
struct PackedPanels {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t depth = 0;
  int64_t panels = 0;
};

// Where one gate pass of a GRU or LSTM step reads and writes; every matrix is column-major
// with its leading dimension, `cols` columns each.
struct GatedStepIo {
  int64_t cols = 0;
  const float* h_prev = nullptr;  // (H_out, cols): h_{t-1}
  int64_t ld_prev = 0;
  float* gates = nullptr;  // (G*H, cols): x_t W_ih^T + bias on entry; clobbered
  int64_t ld_gates = 0;
  float* cell = nullptr;  // LSTM: (H, cols), leading dimension H: c_{t-1} in, c_t out
  float* scratch = nullptr;  // GRU: (3H, cols); LSTM with proj_size: (H, cols); dense
  float* h_out = nullptr;    // (H_out, cols): h_t; must not overlap h_prev
  int64_t ld_out = 0;
};

struct KernelTable {
  KernelIsa isa;
  // Rows per packed panel: the float lanes of this table's SIMD register.
  int64_t panel_rows;

  // C = epilogue(start + W · X) over `cols` columns (PackedGemm in packed_gemm.h).
  void (*gemm)(const PackedPanels& w, const float* x, int64_t ldx, int64_t cols,
               const float* bias, bool accumulate, Epilogue epilogue, float* c, int64_t ldc);
  // GRU's fused gate pass: h_out from io.gates (input rows), `gh` (recurrent rows, (3H, cols),
  // dense) and h_prev. Equations in kernels_impl.inc.
  void (*gru_gates)(int64_t hidden, const GatedStepIo& io, const float* gh);
  // LSTM's fused gate pass: io.cell updated in place, h written to (h_out, ld_out).
  void (*lstm_gates)(int64_t hidden, const GatedStepIo& io, float* h_out, int64_t ld_out);
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_KERNELS_KERNEL_ABI_H_
