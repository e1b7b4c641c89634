#include "core/engine/packed_gemm.h"

#include <algorithm>
#include <cstring>

// GCC 12 flags the `__Y = __Y` idiom inside its own AVX-512 intrinsics (_mm512_undefined_ps)
// and the vector attributes of Eigen's packet type as template arguments: both are harmless.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wignored-attributes"

namespace rnnserve {
namespace {

namespace ei = Eigen::internal;
using Packet = ei::packet_traits<float>::type;
constexpr int kLanes = ei::unpacket_traits<Packet>::size;

// Vector registers, and the most output columns one tile holds: the accumulators of a tile
// (vecs x cols), its weight vectors (vecs) and one broadcast must fit in the register file.
#if defined(EIGEN_VECTORIZE_AVX512)
constexpr int kRegisters = 32;
constexpr int kMaxCols = 8;
#else
constexpr int kRegisters = 16;
constexpr int kMaxCols = 4;
#endif

// Panels (register-rows) per tile for a tile of `cols` columns: as many independent
// accumulators as the registers allow, up to 8 so a 1-column tile still hides FMA latency.
constexpr int VecsFor(int cols) {
  const int vecs = (kRegisters - 1) / (cols + 1);
  return vecs > 8 ? 8 : (vecs < 1 ? 1 : vecs);
}

// Blocking: a pass reads at most kDepthBlock rows of X, and a panel block keeps about
// kPanelBlockBytes of weights hot in L2 while every column tile streams past it.
constexpr int64_t kDepthBlock = 1024;
constexpr int64_t kPanelBlockBytes = int64_t{1} << 20;

struct Pass {
  const PackedMatrix* w;
  const float* x;
  int64_t ldx;
  float* c;
  int64_t ldc;
  const float* bias;  // start from the bias (first pass, not accumulating)
  bool load_c;        // start from C's contents
  Epilogue epilogue;  // applied in this pass (the last one); kNone otherwise
  int64_t k0, k1;     // depth range of this pass
};

// The last panel may be partly past rows(): those lanes go through a zero-padded buffer.
inline Packet LoadRows(const float* p, int64_t valid) {
  if (valid >= kLanes) return ei::ploadu<Packet>(p);
  alignas(64) float buffer[kLanes] = {};
  std::memcpy(buffer, p, sizeof(float) * valid);
  return ei::pload<Packet>(buffer);
}

inline void StoreRows(float* p, int64_t valid, const Packet& value) {
  if (valid >= kLanes) {
    ei::pstoreu(p, value);
    return;
  }
  alignas(64) float buffer[kLanes];
  ei::pstore(buffer, value);
  std::memcpy(p, buffer, sizeof(float) * valid);
}

// One tile: kVecs panels (kVecs * kLanes rows) by kCols columns, accumulated in registers:
//   acc = start;  for k: acc += W[:, k] * X[k, :];  C = epilogue(acc)
// A tile with few accumulators (narrow products: one or two columns, or the last panels)
// would wait on each FMA's latency; it keeps kSplit partial sums over alternate k instead.
template <int kVecs, int kCols>
void Tile(const Pass& pass, int64_t panel0, int64_t col0) {
  constexpr int kSplit = std::max(1, std::min(4, 8 / (kVecs * kCols)));
  const int64_t row0 = panel0 * kLanes;
  const int64_t rows = pass.w->rows();
  Packet acc[kSplit][kVecs][kCols];
#pragma GCC unroll 8
  for (int v = 0; v < kVecs; ++v) {
    const int64_t row = row0 + v * kLanes;
#pragma GCC unroll 8
    for (int j = 0; j < kCols; ++j) {
      if (pass.load_c) {
        acc[0][v][j] = LoadRows(pass.c + (col0 + j) * pass.ldc + row, rows - row);
      } else if (pass.bias != nullptr) {
        acc[0][v][j] = ei::ploadu<Packet>(pass.bias + row);
      } else {
        acc[0][v][j] = ei::pset1<Packet>(0.0f);
      }
#pragma GCC unroll 4
      for (int s = 1; s < kSplit; ++s) acc[s][v][j] = ei::pset1<Packet>(0.0f);
    }
  }

  const float* w[kVecs];
#pragma GCC unroll 8
  for (int v = 0; v < kVecs; ++v) w[v] = pass.w->panel(panel0 + v) + pass.k0 * kLanes;
  const float* x[kCols];
#pragma GCC unroll 8
  for (int j = 0; j < kCols; ++j) x[j] = pass.x + (col0 + j) * pass.ldx + pass.k0;

  // acc[s] += W[:, k] * X[k, :]
  auto step = [&](int s, int64_t k) {
    Packet wk[kVecs];
#pragma GCC unroll 8
    for (int v = 0; v < kVecs; ++v) wk[v] = ei::pload<Packet>(w[v] + k * kLanes);
#pragma GCC unroll 8
    for (int j = 0; j < kCols; ++j) {
      const Packet xk = ei::pset1<Packet>(x[j][k]);
#pragma GCC unroll 8
      for (int v = 0; v < kVecs; ++v) acc[s][v][j] = ei::pmadd(wk[v], xk, acc[s][v][j]);
    }
  };
  const int64_t depth = pass.k1 - pass.k0;
  int64_t k = 0;
  for (; k + kSplit <= depth; k += kSplit) {
#pragma GCC unroll 4
    for (int s = 0; s < kSplit; ++s) step(s, k + s);
  }
  for (; k < depth; ++k) step(0, k);

  const Packet zero = ei::pset1<Packet>(0.0f);
#pragma GCC unroll 8
  for (int v = 0; v < kVecs; ++v) {
    const int64_t row = row0 + v * kLanes;
#pragma GCC unroll 8
    for (int j = 0; j < kCols; ++j) {
      Packet value = acc[0][v][j];
#pragma GCC unroll 4
      for (int s = 1; s < kSplit; ++s) value = ei::padd(value, acc[s][v][j]);
      if (pass.epilogue == Epilogue::kTanh) {
        value = ei::ptanh(value);
      } else if (pass.epilogue == Epilogue::kRelu) {
        value = ei::pmax(value, zero);
      }
      StoreRows(pass.c + (col0 + j) * pass.ldc + row, rows - row, value);
    }
  }
}

// All panels in [panel0, panel1) for one block of kCols columns.
template <int kCols>
void SweepPanels(const Pass& pass, int64_t panel0, int64_t panel1, int64_t col0) {
  constexpr int kVecs = VecsFor(kCols);
  int64_t p = panel0;
  for (; p + kVecs <= panel1; p += kVecs) Tile<kVecs, kCols>(pass, p, col0);
  // The remaining panels in the widest tiles that fit, for more independent accumulators.
  if constexpr (kVecs > 4) {
    if (p + 4 <= panel1) Tile<4, kCols>(pass, p, col0), p += 4;
  }
  if constexpr (kVecs > 2) {
    if (p + 2 <= panel1) Tile<2, kCols>(pass, p, col0), p += 2;
  }
  for (; p < panel1; ++p) Tile<1, kCols>(pass, p, col0);
}

template <int... kCols>
void SweepColumns(const Pass& pass, int64_t panel0, int64_t panel1, int64_t cols,
                  std::integer_sequence<int, kCols...>) {
  using Sweep = void (*)(const Pass&, int64_t, int64_t, int64_t);
  static constexpr Sweep kSweeps[] = {&SweepPanels<kCols + 1>...};
  for (int64_t col0 = 0; col0 < cols; col0 += kMaxCols) {
    const int64_t n = std::min<int64_t>(kMaxCols, cols - col0);
    kSweeps[n - 1](pass, panel0, panel1, col0);
  }
}

}  // namespace

int64_t PackedMatrix::PanelRows() { return kLanes; }

PackedMatrix PackedMatrix::FromRowMajor(const float* data, int64_t rows, int64_t depth) {
  PackedMatrix m;
  m.rows_ = rows;
  m.depth_ = depth;
  m.panels_ = (rows + kLanes - 1) / kLanes;
  m.data_.assign(static_cast<size_t>(m.panels_ * depth * kLanes), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float* panel = m.data_.data() + (r / kLanes) * depth * kLanes;
    for (int64_t k = 0; k < depth; ++k) panel[k * kLanes + r % kLanes] = data[r * depth + k];
  }
  return m;
}

void PackedGemm(const PackedMatrix& w, const float* x, int64_t ldx, int64_t cols,
                const float* bias, bool accumulate, Epilogue epilogue, float* c, int64_t ldc) {
  if (cols <= 0 || w.rows() <= 0) return;
  const int64_t depth = w.depth();
  const int64_t depth_block = depth <= kDepthBlock ? std::max<int64_t>(depth, 1) : kDepthBlock / 2;
  const int64_t panel_bytes = depth_block * kLanes * sizeof(float);
  const int64_t panel_block = std::max<int64_t>(VecsFor(kMaxCols), kPanelBlockBytes / panel_bytes);
  int64_t k0 = 0;
  do {
    const int64_t k1 = std::min(depth, k0 + depth_block);
    Pass pass{&w, x, ldx, c, ldc, /*bias=*/nullptr, /*load_c=*/accumulate || k0 > 0,
              k1 == depth ? epilogue : Epilogue::kNone, k0, k1};
    if (!pass.load_c) pass.bias = bias;
    for (int64_t p0 = 0; p0 < w.panels(); p0 += panel_block) {
      SweepColumns(pass, p0, std::min(w.panels(), p0 + panel_block), cols,
                   std::make_integer_sequence<int, kMaxCols>());
    }
    k0 = k1;
  } while (k0 < depth);
}

}  // namespace rnnserve
