#include "client/cli/tensor_text.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rnnserve {
namespace cli {

std::string TensorText(const Tensor& t) {
  if (t.num_elements() == 0) return "[]";
  std::vector<std::string> cells;
  size_t width = 0;
  for (float v : t.values) {
    cells.push_back(absl::StrFormat("%.6g", v));
    width = std::max(width, cells.back().size());
  }
  if (t.dim() == 0) return cells[0];
  std::string out;
  std::vector<int64_t> strides(t.dim(), 1);
  for (int64_t d = t.dim() - 2; d >= 0; --d) strides[d] = strides[d + 1] * t.shape[d + 1];
  // Recursion over dimensions: `d` the dimension, `offset` the first element.
  auto rec = [&](auto& self, int64_t d, int64_t offset) -> void {
    out += '[';
    for (int64_t i = 0; i < t.shape[d]; ++i) {
      if (d == t.dim() - 1) {
        if (i > 0) out += ' ';
        const std::string& c = cells[offset + i];
        out += std::string(width - c.size(), ' ') + c;
      } else {
        if (i > 0) {
          out += '\n';
          if (d < t.dim() - 2) out += '\n';  // a blank line between blocks, as numpy
          out += std::string(d + 1, ' ');
        }
        self(self, d + 1, offset + i * strides[d]);
      }
    }
    out += ']';
  };
  rec(rec, 0, 0);
  return out;
}

std::string NamedTensorText(const std::string& name, const Tensor& t) {
  return absl::StrCat(name, " ", ShapeToString(t.shape), ":\n", TensorText(t), "\n");
}

}  // namespace cli
}  // namespace rnnserve
