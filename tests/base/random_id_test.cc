#include "base/random_id.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

constexpr int kIds = 10000;

int HexValue(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

// Pearson chi-square of the hex-digit frequencies over all ids (15 degrees of freedom).
double HexDigitChiSquare(const std::vector<std::string>& ids) {
  std::array<double, 16> counts{};
  double total = 0;
  for (const std::string& id : ids) {
    for (char c : id) {
      counts[HexValue(c)] += 1;
      total += 1;
    }
  }
  const double expected = total / 16;
  double chi2 = 0;
  for (double n : counts) chi2 += (n - expected) * (n - expected) / expected;
  return chi2;
}

// Largest distance, in standard deviations, of any of the 128 bit positions' count of ones
// from half the ids.
double WorstBitImbalanceSigmas(const std::vector<std::string>& ids) {
  std::array<int, 128> ones{};
  for (const std::string& id : ids) {
    for (int digit = 0; digit < 32; ++digit) {
      const int v = HexValue(id[digit]);
      for (int bit = 0; bit < 4; ++bit) ones[4 * digit + bit] += (v >> bit) & 1;
    }
  }
  const double n = static_cast<double>(ids.size());
  const double sigma = std::sqrt(n / 4);
  double worst = 0;
  for (int count : ones) worst = std::max(worst, std::abs(count - n / 2) / sigma);
  return worst;
}

// Loose bounds: a good generator fails them with probability far below 1e-9 (chi-square 15
// dof > 80 is p < 1e-10; 7 sigma over 128 positions is p < 1e-9), while a constant or counter
// generator fails both by orders of magnitude.
bool LooksRandom(const std::vector<std::string>& ids) {
  return HexDigitChiSquare(ids) < 80 && WorstBitImbalanceSigmas(ids) < 7;
}

std::vector<std::string> Generate(const std::function<std::string(int)>& make) {
  std::vector<std::string> ids;
  for (int i = 0; i < kIds; ++i) ids.push_back(make(i));
  return ids;
}

TEST(RandomIdTest, IdsAre32LowercaseHexAndDistinct) {
  std::unordered_set<std::string> seen;
  for (int i = 0; i < kIds; ++i) {
    absl::StatusOr<std::string> id = NewRandomId();
    ASSERT_TRUE(id.ok()) << id.status();
    ASSERT_EQ(id->size(), 32u);
    for (char c : *id) ASSERT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << *id;
    EXPECT_TRUE(seen.insert(*id).second) << "duplicate id " << *id;
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kIds));
}

TEST(RandomIdTest, DigitsAndBitsAreBalanced) {
  const std::vector<std::string> ids = Generate([](int) { return NewRandomId().value(); });
  EXPECT_LT(HexDigitChiSquare(ids), 80);
  EXPECT_LT(WorstBitImbalanceSigmas(ids), 7);
}

// The statistical check above must be able to fail: it rejects the generators the issue is
// about replacing (a constant, a counter) and a byte-wise biased one.
TEST(RandomIdTest, BalanceCheckRejectsNonRandomGenerators) {
  EXPECT_FALSE(LooksRandom(Generate([](int) { return std::string(32, 'a'); })));
  EXPECT_FALSE(LooksRandom(Generate([](int i) { return absl::StrFormat("%032x", i); })));
  EXPECT_FALSE(LooksRandom(Generate([](int) {  // every byte's top bit cleared
    std::string id = NewRandomId().value();
    for (size_t d = 0; d < id.size(); d += 2) id[d] = "01234567"[HexValue(id[d]) & 7];
    return id;
  })));
}

TEST(RandomIdTest, FillRandomBytesFillsLargeBuffers) {
  std::vector<unsigned char> buffer(1 << 20, 0);  // larger than one getrandom call may return
  ASSERT_TRUE(FillRandomBytes(absl::MakeSpan(buffer)).ok());
  // A zero tail would mean a short read was not continued: 4096 zero bytes happen by chance
  // with probability 2^-32768.
  int zeros = 0;
  for (size_t i = buffer.size() - 4096; i < buffer.size(); ++i) zeros += buffer[i] == 0;
  EXPECT_LT(zeros, 4096);
  EXPECT_LT(zeros, 100);  // expected ~16
}

}  // namespace
}  // namespace rnnserve
