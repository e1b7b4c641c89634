// GCC 12 flags the `__Y = __Y` idiom inside its own AVX-512 intrinsics and the vector
// attributes of Eigen's packet type as template arguments: both harmless. Set
// before the includes: the warnings point into Eigen's exp (pexp), instantiated there.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#pragma GCC diagnostic ignored "-Wignored-attributes"

#include "core/engine/cell_step.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace rnnserve {
namespace {

namespace ei = Eigen::internal;
using Packet = ei::packet_traits<float>::type;
constexpr int64_t kLanes = ei::unpacket_traits<Packet>::size;
using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// torch's formulations: sigmoid(x) = 1 / (1 + exp(-x)); tanh. The packet versions use Eigen's
// exp (within an ulp or two) and its rational tanh, as the RNN path does.
inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline Packet Sigmoid(const Packet& x) {
  const Packet one = ei::pset1<Packet>(1.0f);
  return ei::pdiv(one, ei::padd(one, ei::pexp(ei::pnegate(x))));
}
inline float Tanh(float x) { return std::tanh(x); }
inline Packet Tanh(const Packet& x) { return ei::ptanh(x); }

// Packet is the compiler's vector type (__m256 with AVX), so +, - and * are lane-wise; one
// template then serves whole packets and the scalar tail.
inline Packet Load(const float* p) { return ei::ploadu<Packet>(p); }
inline float Load1(const float* p) { return *p; }
inline void Store(float* p, const Packet& v) { ei::pstoreu(p, v); }
inline void Store1(float* p, float v) { *p = v; }

// GRU, torch's gates r, z, n (GRUCell and nn.GRU):
//   r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
//   z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
//   n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//   h' = (1 - z) * n + z * h, computed as torch does: n + z * (h - n)
// `gi` holds the input rows (with b_ir + b_hr, b_iz + b_hz, b_in folded in), `gh` the
// recurrent rows (with b_hn in the n rows): one pass over both per step.
template <typename V, typename LoadFn, typename StoreFn>
inline void GruElement(const float* gi, const float* gh, const float* h, float* out, int64_t H,
                       LoadFn load, StoreFn store) {
  const V r = Sigmoid(load(gi) + load(gh));
  const V z = Sigmoid(load(gi + H) + load(gh + H));
  const V n = Tanh(load(gi + 2 * H) + r * load(gh + 2 * H));
  store(out, n + z * (load(h) - n));
}

// LSTM, torch's gates i, f, g, o:
//   i = sigmoid(.), f = sigmoid(.), g = tanh(.), o = sigmoid(.)
//       where each (.) is W_i* x + b_i* + W_h* h + b_h* for its gate
//   c' = f * c + i * g
//   h' = o * tanh(c')            (then h' = W_hr h' when proj_size > 0, as a product after)
// `gates` holds the four blocks with both products and both biases summed.
template <typename V, typename LoadFn, typename StoreFn>
inline void LstmElement(const float* g, float* c, float* h, int64_t H, LoadFn load,
                        StoreFn store) {
  const V i = Sigmoid(load(g));
  const V f = Sigmoid(load(g + H));
  const V cell = Tanh(load(g + 2 * H));
  const V o = Sigmoid(load(g + 3 * H));
  const V c_new = f * load(c) + i * cell;
  store(c, c_new);
  store(h, o * Tanh(c_new));
}

void GruGates(int64_t H, const GatedStepIo& io, const float* gh) {
  for (int64_t j = 0; j < io.cols; ++j) {
    const float* gi = io.gates + j * io.ld_gates;
    const float* gh_col = gh + j * 3 * H;
    const float* h = io.h_prev + j * io.ld_prev;
    float* out = io.h_out + j * io.ld_out;
    int64_t k = 0;
    for (; k + kLanes <= H; k += kLanes) {
      GruElement<Packet>(gi + k, gh_col + k, h + k, out + k, H, Load, Store);
    }
    for (; k < H; ++k) GruElement<float>(gi + k, gh_col + k, h + k, out + k, H, Load1, Store1);
  }
}

void LstmGates(int64_t H, const GatedStepIo& io, float* h_out, int64_t ld_out) {
  for (int64_t j = 0; j < io.cols; ++j) {
    const float* g = io.gates + j * io.ld_gates;
    float* c = io.cell + j * H;
    float* h = h_out + j * ld_out;
    int64_t k = 0;
    for (; k + kLanes <= H; k += kLanes) LstmElement<Packet>(g + k, c + k, h + k, H, Load, Store);
    for (; k < H; ++k) LstmElement<float>(g + k, c + k, h + k, H, Load1, Store1);
  }
}

}  // namespace

Epilogue EpilogueFor(Nonlinearity act) {
  return act == Nonlinearity::kTanh ? Epilogue::kTanh : Epilogue::kRelu;
}

CellWeights LayOutCellWeights(const RnnConfig& config, const ParameterMap& parameters,
                              int64_t layer, int64_t dir) {
  const std::string suffix = absl::StrCat("_l", layer, dir == 1 ? "_reverse" : "");
  const int64_t h = config.hidden_size, rows = config.gate_rows();
  const int64_t in = config.layer_input_size(layer), h_out = config.real_hidden_size();
  CellWeights w;
  // torch stores W as row-major (rows, in); copy into column-major for Eigen's kernels.
  const float* weight_ih = parameters.at("weight_ih" + suffix).data();
  const float* weight_hh = parameters.at("weight_hh" + suffix).data();
  if (rows <= kEigenMaxRows) w.w_ih = Eigen::Map<const RowMajorMatrix>(weight_ih, rows, in);
  if (config.module == RnnModule::kRnn && h <= kEigenMaxRows) {
    w.w_hh = Eigen::Map<const RowMajorMatrix>(weight_hh, h, h);
  }
  w.packed_ih = PackedMatrix::FromRowMajor(weight_ih, rows, in);
  w.packed_hh = PackedMatrix::FromRowMajor(weight_hh, rows, h_out);
  if (config.proj_size > 0) {
    w.packed_hr =
        PackedMatrix::FromRowMajor(parameters.at("weight_hr" + suffix).data(), h_out, h);
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
    GruGates(H, io, io.scratch);
    return;
  }
  // LSTM: gates += W_hh h, then one pass for the four gates and the cell.
  PackedGemm(w.packed_hh, io.h_prev, io.ld_prev, io.cols, nullptr, /*accumulate=*/true,
             Epilogue::kNone, io.gates, io.ld_gates);
  if (config.proj_size == 0) {
    LstmGates(H, io, io.h_out, io.ld_out);
    return;
  }
  LstmGates(H, io, io.scratch, H);
  PackedGemm(w.packed_hr, io.scratch, H, io.cols, nullptr, /*accumulate=*/false,
             Epilogue::kNone, io.h_out, io.ld_out);
}

}  // namespace rnnserve
