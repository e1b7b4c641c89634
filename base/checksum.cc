#include "base/checksum.h"

#include <cstring>

namespace rnnserve {
namespace {

constexpr uint64_t kMultiplier = 0x9E3779B97F4A7C15ull;

// A multiply-xorshift finaliser (SplitMix64's): every input bit reaches every output bit.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t Checksum64(absl::string_view bytes, uint64_t seed) {
  // Eight bytes per step: four independent lanes keep the multiplier busy, so large inputs
  // hash at several GB/s; the tail and the length close the sum.
  uint64_t lanes[4] = {seed ^ kMultiplier, seed + 1, seed + 2, seed + 3};
  const char* p = bytes.data();
  size_t n = bytes.size();
  while (n >= 32) {
    for (uint64_t& lane : lanes) {
      uint64_t word;
      std::memcpy(&word, p, 8);
      lane = (lane ^ word) * kMultiplier;
      lane ^= lane >> 29;
      p += 8;
    }
    n -= 32;
  }
  uint64_t h = Mix(lanes[0]) ^ Mix(lanes[1] + 1) ^ Mix(lanes[2] + 2) ^ Mix(lanes[3] + 3);
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    h = Mix(h ^ word);
    p += 8;
    n -= 8;
  }
  uint64_t tail = 0;
  if (n > 0) std::memcpy(&tail, p, n);
  return Mix(Mix(h ^ tail) ^ bytes.size());
}

uint64_t TensorChecksum(absl::Span<const int64_t> shape, absl::string_view bytes,
                        uint64_t seed) {
  const absl::string_view dims(reinterpret_cast<const char*>(shape.data()),
                               shape.size() * sizeof(int64_t));
  return Checksum64(bytes, Checksum64(dims, seed));
}

}  // namespace rnnserve
