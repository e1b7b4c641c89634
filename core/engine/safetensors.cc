#include "core/engine/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/tensor.h"
#include "core/engine/json_util.h"

namespace rnnserve {
namespace {

using json_internal::DescribeJson;
using json_internal::GetInt64;
using json_internal::Json;
using json_internal::ParseJsonObject;

constexpr char kMetadataKey[] = "__metadata__";
// The reference implementation refuses headers above 100 MB; so do we, so that a forged length
// cannot make us buffer or parse an absurd amount of JSON.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

enum class DType { kF32, kF16, kBF16 };

int64_t ElementBytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

absl::StatusOr<DType> ParseDType(const Json& value, const std::string& tensor) {
  if (value.is_string()) {
    const std::string& name = value.get_ref<const std::string&>();
    if (name == "F32") return DType::kF32;
    if (name == "F16") return DType::kF16;
    if (name == "BF16") return DType::kBF16;
  }
  return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor, "' has unsupported dtype ",
                                                 DescribeJson(value),
                                                 "; supported: F32, F16, BF16"));
}

// Little-endian loads assembled byte by byte: no alignment requirement (the data section of a
// hostile file may start anywhere) and correct on any host byte order.
uint16_t LoadU16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t LoadU32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t LoadU64(const unsigned char* p) {
  return static_cast<uint64_t>(LoadU32(p)) | (static_cast<uint64_t>(LoadU32(p + 4)) << 32);
}
float FloatFromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// IEEE binary16 -> binary32, exact for every input (all binary16 values are representable).
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) {
    // Inf, or NaN with its payload (and quiet bit) kept in the top mantissa bits.
    return FloatFromBits(sign | 0x7f800000u | (mantissa << 13));
  }
  return FloatFromBits(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

// bfloat16 is the top half of a float32.
float BFloat16ToFloat(uint16_t b) { return FloatFromBits(static_cast<uint32_t>(b) << 16); }

std::vector<float> DecodeValues(DType dtype, const unsigned char* data, int64_t count) {
  std::vector<float> values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    switch (dtype) {
      case DType::kF32:
        values[i] = FloatFromBits(LoadU32(data + 4 * i));
        break;
      case DType::kF16:
        values[i] = HalfToFloat(LoadU16(data + 2 * i));
        break;
      case DType::kBF16:
        values[i] = BFloat16ToFloat(LoadU16(data + 2 * i));
        break;
    }
  }
  return values;
}

// One header entry, checked on its own; coverage of the data section is checked across entries.
struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  int64_t num_elements = 0;
  uint64_t begin = 0;
  uint64_t end = 0;
};

absl::StatusOr<TensorEntry> ParseTensorEntry(const std::string& name, const Json& entry,
                                             uint64_t data_size) {
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' must be a JSON object, got ", entry.type_name()));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' is missing key '", key, "'"));
    }
  }
  if (entry.size() != 3) {
    for (const auto& [key, unused] : entry.items()) {
      if (key != "dtype" && key != "shape" && key != "data_offsets") {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", name, "' has unexpected key '", key,
                         "'; expected exactly dtype, shape, data_offsets"));
      }
    }
  }

  TensorEntry t;
  t.name = name;
  ASSIGN_OR_RETURN(t.dtype, ParseDType(entry["dtype"], name));

  const Json& shape = entry["shape"];
  const auto bad_shape = [&] {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ",
                                                   DescribeJson(shape),
                                                   "; expected a list of non-negative integers"));
  };
  if (!shape.is_array()) return bad_shape();
  for (const Json& dim : shape) {
    int64_t d;
    if (!GetInt64(dim, &d) || d < 0) return bad_shape();
    t.shape.push_back(d);
  }
  t.num_elements = NumElements(t.shape);
  const int64_t element_bytes = ElementBytes(t.dtype);
  if (t.num_elements < 0 || t.num_elements > std::numeric_limits<int64_t>::max() / element_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' has shape ", ShapeToString(t.shape), " whose byte size overflows"));
  }
  const uint64_t byte_size = static_cast<uint64_t>(t.num_elements * element_bytes);

  const Json& offsets = entry["data_offsets"];
  int64_t begin = -1, end = -1;
  if (!offsets.is_array() || offsets.size() != 2 || !GetInt64(offsets[0], &begin) ||
      !GetInt64(offsets[1], &end) || begin < 0 || end < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' has data_offsets ", DescribeJson(offsets),
                     "; expected [begin, end], two non-negative integers"));
  }
  t.begin = static_cast<uint64_t>(begin);
  t.end = static_cast<uint64_t>(end);
  if (t.begin > t.end) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has data_offsets [",
                                                   t.begin, ", ", t.end, "] with begin > end"));
  }
  if (t.end > data_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' has data_offsets [", t.begin, ", ", t.end,
                     "] beyond the data section of ", data_size, " bytes"));
  }
  if (t.end - t.begin != byte_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' with shape ", ShapeToString(t.shape), " needs ", byte_size,
        " bytes but data_offsets [", t.begin, ", ", t.end, "] span ", t.end - t.begin));
  }
  return t;
}

// __metadata__ is free-form string -> string; we ignore it but still insist on its shape.
absl::Status CheckMetadata(const Json& metadata) {
  if (metadata.is_object()) {
    for (const auto& [key, value] : metadata.items()) {
      if (!value.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "__metadata__ value of '", key, "' must be a string, got ", value.type_name()));
      }
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("__metadata__ must be a JSON object of strings, got ", metadata.type_name()));
}

// The tensors must tile [0, data_size) exactly: no overlap (aliasing), no gaps (hidden bytes).
absl::Status CheckCoverage(std::vector<const TensorEntry*> entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  uint64_t covered = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry* t : entries) {
    if (t->begin < covered) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors '", previous->name, "' [", previous->begin, ", ", previous->end,
                       ") and '", t->name, "' [", t->begin, ", ", t->end, ") overlap"));
    }
    if (t->begin > covered) {
      return absl::InvalidArgumentError(absl::StrCat("data bytes [", covered, ", ", t->begin,
                                                     ") belong to no tensor (gap before '", t->name,
                                                     "')"));
    }
    covered = t->end;
    previous = t;
  }
  if (covered != data_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data section has ", data_size - covered, " trailing bytes after the last tensor (",
        data_size, " bytes, tensors cover ", covered, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParameterMap> ParseSafetensors(absl::string_view bytes) {
  if (bytes.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors data is ", bytes.size(), " bytes, shorter than the 8-byte header length"));
  }
  const auto* base = reinterpret_cast<const unsigned char*>(bytes.data());
  const uint64_t header_size = LoadU64(base);
  const uint64_t after_length = bytes.size() - 8;
  if (header_size > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors header length ", header_size,
                                                   " exceeds the limit of ", kMaxHeaderBytes,
                                                   " bytes"));
  }
  if (header_size > after_length) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors header length ", header_size,
                                                   " exceeds the ", after_length,
                                                   " bytes that follow the length field"));
  }
  ASSIGN_OR_RETURN(Json header, ParseJsonObject(bytes.substr(8, header_size), "safetensors header",
                                                "tensor name"));

  const uint64_t data_size = after_length - header_size;
  const unsigned char* data = base + 8 + header_size;
  std::vector<TensorEntry> entries;
  entries.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      RETURN_IF_ERROR(CheckMetadata(entry));
      continue;
    }
    ASSIGN_OR_RETURN(TensorEntry t, ParseTensorEntry(name, entry, data_size));
    entries.push_back(std::move(t));
  }
  std::vector<const TensorEntry*> by_offset;
  for (const TensorEntry& t : entries) by_offset.push_back(&t);
  RETURN_IF_ERROR(CheckCoverage(std::move(by_offset), data_size));

  // Every range is now known to lie inside the data section with the right size.
  ParameterMap tensors;
  for (TensorEntry& t : entries) {
    std::vector<float> values = DecodeValues(t.dtype, data + t.begin, t.num_elements);
    tensors.emplace(t.name, Tensor(std::move(t.shape), std::move(values)));
  }
  return tensors;
}

std::string SerializeSafetensors(const ParameterMap& tensors) {
  // ParameterMap is ordered by name, so the data lands in sorted-name order.
  Json header = Json::object();
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const uint64_t size = tensor.values.size() * sizeof(float);
    header[name] = {
        {"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string header_text = header.dump();
  // Pad with spaces (allowed by the format) so the data starts 8-byte aligned.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + header_text.size() + offset);
  const uint64_t header_size = header_text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((header_size >> (8 * i)) & 0xff));
  out += header_text;
  for (const auto& [name, tensor] : tensors) {
    for (float v : tensor.values) {
      uint32_t bits;
      std::memcpy(&bits, &v, sizeof(bits));
      for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
    }
  }
  return out;
}

}  // namespace rnnserve
