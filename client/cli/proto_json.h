// JSON for rnnserve-client's --json output: any protobuf message under its proto field names,
// and tensors as {"shape", "values"}. Unlike protobuf's own JSON printer, 64-bit integers are
// JSON numbers (exact: nlohmann keeps int64/uint64), and rnnserve.v1.Tensor fields are decoded
// whatever their encoding. Stateless free functions; thread-safe.
#ifndef RNNSERVE_CLIENT_CLI_PROTO_JSON_H_
#define RNNSERVE_CLIENT_CLI_PROTO_JSON_H_

#include "base/tensor.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace rnnserve {
namespace cli {

// Keys keep insertion order: fields print in proto declaration order.
using Json = nlohmann::ordered_json;

// The double that prints as the shortest decimal which reads back as `v` in float32, so JSON
// shows 0.1 rather than 0.10000000149011612. Non-finite values pass through.
double ShortestDouble(float v);

// {"shape": [...], "values": [...]}, values flat in C order; token ids (Tensor::ids) as
// {"shape": [...], "ids": [...]} of integers.
Json TensorJson(const Tensor& t);

// `message` as a JSON object: every field without presence (proto3 scalars, repeated fields)
// and every present optional or message field; enums by value name, bytes as base64, floats
// through ShortestDouble. A v1.Tensor becomes TensorJson, or {"error": ...} when it does not
// decode.
Json ProtoJson(const google::protobuf::Message& message);

}  // namespace cli
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_CLI_PROTO_JSON_H_
