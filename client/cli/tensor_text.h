// Human-readable tensors for rnnserve-client's text output: numpy-style nested brackets, one
// innermost row per line, values aligned. Stateless free functions; thread-safe.
#ifndef RNNSERVE_CLIENT_CLI_TENSOR_TEXT_H_
#define RNNSERVE_CLIENT_CLI_TENSOR_TEXT_H_

#include <string>

#include "base/tensor.h"

namespace rnnserve {
namespace cli {

// `t` as numpy prints it: values with %.6g, right-aligned to the widest; a blank line between
// blocks of 3-d and deeper tensors; "[]" for no elements; a 0-d tensor is its value alone.
std::string TensorText(const Tensor& t);

// "NAME (d0, d1, ...):\n" followed by TensorText(t) and a newline.
std::string NamedTensorText(const std::string& name, const Tensor& t);

}  // namespace cli
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_CLI_TENSOR_TEXT_H_
