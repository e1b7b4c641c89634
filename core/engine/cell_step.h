// The recurrent cells' per-step math, shared by every RnnModel entry point (Forward,
// ForwardTimeMajor, StepBatch): the weights of one layer and direction as laid out at load
// (CellWeights), the input projection of a chunk, and one timestep of an RNN, GRU or LSTM cell.
//
// Layout: activations are column-major (features x columns), one column per (timestep, batch
// row), which is exactly torch's row-major (T, N, features) memory. Every function here is a
// pure function of its arguments and allocates nothing: scratch comes from the caller's
// Workspace. CellWeights is immutable after LayOutCellWeights() and safe to share.
#ifndef RNNSERVE_CORE_ENGINE_CELL_STEP_H_
#define RNNSERVE_CORE_ENGINE_CELL_STEP_H_

#include <cstdint>

#include <Eigen/Core>

#include "core/engine/packed_gemm.h"
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_parameters.h"

namespace rnnserve {

// Which backend computes a product with `rows` output rows over `cols` columns. PackedGemm
// (weights packed once at load, bias and activation fused into the product's last pass)
// measured as fast as Eigen's GEMM or faster (up to 3x at 8-10 columns, 4x at H=1024) at every
// shape the engine runs, except the very wide input projections of small layers, where Eigen,
// which packs both operands per call, keeps a ~10% edge (BENCHMARKS.md, "Products at the
// engine's shapes").
inline constexpr int64_t kEigenMaxRows = 128;
inline constexpr int64_t kEigenMinCols = 1024;
inline bool UsePacked(int64_t rows, int64_t cols) {
  return rows > kEigenMaxRows || cols < kEigenMinCols;
}

// One layer and direction's weights, laid out once at load. G*H rows hold the gates in torch's
// order (GRU r, z, n; LSTM i, f, g, o).
struct CellWeights {
  Eigen::MatrixXf w_ih;  // (G*H, in) column-major for Eigen; empty when G*H > kEigenMaxRows
  Eigen::MatrixXf w_hh;  // (H, H), RNN only; empty when H > kEigenMaxRows
  // The input projection's bias, padded to packed_ih.padded_rows(): b_ih + b_hh, except GRU's
  // n rows, which hold b_in alone (b_hn must stay inside the product with r).
  Eigen::VectorXf bias;
  // GRU: the recurrent product's bias (0, 0, b_hn), padded; empty otherwise or without bias.
  Eigen::VectorXf gru_bias_hh;
  PackedMatrix packed_ih;  // (G*H, in)
  PackedMatrix packed_hh;  // (G*H, H_out)
  PackedMatrix packed_hr;  // LSTM with proj_size: (proj_size, H); empty otherwise
};

// Lays out `parameters` (already checked against `config`) for layer `layer`, direction `dir`,
// packed for `isa`'s kernels (one of SupportedKernelIsas()).
CellWeights LayOutCellWeights(const RnnConfig& config, const ParameterMap& parameters,
                              int64_t layer, int64_t dir, KernelIsa isa);

Epilogue EpilogueFor(Nonlinearity act);

// GCC 12 flags the `__Y = __Y` idiom inside its own AVX-512 intrinsics, which Eigen's
// vectorised tanh inlines into the templates below: harmless.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// out = W_ih * in + bias (broadcast over columns): the input projection of a whole chunk, all
// gates at once, as one product over all T*N columns.
template <typename Out, typename In>
void ProjectInputs(const CellWeights& w, const In& in, Out&& out) {
  if (UsePacked(out.rows(), out.cols()) || w.w_ih.size() == 0) {
    PackedGemm(w.packed_ih, in.data(), in.outerStride(), out.cols(), w.bias.data(),
               /*accumulate=*/false, Epilogue::kNone, out.data(), out.outerStride());
    return;
  }
  out.noalias() = w.w_ih * in;
  out.colwise() += w.bias.head(out.rows());
}

// RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.
// `block` already holds x_t W_ih^T + b for its columns; this adds the recurrent product and
// applies the nonlinearity in place.
template <typename Block, typename Prev>
void RnnStep(const CellWeights& w, const Prev& h_prev, Nonlinearity act, Block&& block) {
  if (UsePacked(block.rows(), block.cols()) || w.w_hh.size() == 0) {
    // One pass: block = act(block + W_hh h_prev), the activation applied in registers.
    PackedGemm(w.packed_hh, h_prev.data(), h_prev.outerStride(), block.cols(), nullptr,
               /*accumulate=*/true, EpilogueFor(act), block.data(), block.outerStride());
    return;
  }
  block.noalias() += w.w_hh * h_prev;
  // A block of whole columns is contiguous: treat it as one flat array, so Eigen vectorises
  // the activation end to end. Column by column, each column's unaligned head and tail run
  // through scalar tanh, which measured 4x slower per element at H=64.
  if (block.outerStride() == block.rows() || block.cols() == 1) {
    Eigen::Map<Eigen::ArrayXf> flat(block.data(), block.size());
    if (act == Nonlinearity::kTanh) {
      flat = flat.tanh();
    } else {
      flat = flat.max(0.0f);
    }
  } else if (act == Nonlinearity::kTanh) {  // a direction's half of a bidirectional layer
    block = block.array().tanh();
  } else {
    block = block.cwiseMax(0.0f);
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Scratch rows GatedStep needs: 3H for GRU, H for LSTM with proj_size, else 0.
int64_t GatedScratchRows(const RnnConfig& config);

// One timestep of a GRU or LSTM cell over io.cols columns (GatedStepIo: kernels/kernel_abi.h):
// one product for all gates, then one fused pass over the gates (the equations are in
// kernels/kernels_impl.inc), both from the weights' kernel table.
void GatedStep(const RnnConfig& config, const CellWeights& w, const GatedStepIo& io);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_CELL_STEP_H_
