#include "core/engine/cell_step.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace rnnserve {
namespace {

using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace

Epilogue EpilogueFor(Nonlinearity act) {
  return act == Nonlinearity::kTanh ? Epilogue::kTanh : Epilogue::kRelu;
}

CellWeights LayOutCellWeights(const RnnConfig& config, const ParameterMap& parameters,
                              int64_t layer, int64_t dir, KernelIsa isa) {
  const std::string suffix = absl::StrCat("_l", layer, dir == 1 ? "_reverse" : "");
  const int64_t h = config.hidden_size, rows = config.gate_rows();
  const int64_t in = config.layer_input_size(layer), h_out = config.real_hidden_size();
  CellWeights w;
  const float* weight_ih = parameters.at("weight_ih" + suffix).data();
  const float* weight_hh = parameters.at("weight_hh" + suffix).data();
  w.packed_ih = PackedMatrix::FromRowMajor(weight_ih, rows, in, isa);
  w.packed_hh = PackedMatrix::FromRowMajor(weight_hh, rows, h_out, isa);
  // Eigen's GEMM (this file's -march, the build's baseline) only measured faster than the packed
  // kernel at equal register width; against wider kernels (AVX-512 on an x86-64-v3 build) the
  // packed path runs every shape. torch stores W as row-major (rows, in); Eigen gets a
  // column-major copy.
  const bool eigen_as_wide =
      w.packed_ih.panel_rows() == Eigen::internal::packet_traits<float>::size;
  if (eigen_as_wide && rows <= kEigenMaxRows) {
    w.w_ih = Eigen::Map<const RowMajorMatrix>(weight_ih, rows, in);
  }
  if (eigen_as_wide && config.module == RnnModule::kRnn && h <= kEigenMaxRows) {
    w.w_hh = Eigen::Map<const RowMajorMatrix>(weight_hh, h, h);
  }
  if (config.proj_size > 0) {
    w.packed_hr =
        PackedMatrix::FromRowMajor(parameters.at("weight_hr" + suffix).data(), h_out, h, isa);
  }
  w.bias = Eigen::VectorXf::Zero(w.packed_ih.padded_rows());
  if (!config.bias) return w;
  const Eigen::Map<const Eigen::VectorXf> b_ih(parameters.at("bias_ih" + suffix).data(), rows);
  const Eigen::Map<const Eigen::VectorXf> b_hh(parameters.at("bias_hh" + suffix).data(), rows);
  // Folded once here, so each step adds one bias vector instead of two; GRU's b_hn is applied
  // inside r * (W_hn h + b_hn), so it stays with the recurrent product.
  const int64_t folded = config.module == RnnModule::kGru ? 2 * h : rows;
  w.bias.head(rows) = b_ih;
  w.bias.head(folded) += b_hh.head(folded);
  if (config.module == RnnModule::kGru) {
    w.gru_bias_hh = Eigen::VectorXf::Zero(w.packed_hh.padded_rows());
    w.gru_bias_hh.segment(2 * h, h) = b_hh.tail(h);
  }
  return w;
}

int64_t GatedScratchRows(const RnnConfig& config) {
  if (config.module == RnnModule::kGru) return 3 * config.hidden_size;
  if (config.module == RnnModule::kLstm && config.proj_size > 0) return config.hidden_size;
  return 0;
}

void GatedStep(const RnnConfig& config, const CellWeights& w, const GatedStepIo& io) {
  const int64_t H = config.hidden_size;
  if (config.module == RnnModule::kGru) {
    // scratch = W_hh h + (0, 0, b_hn): r and z need the sum with the input rows, n needs
    // W_hn h + b_hn on its own, so the product cannot accumulate into `gates`.
    PackedGemm(w.packed_hh, io.h_prev, io.ld_prev, io.cols,
               w.gru_bias_hh.size() > 0 ? w.gru_bias_hh.data() : nullptr,
               /*accumulate=*/false, Epilogue::kNone, io.scratch, 3 * H);
    w.packed_hh.kernels().gru_gates(H, io, io.scratch);
    return;
  }
  // LSTM: gates += W_hh h, then one pass for the four gates and the cell.
  PackedGemm(w.packed_hh, io.h_prev, io.ld_prev, io.cols, nullptr, /*accumulate=*/true,
             Epilogue::kNone, io.gates, io.ld_gates);
  if (config.proj_size == 0) {
    w.packed_hh.kernels().lstm_gates(H, io, io.h_out, io.ld_out);
    return;
  }
  w.packed_hh.kernels().lstm_gates(H, io, io.scratch, H);
  PackedGemm(w.packed_hr, io.scratch, H, io.cols, nullptr, /*accumulate=*/false,
             Epilogue::kNone, io.h_out, io.ld_out);
}

}  // namespace rnnserve
