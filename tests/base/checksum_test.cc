// Checksum64 and TensorChecksum: equal input gives an equal checksum; any changed byte, a
// different length (tails of every size) or a different shape over the same bytes differ.
#include "base/checksum.h"

#include <set>
#include <string>

#include "gtest/gtest.h"

namespace rnnserve {
namespace {

TEST(ChecksumTest, SameBytesSameChecksumAnyChangeDiffers) {
  std::string bytes(1000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  const uint64_t sum = Checksum64(bytes);
  EXPECT_EQ(Checksum64(std::string(bytes)), sum);
  std::set<uint64_t> seen = {sum};
  // Every single-bit flip in the body, the 8-byte steps and the tail gives a new checksum.
  for (size_t i = 0; i < bytes.size(); i += 37) {
    std::string changed = bytes;
    changed[i] ^= 1;
    EXPECT_TRUE(seen.insert(Checksum64(changed)).second) << "byte " << i;
  }
  EXPECT_TRUE(seen.insert(Checksum64(bytes, /*seed=*/1)).second) << "the seed is mixed in";
}

TEST(ChecksumTest, EveryLengthDiffers) {
  const std::string zeros(100, '\0');
  std::set<uint64_t> seen;
  for (size_t n = 0; n <= zeros.size(); ++n) {
    EXPECT_TRUE(seen.insert(Checksum64(absl::string_view(zeros.data(), n))).second) << n;
  }
}

TEST(ChecksumTest, ShapeIsPartOfATensorsChecksum) {
  const std::string bytes(24, 'x');
  const int64_t a[] = {2, 3}, b[] = {3, 2};
  EXPECT_EQ(TensorChecksum(a, bytes), TensorChecksum(a, std::string(bytes)));
  EXPECT_NE(TensorChecksum(a, bytes), TensorChecksum(b, bytes));
  EXPECT_NE(TensorChecksum(a, bytes), Checksum64(bytes));
}

}  // namespace
}  // namespace rnnserve
