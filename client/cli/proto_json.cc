#include "client/cli/proto_json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "proto/tensor_codec.h"
#include "rnnserve/v1/rnn_service.pb.h"

namespace rnnserve {
namespace cli {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// One value of field `f`: element `index` of a repeated field, or the singular value when
// `index` is -1.
Json FieldValue(const Message& m, const FieldDescriptor* f, int index) {
  const auto* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return ShortestDouble(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      // Bytes need not be UTF-8, which JSON strings must be: base64, as protobuf's JSON.
      if (f->type() == FieldDescriptor::TYPE_BYTES) return absl::Base64Escape(s);
      return s;
    }
    case FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name();
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoJson(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

}  // namespace

double ShortestDouble(float v) {
  if (!std::isfinite(v)) return v;
  char buf[32];
  for (int precision = 6; precision < 9; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtof(buf, nullptr) == v) return std::strtod(buf, nullptr);
  }
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return std::strtod(buf, nullptr);
}

Json TensorJson(const Tensor& t) {
  if (t.ids) {
    Json ids = Json::array();
    for (float v : t.values) ids.push_back(static_cast<int64_t>(v));
    return Json{{"shape", t.shape}, {"ids", std::move(ids)}};
  }
  Json values = Json::array();
  for (float v : t.values) values.push_back(ShortestDouble(v));
  return Json{{"shape", t.shape}, {"values", std::move(values)}};
}

Json ProtoJson(const Message& m) {
  if (m.GetDescriptor() == v1::Tensor::descriptor()) {
    auto t = DecodeTensor(static_cast<const v1::Tensor&>(m), "tensor");
    if (!t.ok()) return Json{{"error", std::string(t.status().message())}};
    return TensorJson(*t);
  }
  Json out = Json::object();
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->is_repeated()) {
      Json items = Json::array();
      for (int j = 0; j < r->FieldSize(m, f); ++j) items.push_back(FieldValue(m, f, j));
      out[f->name()] = std::move(items);
    } else if (!f->has_presence() || r->HasField(m, f)) {
      out[f->name()] = FieldValue(m, f, -1);
    }
  }
  return out;
}

}  // namespace cli
}  // namespace rnnserve
