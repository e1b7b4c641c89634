#include "client/npy.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>

#include "absl/base/config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/file_io.h"
#include "base/status_macros.h"

namespace rnnserve {
namespace {

static_assert(ABSL_IS_LITTLE_ENDIAN, "the writer emits native bytes as little-endian");

constexpr absl::string_view kMagic("\x93NUMPY", 6);

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("not a valid .npy file: ", what));
}

// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// This parser accepts exactly the subset numpy writes: string keys, and string, boolean or
// int-tuple values.
class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view text) : text_(text) {}

  struct Header {
    std::optional<std::string> descr;
    std::optional<bool> fortran_order;
    std::optional<Shape> shape;
  };

  absl::StatusOr<Header> Parse() {
    Header header;
    SkipSpace();
    if (!Consume('{')) return Bad("header does not start with '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      auto key = ParseString();
      if (!key.ok()) return key.status();
      SkipSpace();
      if (!Consume(':')) return Bad(absl::StrCat("expected ':' after key '", *key, "'"));
      SkipSpace();
      if (*key == "descr") {
        auto descr = ParseString();
        if (!descr.ok()) return descr.status();
        header.descr = *descr;
      } else if (*key == "fortran_order") {
        auto b = ParseBool();
        if (!b.ok()) return b.status();
        header.fortran_order = *b;
      } else if (*key == "shape") {
        auto shape = ParseTuple();
        if (!shape.ok()) return shape.status();
        header.shape = *std::move(shape);
      } else {
        return Bad(absl::StrCat("unexpected header key '", *key, "'"));
      }
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume('}')) break;
      return Bad("expected ',' or '}' in the header dict");
    }
    SkipSpace();
    if (pos_ != text_.size()) return Bad("unexpected text after the header dict");
    if (!header.descr || !header.fortran_order || !header.shape) {
      return Bad("header lacks one of 'descr', 'fortran_order', 'shape'");
    }
    return header;
  }

 private:
  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool ConsumeWord(absl::string_view word) {
    if (text_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  absl::StatusOr<std::string> ParseString() {
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      return Bad("expected a quoted string in the header");
    }
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == absl::string_view::npos) return Bad("unterminated string in the header");
    std::string s(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }

  absl::StatusOr<bool> ParseBool() {
    if (ConsumeWord("True")) return true;
    if (ConsumeWord("False")) return false;
    return Bad("'fortran_order' must be True or False");
  }

  absl::StatusOr<Shape> ParseTuple() {
    if (!Consume('(')) return Bad("'shape' must be a tuple");
    Shape shape;
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      size_t start = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_]))) {
        ++pos_;
      }
      int64_t d = 0;
      if (start == pos_ || !absl::SimpleAtoi(text_.substr(start, pos_ - start), &d)) {
        return Bad("'shape' must hold non-negative integers that fit in int64");
      }
      Consume('L');  // Python 2 long literals, as old numpy wrote them
      shape.push_back(d);
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume(')')) break;
      return Bad("expected ',' or ')' in 'shape'");
    }
    return shape;
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

uint32_t ReadLe(absl::string_view bytes, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return v;
}

}  // namespace

absl::StatusOr<Tensor> ParseNpy(absl::string_view bytes) {
  if (bytes.size() < kMagic.size() + 2 || bytes.substr(0, kMagic.size()) != kMagic) {
    return Bad("missing the \\x93NUMPY magic");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t pos = 8;
  size_t header_len = 0;
  if (major == 1) {
    if (bytes.size() < pos + 2) return Bad("truncated before the header length");
    header_len = ReadLe(bytes.substr(pos), 2);
    pos += 2;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < pos + 4) return Bad("truncated before the header length");
    header_len = ReadLe(bytes.substr(pos), 4);
    pos += 4;
  } else {
    return Bad(absl::StrCat("unsupported format version ", major, ".",
                            static_cast<int>(static_cast<unsigned char>(bytes[7])),
                            " (1.0 to 3.0 are)"));
  }
  if (bytes.size() - pos < header_len) {
    return Bad(absl::StrCat("header of ", header_len, " bytes runs past the end of the file"));
  }
  HeaderParser parser(bytes.substr(pos, header_len));
  auto header = parser.Parse();
  if (!header.ok()) return header.status();
  pos += header_len;

  const std::string& descr = *header->descr;
  // "<f4": byte order, kind (f float, i signed integer: token ids), bytes per item.
  const bool known = descr.size() == 3 && absl::string_view("<=>").find(descr[0]) !=
                                              absl::string_view::npos;
  const absl::string_view kind_size = known ? absl::string_view(descr).substr(1) : "";
  if (kind_size != "f4" && kind_size != "f8" && kind_size != "i4" && kind_size != "i8") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported .npy dtype '", descr,
        "': only float32 ('<f4') and float64 ('<f8') arrays (features), and int32 ('<i4') and "
        "int64 ('<i8') arrays (token ids) are read; convert with x.astype(numpy.float32)"));
  }
  const bool ids = kind_size[0] == 'i';
  const size_t item_size = kind_size[1] == '4' ? 4 : 8;
  const bool big_endian = descr[0] == '>';
  if (*header->fortran_order) {
    return absl::InvalidArgumentError(
        "the .npy array is in Fortran order; save numpy.ascontiguousarray(x) instead");
  }
  const Shape& shape = *header->shape;
  const int64_t count = NumElements(shape);
  if (count < 0) {
    return Bad(absl::StrCat("shape ", ShapeToString(shape), " overflows int64"));
  }
  // Compare without multiplying, so a huge shape cannot overflow or trigger a huge allocation.
  const size_t data_len = bytes.size() - pos;
  if (data_len % item_size != 0 || static_cast<uint64_t>(count) != data_len / item_size) {
    return Bad(absl::StrCat("shape ", ShapeToString(shape), " of ", descr, " needs ", count,
                            " values, the file holds ", data_len, " data bytes"));
  }
  Tensor tensor(shape, std::vector<float>(count));
  tensor.ids = ids;
  const char* data = bytes.data() + pos;
  for (int64_t i = 0; i < count; ++i) {
    unsigned char b[8];
    std::memcpy(b, data + i * item_size, item_size);
    if (big_endian) std::reverse(b, b + item_size);
    if (ids && item_size == 4) {
      int32_t v;
      std::memcpy(&v, b, 4);
      tensor.values[i] = TokenIdAsFloat(v);
    } else if (ids) {
      int64_t v;
      std::memcpy(&v, b, 8);
      tensor.values[i] = TokenIdAsFloat(v);
    } else if (item_size == 4) {
      float f;
      std::memcpy(&f, b, 4);
      tensor.values[i] = f;
    } else {
      double d;
      std::memcpy(&d, b, 8);
      tensor.values[i] = static_cast<float>(d);
    }
  }
  return tensor;
}

absl::StatusOr<Tensor> ReadNpy(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  absl::StatusOr<Tensor> tensor = ParseNpy(bytes);
  if (!tensor.ok()) return PrefixStatus(path, tensor.status());
  return tensor;
}

std::string SerializeNpy(const Tensor& tensor) {
  std::string shape;
  if (tensor.shape.size() == 1) {
    shape = absl::StrCat("(", tensor.shape[0], ",)");
  } else {
    shape = absl::StrCat("(", absl::StrJoin(tensor.shape, ", "), ")");
  }
  std::string dict =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': ", shape, ", }");
  // numpy pads with spaces and a final newline so the data starts 64-byte aligned.
  const size_t preamble = kMagic.size() + 2 + 2;
  size_t total = preamble + dict.size() + 1;
  total = (total + 63) / 64 * 64;
  dict.resize(total - preamble - 1, ' ');
  dict.push_back('\n');

  std::string out(kMagic);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>((dict.size() >> 8) & 0xff));
  out += dict;
  out.append(reinterpret_cast<const char*>(tensor.data()), tensor.values.size() * sizeof(float));
  return out;
}

absl::Status WriteNpy(const std::string& path, const Tensor& tensor) {
  return WriteFile(path, SerializeNpy(tensor));
}

}  // namespace rnnserve
