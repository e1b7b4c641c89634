// ParseSafetensors and SerializeSafetensors: round trips, F16/BF16 decoding, every rejection
// with its message, and robustness against every truncation and single-byte corruption.
#include "core/engine/safetensors.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/engine/format_test_util.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using format_test::Bits;
using format_test::ExpectSameParameters;
using format_test::SmallConfig;

// A safetensors blob from a raw header and raw data bytes, so tests can forge any header.
std::string Blob(const std::string& header, const std::string& data = "") {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

std::string U16Bytes(const std::vector<uint16_t>& words) {
  std::string out;
  for (uint16_t w : words) {
    out.push_back(static_cast<char>(w & 0xff));
    out.push_back(static_cast<char>(w >> 8));
  }
  return out;
}

std::string F32Bytes(const std::vector<float>& values) {
  std::string out;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  return out;
}

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Decodes `words` as a one-dimensional tensor of `dtype`.
std::vector<float> Decode(const std::string& dtype, const std::vector<uint16_t>& words) {
  const std::string header =
      absl::StrCat(R"({"t":{"dtype":")", dtype, R"(","shape":[)", words.size(),
                   R"(],"data_offsets":[0,)", 2 * words.size(), "]}}");
  absl::StatusOr<ParameterMap> parsed = ParseSafetensors(Blob(header, U16Bytes(words)));
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) return {};
  return parsed->at("t").values;
}

// The status message of parsing a forged blob, which must fail with INVALID_ARGUMENT.
std::string ParseError(const std::string& blob) {
  absl::StatusOr<ParameterMap> parsed = ParseSafetensors(blob);
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  return std::string(parsed.status().message());
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(SafetensorsTest, RoundTripIsBitExact) {
  RnnConfig config = SmallConfig();
  config.num_layers = 2;
  config.bidirectional = true;
  const ParameterMap params = RandomParameters(config, 7);
  absl::StatusOr<ParameterMap> parsed = ParseSafetensors(SerializeSafetensors(params));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ExpectSameParameters(*parsed, params);
}

TEST(SafetensorsTest, RoundTripKeepsSpecialValuesAndEmptyTensors) {
  ParameterMap params;
  params["special"] =
      Tensor({5}, {std::numeric_limits<float>::infinity(), -0.0f,
                   std::numeric_limits<float>::denorm_min(), FromBits(0x7fc01234u), -3.5f});
  params["empty"] = Tensor({0, 4}, {});
  params["scalar"] = Tensor({}, {42.0f});
  absl::StatusOr<ParameterMap> parsed = ParseSafetensors(SerializeSafetensors(params));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ExpectSameParameters(*parsed, params);
}

TEST(SafetensorsTest, SerializedLayoutIsSortedPackedAndAligned) {
  ParameterMap params;
  params["b"] = Tensor({1}, {2.0f});
  params["a"] = Tensor({2}, {1.0f, 1.5f});
  const std::string blob = SerializeSafetensors(params);
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(uint8_t(blob[i])) << (8 * i);
  EXPECT_EQ(header_size % 8, 0u);
  EXPECT_EQ(blob.size(), 8 + header_size + 12);
  EXPECT_EQ(blob.substr(8 + header_size), F32Bytes({1.0f, 1.5f, 2.0f}));
  const std::string header = blob.substr(8, header_size);
  EXPECT_THAT(header, HasSubstr(R"("a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]})"));
  EXPECT_THAT(header, HasSubstr(R"("b":{"data_offsets":[8,12],"dtype":"F32","shape":[1]})"));
}

TEST(SafetensorsTest, EmptyMapRoundTrips) {
  absl::StatusOr<ParameterMap> parsed = ParseSafetensors(SerializeSafetensors({}));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->empty());
}

TEST(SafetensorsTest, AcceptsMetadataSpacePaddingAndUnalignedData) {
  // Header of odd length: the data section starts unaligned.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  )";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  // And the whole blob at an odd address too.
  const std::string buffer = "?" + Blob(header, F32Bytes({0.25f, -7.0f}));
  absl::StatusOr<ParameterMap> parsed = ParseSafetensors(absl::string_view(buffer).substr(1));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);
  EXPECT_EQ(parsed->at("x").values, (std::vector<float>{0.25f, -7.0f}));
}

// ---------------------------------------------------------------------------------------------
// F16 / BF16

TEST(SafetensorsTest, F16KnownBitPatterns) {
  const std::vector<float> v = Decode(
      "F16", {0x3c00, 0xc000, 0x7bff, 0x0400, 0x0001, 0x03ff, 0x8000, 0x7c00, 0xfc00, 0x3555});
  ASSERT_EQ(v.size(), 10u);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], 65504.0f);                  // largest finite
  EXPECT_EQ(v[3], std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(v[4], std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(v[5], std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(Bits(v[6]), 0x80000000u);         // -0.0 keeps its sign
  EXPECT_EQ(v[7], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[8], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[9], 0.333251953125f);
}

TEST(SafetensorsTest, F16NaNsStayNaNWithPayload) {
  const std::vector<float> v = Decode("F16", {0x7e00, 0xfe00, 0x7c01});
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(Bits(v[0]), 0x7fc00000u);
  EXPECT_EQ(Bits(v[1]), 0xffc00000u);
  EXPECT_TRUE(std::isnan(v[2]));  // signalling NaN: payload 1, never turned into inf
  EXPECT_EQ(Bits(v[2]), 0x7f802000u);
}

TEST(SafetensorsTest, F16EveryFiniteValueMatchesTheFormula) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  const std::vector<float> v = Decode("F16", all);
  ASSERT_EQ(v.size(), all.size());
  for (uint32_t h = 0; h < all.size(); ++h) {
    const int exponent = (h >> 10) & 0x1f;
    const int mantissa = h & 0x3ff;
    if (exponent == 0x1f) continue;  // inf/NaN checked above
    // (-1)^s * 2^(e-15) * (1 + m/1024), or 2^-14 * m/1024 for subnormals; exact in double.
    const double magnitude =
        exponent == 0 ? std::ldexp(mantissa, -24) : std::ldexp(1024 + mantissa, exponent - 25);
    const double expected = (h & 0x8000) ? -magnitude : magnitude;
    ASSERT_EQ(static_cast<double>(v[h]), expected) << "half bits 0x" << std::hex << h;
    ASSERT_EQ(std::signbit(v[h]), (h & 0x8000) != 0) << "half bits 0x" << std::hex << h;
  }
}

TEST(SafetensorsTest, BF16KnownBitPatterns) {
  const std::vector<float> v =
      Decode("BF16", {0x3f80, 0xc049, 0x7f80, 0xff80, 0x7fc0, 0x0001, 0x8000, 0x7f7f});
  ASSERT_EQ(v.size(), 8u);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -3.140625f);
  EXPECT_EQ(v[2], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[3], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(v[4]));
  EXPECT_EQ(v[5], std::ldexp(1.0f, -133));  // smallest bf16 subnormal
  EXPECT_EQ(Bits(v[6]), 0x80000000u);
  EXPECT_EQ(Bits(v[7]), 0x7f7f0000u);  // largest finite bf16
}

// ---------------------------------------------------------------------------------------------
// Rejections

TEST(SafetensorsRejectTest, ShorterThanLengthField) {
  EXPECT_THAT(ParseError(""), HasSubstr("0 bytes, shorter than the 8-byte header length"));
  EXPECT_THAT(ParseError("\x02\0\0\0"), HasSubstr("shorter than the 8-byte header length"));
}

TEST(SafetensorsRejectTest, HeaderLengthBeyondFile) {
  std::string blob = Blob("{}");
  blob[0] = 3;  // claims 3 header bytes, has 2
  EXPECT_THAT(ParseError(blob),
              HasSubstr("header length 3 exceeds the 2 bytes that follow the length field"));
}

TEST(SafetensorsRejectTest, AbsurdHeaderLength) {
  std::string blob = Blob("{}");
  blob[7] = '\x80';
  EXPECT_THAT(ParseError(blob), HasSubstr("exceeds the limit of 100000000 bytes"));
}

TEST(SafetensorsRejectTest, BadJson) {
  EXPECT_THAT(ParseError(Blob(R"({"a": )")), HasSubstr("safetensors header is not valid JSON"));
  EXPECT_THAT(ParseError(Blob("")), HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseError(Blob("{} x")), HasSubstr("not valid JSON"));
  // nlohmann alone would stop at the NUL and accept "{}".
  // The quoted token is capped: an unterminated 1 MB string does not make a 1 MB message.
  const std::string unterminated = R"({"a)" + std::string(1 << 20, 'x');
  EXPECT_LT(ParseError(Blob(unterminated)).size(), 500u);
  EXPECT_THAT(ParseError(Blob(std::string("{}\0junk", 7))),
              HasSubstr("not valid JSON: NUL byte at offset 2"));
}

TEST(SafetensorsRejectTest, HeaderNotAnObject) {
  EXPECT_THAT(ParseError(Blob("[1, 2]")),
              HasSubstr("safetensors header must be a JSON object, got array"));
}

TEST(SafetensorsRejectTest, EntryNotAnObject) {
  EXPECT_THAT(ParseError(Blob(R"({"a": 3})")),
              HasSubstr("tensor 'a' must be a JSON object, got number"));
}

TEST(SafetensorsRejectTest, MissingAndExtraKeys) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","data_offsets":[0,0]}})")),
              HasSubstr("tensor 'a' is missing key 'shape'"));
  EXPECT_THAT(ParseError(Blob(R"({"a":{"shape":[0],"data_offsets":[0,0]}})")),
              HasSubstr("tensor 'a' is missing key 'dtype'"));
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[0]}})")),
              HasSubstr("tensor 'a' is missing key 'data_offsets'"));
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"foo":1}})")),
              HasSubstr("tensor 'a' has unexpected key 'foo'"));
}

TEST(SafetensorsRejectTest, UnknownDtypeIsNamed) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
                              std::string(8, '\0'))),
              HasSubstr(R"(tensor 'a' has unsupported dtype "F64"; supported: F32, F16, BF16)"));
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})",
                              std::string(4, '\0'))),
              HasSubstr("unsupported dtype 32"));
}

TEST(SafetensorsRejectTest, ShapeMustBeListOfNonNegativeInts) {
  for (const char* shape :
       {"3", "[-1]", "[1.5]", R"(["2"])", "[[2]]", "null", "[18446744073709551615]"}) {
    const std::string header =
        absl::StrCat(R"({"a":{"dtype":"F32","shape":)", shape, R"(,"data_offsets":[0,0]}})");
    EXPECT_THAT(ParseError(Blob(header)), HasSubstr("; expected a list of non-negative integers"))
        << shape;
  }
}

TEST(SafetensorsRejectTest, DeeplyNestedValuesAreNotPrintedRecursively) {
  const int depth = 200000;
  const std::string nested = std::string(depth, '[') + std::string(depth, ']');
  EXPECT_THAT(ParseError(Blob(absl::StrCat(R"({"a":{"dtype":"F32","shape":)", nested,
                                           R"(,"data_offsets":[0,0]}})"))),
              HasSubstr("tensor 'a' has shape [...]; expected a list of non-negative integers"));
  std::string long_dtype(1000, 'F');
  EXPECT_THAT(ParseError(Blob(absl::StrCat(R"({"a":{"dtype":")", long_dtype,
                                           R"(","shape":[0],"data_offsets":[0,0]}})"))),
              HasSubstr(absl::StrCat("unsupported dtype \"", std::string(79, 'F'), "...;")));
}

TEST(SafetensorsRejectTest, ElementCountOverflow) {
  EXPECT_THAT(ParseError(Blob(
                  R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})")),
              HasSubstr("tensor 'a' has shape (4294967296, 4294967296) whose byte size overflows"));
  // Fits int64 as an element count, not as a byte count.
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F16","shape":[4611686018427387904],)"
                              R"("data_offsets":[0,0]}})")),
              HasSubstr("whose byte size overflows"));
}

TEST(SafetensorsRejectTest, ByteSizeMustMatchOffsets) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
                              std::string(4, '\0'))),
              HasSubstr("tensor 'a' with shape (2,) needs 8 bytes but data_offsets [0, 4] "
                        "span 4"));
  // A huge declared shape is refused before any allocation.
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4]}})",
                              std::string(4, '\0'))),
              HasSubstr("needs 4000000000 bytes"));
}

TEST(SafetensorsRejectTest, OffsetsOutOfRange) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[25],"data_offsets":[0,100]}})",
                              std::string(8, '\0'))),
              HasSubstr("data_offsets [0, 100] beyond the data section of 8 bytes"));
}

TEST(SafetensorsRejectTest, BeginAfterEnd) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})",
                              std::string(8, '\0'))),
              HasSubstr("data_offsets [8, 4] with begin > end"));
}

TEST(SafetensorsRejectTest, MalformedOffsets) {
  for (const char* offsets : {"[0]", "[0,4,8]", "[-4,0]", "[0,4.0]", R"("0-4")", "{}"}) {
    const std::string header =
        absl::StrCat(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":)", offsets, "}}");
    EXPECT_THAT(ParseError(Blob(header, std::string(4, '\0'))),
                HasSubstr("expected [begin, end], two non-negative integers"))
        << offsets;
  }
}

TEST(SafetensorsRejectTest, OverlappingRanges) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              std::string(12, '\0'))),
              HasSubstr("tensors 'a' [0, 8) and 'b' [4, 12) overlap"));
  // The same range twice is an overlap too (two names aliasing one buffer).
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                              std::string(8, '\0'))),
              HasSubstr("overlap"));
}

TEST(SafetensorsRejectTest, GapBetweenRanges) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                              std::string(12, '\0'))),
              HasSubstr("data bytes [4, 8) belong to no tensor (gap before 'b')"));
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              std::string(8, '\0'))),
              HasSubstr("data bytes [0, 4) belong to no tensor"));
}

TEST(SafetensorsRejectTest, TrailingBytes) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                              std::string(7, '\0'))),
              HasSubstr("data section has 3 trailing bytes after the last tensor"));
  EXPECT_THAT(ParseError(Blob("{}", "x")), HasSubstr("1 trailing bytes"));
}

TEST(SafetensorsRejectTest, DuplicateNames) {
  EXPECT_THAT(ParseError(Blob(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              std::string(8, '\0'))),
              HasSubstr("safetensors header has duplicate tensor name 'a'"));
  EXPECT_THAT(
      ParseError(Blob(R"({"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})",
                      std::string(4, '\0'))),
      HasSubstr("duplicate key 'dtype' in 'a'"));
  // An entry under the empty name is still an entry, not the root.
  EXPECT_THAT(ParseError(Blob(R"({"":{"shape":[0],"shape":[0]}})")),
              HasSubstr("duplicate key 'shape' in ''"));
}

TEST(SafetensorsRejectTest, MalformedMetadata) {
  EXPECT_THAT(ParseError(Blob(R"({"__metadata__":["pt"]})")),
              HasSubstr("__metadata__ must be a JSON object of strings, got array"));
  EXPECT_THAT(ParseError(Blob(R"({"__metadata__":{"format":1}})")),
              HasSubstr("__metadata__ value of 'format' must be a string, got number"));
}

// Truncation at every offset and overwriting every byte with several values must give an error
// or a well-formed map, never a crash or out-of-bounds read (this runs under ASan/UBSan).
// Every proper prefix of `params`' file is refused, and every single-byte corruption yields an
// error or a well-formed map (any value is accepted in the data bytes).
void ExpectEveryTruncationAndByteCorruptionHandled(const ParameterMap& params) {
  const std::string blob = SerializeSafetensors(params);
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(uint8_t(blob[i])) << (8 * i);
  const size_t data_start = 8 + header_size;

  const auto expect_well_formed = [](const absl::StatusOr<ParameterMap>& parsed) {
    if (!parsed.ok()) return;
    for (const auto& [name, tensor] : *parsed) {
      EXPECT_EQ(static_cast<int64_t>(tensor.values.size()), NumElements(tensor.shape)) << name;
    }
  };
  for (size_t length = 0; length < blob.size(); ++length) {
    // Every tensor byte is needed, so no proper prefix can be a valid file.
    absl::StatusOr<ParameterMap> parsed = ParseSafetensors(absl::string_view(blob.data(), length));
    EXPECT_FALSE(parsed.ok()) << "prefix of " << length << " bytes";
  }
  const unsigned char replacements[] = {0x00, 0x01, 0x7f, 0x80, 0xff, '"', '[', ']',
                                        '{',  '}',  ',',  ':',  '-',  '9', ' ', 'e'};
  for (size_t offset = 0; offset < blob.size(); ++offset) {
    std::vector<unsigned char> values(std::begin(replacements), std::end(replacements));
    values.push_back(static_cast<unsigned char>(blob[offset] ^ 0x01));
    values.push_back(static_cast<unsigned char>(blob[offset] ^ 0x80));
    for (unsigned char value : values) {
      std::string corrupt = blob;
      corrupt[offset] = static_cast<char>(value);
      // A fresh heap copy of exactly the blob's size, so ASan catches a read one past the end.
      std::vector<char> exact(corrupt.begin(), corrupt.end());
      absl::StatusOr<ParameterMap> parsed =
          ParseSafetensors(absl::string_view(exact.data(), exact.size()));
      expect_well_formed(parsed);
      if (offset >= data_start) {
        // Data bytes are opaque: any value is a valid float.
        EXPECT_TRUE(parsed.ok()) << "offset " << offset << ": " << parsed.status();
      }
    }
  }
}

TEST(SafetensorsRobustnessTest, EveryTruncationAndByteCorruption) {
  ExpectEveryTruncationAndByteCorruptionHandled(RandomParameters(SmallConfig(), 3));
}

// The gated cells' state_dicts: GRU's 3H-row and LSTM's 4H-row weights, and the projection
// weight_hr of an LSTM with proj_size.
TEST(SafetensorsRobustnessTest, GruAndLstmProjFilesSurviveEveryTruncationAndCorruption) {
  RnnConfig gru = SmallConfig();
  gru.module = RnnModule::kGru;
  ExpectEveryTruncationAndByteCorruptionHandled(RandomParameters(gru, 4));
  RnnConfig lstm = SmallConfig();
  lstm.module = RnnModule::kLstm;
  lstm.hidden_size = 3;
  lstm.proj_size = 2;
  const ParameterMap params = RandomParameters(lstm, 5);
  ASSERT_EQ(params.count("weight_hr_l0"), 1u);
  ExpectEveryTruncationAndByteCorruptionHandled(params);
}

}  // namespace
}  // namespace rnnserve
