#include "client/npy.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// A .npy file from a header dict and raw data, padded as numpy pads it, so tests can forge any
// header. `major` 1 uses a 2-byte header length, 2 and 3 a 4-byte one.
std::string Npy(const std::string& dict, const std::string& data, int major = 1) {
  const size_t len_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  const size_t preamble = 8 + len_bytes;
  while ((preamble + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  for (size_t i = 0; i < len_bytes; ++i) {
    out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  }
  return out + header + data;
}

std::string F32Bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4);
}

std::string F64Bytes(const std::vector<double>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 8);
}

std::string Dict(const std::string& descr, const std::string& shape, bool fortran = false) {
  return absl::StrCat("{'descr': '", descr, "', 'fortran_order': ", fortran ? "True" : "False",
                      ", 'shape': ", shape, ", }");
}

TEST(NpyTest, SerializeMatchesNumpyBytes) {
  // What numpy 1.24's np.save writes for np.array([[1, 2, 3], [4, 5, -6.5]], dtype='<f4').
  const std::string expected = Npy(Dict("<f4", "(2, 3)"), F32Bytes({1, 2, 3, 4, 5, -6.5f}));
  ASSERT_EQ(expected.size(), 128u + 24u);
  EXPECT_EQ(SerializeNpy(Tensor({2, 3}, {1, 2, 3, 4, 5, -6.5f})), expected);
  // 1-d shapes are written as Python 1-tuples.
  EXPECT_THAT(SerializeNpy(Tensor({3}, {1, 2, 3})), HasSubstr("'shape': (3,), }"));
}

TEST(NpyTest, RoundTripsShapes) {
  const std::vector<Tensor> cases = {
      Tensor({2, 3}, {1, 2, 3, 4, 5, -6.5f}),
      Tensor({3}, {0.1f, -0.2f, 1e-30f}),
      Tensor({}, {7}),
      Tensor({2, 0, 3}, {}),
      Tensor::Filled({4, 1, 100}, 0.25f),
  };
  for (const Tensor& t : cases) {
    auto back = ParseNpy(SerializeNpy(t));
    ASSERT_TRUE(back.ok()) << ShapeToString(t.shape) << ": " << back.status();
    EXPECT_EQ(back->shape, t.shape);
    EXPECT_EQ(back->values, t.values);
  }
}

TEST(NpyTest, RoundTripsThroughFile) {
  const std::string path =
      (std::filesystem::temp_directory_path() / absl::StrCat("npy_test_", getpid(), ".npy"))
          .string();
  Tensor t({2, 2}, {1.5f, -2, 3, 4});
  ASSERT_TRUE(WriteNpy(path, t).ok());
  auto back = ReadNpy(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape, t.shape);
  EXPECT_EQ(back->values, t.values);
}

TEST(NpyTest, ReadsFloat64AsFloat32) {
  auto t = ParseNpy(Npy(Dict("<f8", "(3,)"), F64Bytes({0.1, 2, -3})));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape, ElementsAre(3));
  EXPECT_THAT(t->values, ElementsAre(0.1f, 2.0f, -3.0f));
}

TEST(NpyTest, ReadsIntegerArraysAsTokenIds) {
  const std::vector<int64_t> ids64 = {0, 7, (int64_t{1} << 24) - 1, -3, int64_t{1} << 40};
  auto t = ParseNpy(Npy(Dict("<i8", "(5,)"),
                        std::string(reinterpret_cast<const char*>(ids64.data()), 5 * 8)));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->ids);
  EXPECT_THAT(t->shape, ElementsAre(5));
  // Valid ids exact; the rest clamped to -1 / 2^24, still out of any vocabulary.
  EXPECT_THAT(t->values, ElementsAre(0.0f, 7.0f, 16777215.0f, -1.0f, 16777216.0f));

  const std::vector<int32_t> ids32 = {3, 1, 4, 1, 5, 9};
  t = ParseNpy(Npy(Dict("<i4", "(3, 2)"),
                   std::string(reinterpret_cast<const char*>(ids32.data()), 6 * 4)));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->ids);
  EXPECT_THAT(t->shape, ElementsAre(3, 2));
  EXPECT_THAT(t->values, ElementsAre(3, 1, 4, 1, 5, 9));

  // np.array([258], dtype='>i8')
  t = ParseNpy(Npy(Dict(">i8", "(1,)"), std::string("\0\0\0\0\0\0\x01\x02", 8)));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->values, ElementsAre(258.0f));
  EXPECT_FALSE(ParseNpy(Npy(Dict("<f4", "(1,)"), F32Bytes({1})))->ids) << "floats: features";
}

TEST(NpyTest, ReadsBigEndian) {
  // np.array([1.5, -2], dtype='>f4')
  auto t = ParseNpy(Npy(Dict(">f4", "(2,)"), std::string("\x3f\xc0\x00\x00\xc0\x00\x00\x00", 8)));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->values, ElementsAre(1.5f, -2.0f));
}

TEST(NpyTest, ReadsVersion2And3) {
  for (int major : {2, 3}) {
    auto t = ParseNpy(Npy(Dict("<f4", "(1, 2)"), F32Bytes({1, 2}), major));
    ASSERT_TRUE(t.ok()) << major << ": " << t.status();
    EXPECT_THAT(t->shape, ElementsAre(1, 2));
  }
}

TEST(NpyTest, AcceptsKeysInAnyOrderAndDoubleQuotes) {
  auto t = ParseNpy(
      Npy("{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<f4\"}", F32Bytes({1, 2})));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->values, ElementsAre(1.0f, 2.0f));
}

struct BadCase {
  const char* name;
  std::string bytes;
  const char* message;
};

TEST(NpyTest, RejectsBadFiles) {
  const std::string good = Npy(Dict("<f4", "(2,)"), F32Bytes({1, 2}));
  std::string version4 = good;
  version4[6] = 4;
  std::string long_header = good.substr(0, 8) + std::string("\xff\x7f", 2) + good.substr(10);
  const std::vector<BadCase> cases = {
      {"empty", "", "magic"},
      {"not npy", "PK\x03\x04 a zip file, say", "magic"},
      {"truncated length", good.substr(0, 9), "header length"},
      {"header past end", long_header, "runs past the end"},
      {"version 4", version4, "unsupported format version 4.0"},
      {"int16", Npy(Dict("<i2", "(2,)"), "abcd"), "astype(numpy.float32)"},
      {"uint64", Npy(Dict("<u8", "(1,)"), "abcdefgh"), "int64 ('<i8') arrays (token ids)"},
      {"float16", Npy(Dict("<f2", "(2,)"), "abcd"), "unsupported .npy dtype '<f2'"},
      {"fortran", Npy(Dict("<f4", "(2,)", true), F32Bytes({1, 2})), "Fortran order"},
      {"missing key", Npy("{'descr': '<f4', 'shape': (2,), }", F32Bytes({1, 2})), "lacks"},
      {"unknown key", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", ""),
       "unexpected header key 'x'"},
      {"negative dim", Npy(Dict("<f4", "(2, -1)"), ""), "non-negative integers"},
      {"huge dim", Npy(Dict("<f4", "(99999999999999999999,)"), ""), "fit in int64"},
      {"overflowing shape", Npy(Dict("<f4", "(9223372036854775807, 4)"), ""), "overflows"},
      {"huge shape, no data", Npy(Dict("<f4", "(1000000000000,)"), ""), "needs 1000000000000"},
      {"short data", Npy(Dict("<f4", "(3,)"), F32Bytes({1, 2})), "holds 8 data bytes"},
      {"trailing bytes", good + "x", "holds 9 data bytes"},
      {"unterminated string", Npy("{'descr: '<f4'", ""), "expected ':'"},
      {"open string", Npy("{'descr", ""), "unterminated string"},
      {"no dict", Npy("[1, 2]", ""), "does not start with '{'"},
      {"text after dict", Npy(Dict("<f4", "(2,)") + " junk", F32Bytes({1, 2})), "after the"},
      {"bad bool", Npy("{'fortran_order': 0}", ""), "True or False"},
      {"shape not tuple", Npy("{'shape': [2]}", ""), "must be a tuple"},
      {"unclosed tuple", Npy("{'shape': (2 3)}", ""), "expected ',' or ')'"},
  };
  for (const BadCase& c : cases) {
    auto t = ParseNpy(c.bytes);
    ASSERT_FALSE(t.ok()) << c.name;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.message)) << c.name;
  }
}

TEST(NpyTest, NeverCrashesOnTruncationOrCorruption) {
  const std::string good = Npy(Dict("<f8", "(2, 3)"), F64Bytes({1, 2, 3, 4, 5, 6}));
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(ParseNpy(good.substr(0, n)).ok()) << "prefix " << n;
  }
  for (size_t i = 0; i < good.size(); ++i) {
    for (int b : {0x00, 0x27, 0x29, 0x2c, 0x39, 0x7d, 0xff}) {
      std::string bad = good;
      bad[i] = static_cast<char>(b);
      ParseNpy(bad).IgnoreError();  // any answer but a crash
    }
  }
}

TEST(NpyTest, ReadNpyNamesThePath) {
  auto missing = ReadNpy("/nonexistent/x.npy");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/x.npy"));

  const std::string path =
      (std::filesystem::temp_directory_path() / absl::StrCat("npy_bad_", getpid(), ".npy"))
          .string();
  {
    std::ofstream out(path, std::ios::binary);
    out << "not numpy";
  }
  auto bad = ReadNpy(path);
  std::filesystem::remove(path);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(path + ": not a valid .npy"));
}

// ReadNpy reads through base/file_io's ReadFile, so its codes are the model loader's.
TEST(NpyTest, ReadNpyRefusesWhatIsNotARegularFile) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / absl::StrCat("npy_dir_", getpid());
  std::filesystem::create_directories(dir);
  auto directory = ReadNpy(dir.string());
  const std::string fifo = (dir / "fifo.npy").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto from_fifo = ReadNpy(fifo);  // returns at once: no writer is waited for
  std::filesystem::remove_all(dir);
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr(dir.string()));
  EXPECT_EQ(from_fifo.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(NpyTest, WriteNpyReportsUnwritablePath) {
  EXPECT_FALSE(WriteNpy("/nonexistent/dir/x.npy", Tensor({1}, {1})).ok());
}

}  // namespace
}  // namespace rnnserve
