// ProtoJson / TensorJson: the CLI's --json output. Every field kind is checked on a message
// built at run time (DynamicMessage), tensors on the real rnnserve.v1 protos.
#include "client/cli/proto_json.h"

#include <cmath>
#include <limits>
#include <memory>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "proto/tensor_codec.h"
#include "rnnserve/v1/rnn_service.pb.h"

namespace rnnserve {
namespace cli {
namespace {

using ::testing::HasSubstr;

// A proto3 message with one field of every kind, singular and repeated.
constexpr char kAllKindsFile[] = R"pb(
  name: "all_kinds.proto"
  package: "t"
  syntax: "proto3"
  enum_type {
    name: "Kind"
    value { name: "KIND_ZERO" number: 0 }
    value { name: "KIND_ONE" number: 1 }
  }
  message_type {
    name: "Inner"
    field { name: "x" number: 1 type: TYPE_INT32 label: LABEL_OPTIONAL }
  }
  message_type {
    name: "AllKinds"
    field { name: "i32" number: 1 type: TYPE_INT32 label: LABEL_OPTIONAL }
    field { name: "i64" number: 2 type: TYPE_INT64 label: LABEL_OPTIONAL }
    field { name: "u32" number: 3 type: TYPE_UINT32 label: LABEL_OPTIONAL }
    field { name: "u64" number: 4 type: TYPE_UINT64 label: LABEL_OPTIONAL }
    field { name: "d" number: 5 type: TYPE_DOUBLE label: LABEL_OPTIONAL }
    field { name: "f" number: 6 type: TYPE_FLOAT label: LABEL_OPTIONAL }
    field { name: "b" number: 7 type: TYPE_BOOL label: LABEL_OPTIONAL }
    field { name: "s" number: 8 type: TYPE_STRING label: LABEL_OPTIONAL }
    field { name: "by" number: 9 type: TYPE_BYTES label: LABEL_OPTIONAL }
    field { name: "e" number: 10 type: TYPE_ENUM type_name: ".t.Kind" label: LABEL_OPTIONAL }
    field { name: "m" number: 11 type: TYPE_MESSAGE type_name: ".t.Inner" label: LABEL_OPTIONAL }
    field { name: "ri64" number: 12 type: TYPE_INT64 label: LABEL_REPEATED }
    field { name: "rf" number: 13 type: TYPE_FLOAT label: LABEL_REPEATED }
    field { name: "rs" number: 14 type: TYPE_STRING label: LABEL_REPEATED }
    field { name: "re" number: 15 type: TYPE_ENUM type_name: ".t.Kind" label: LABEL_REPEATED }
    field { name: "rm" number: 16 type: TYPE_MESSAGE type_name: ".t.Inner" label: LABEL_REPEATED }
    field { name: "sint" number: 17 type: TYPE_SINT64 label: LABEL_OPTIONAL }
    field { name: "fix" number: 18 type: TYPE_FIXED64 label: LABEL_OPTIONAL }
  }
)pb";

class ProtoJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(kAllKindsFile, &file));
    ASSERT_NE(pool_.BuildFile(file), nullptr);
    const auto* descriptor = pool_.FindMessageTypeByName("t.AllKinds");
    ASSERT_NE(descriptor, nullptr);
    message_.reset(factory_.GetPrototype(descriptor)->New());
  }

  Json Parse(const std::string& text) {
    message_->Clear();
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, message_.get())) << text;
    // Through text, as the CLI prints it, so the test sees what a script sees.
    return Json::parse(ProtoJson(*message_).dump());
  }

  google::protobuf::DescriptorPool pool_;
  google::protobuf::DynamicMessageFactory factory_{&pool_};
  std::unique_ptr<google::protobuf::Message> message_;
};

TEST_F(ProtoJsonTest, EveryFieldKind) {
  const Json j = Parse(R"pb(
    i32: -5
    i64: -9007199254740993
    u32: 4000000000
    u64: 18446744073709551615
    d: 0.1
    f: 0.1
    b: true
    s: "héllo"
    by: "\000\377ab"
    e: KIND_ONE
    m { x: 3 }
    ri64: [ 1, -2 ]
    rf: [ 0.5, 1e-7 ]
    rs: [ "a", "b" ]
    re: [ KIND_ONE, KIND_ZERO ]
    rm { x: 1 }
    rm {}
    sint: -7
    fix: 12345678901234
  )pb");
  EXPECT_EQ(j["i32"], -5);
  // 64-bit integers are exact JSON numbers, not strings as in protobuf's own JSON.
  ASSERT_TRUE(j["i64"].is_number_integer());
  EXPECT_EQ(j["i64"].get<int64_t>(), -9007199254740993);
  ASSERT_TRUE(j["u64"].is_number_unsigned());
  EXPECT_EQ(j["u64"].get<uint64_t>(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(j["u32"].get<uint32_t>(), 4000000000u);
  EXPECT_EQ(j["sint"], -7);
  EXPECT_EQ(j["fix"].get<uint64_t>(), 12345678901234u);
  EXPECT_EQ(j["d"].get<double>(), 0.1);
  // A float prints as its shortest decimal, 0.1, not 0.10000000149011612.
  EXPECT_EQ(j["f"].get<double>(), 0.1);
  EXPECT_EQ(j["b"], true);
  EXPECT_EQ(j["s"], "héllo");
  EXPECT_EQ(j["by"], "AP9hYg==");  // base64: bytes need not be UTF-8
  EXPECT_EQ(j["e"], "KIND_ONE");
  EXPECT_EQ(j["m"], Json::parse(R"({"x": 3})"));
  EXPECT_EQ(j["ri64"], Json::parse("[1, -2]"));
  EXPECT_EQ(j["rf"], Json::parse("[0.5, 1e-7]"));
  EXPECT_EQ(j["rs"], Json::parse(R"(["a", "b"])"));
  EXPECT_EQ(j["re"], Json::parse(R"(["KIND_ONE", "KIND_ZERO"])"));
  EXPECT_EQ(j["rm"], Json::parse(R"([{"x": 1}, {"x": 0}])"));
}

TEST_F(ProtoJsonTest, DefaultsPrintedAbsentMessagesLeftOutOrderKept) {
  const Json j = Parse("");
  // Scalars without presence print their defaults; repeated fields print [].
  EXPECT_EQ(j["i64"], 0);
  EXPECT_EQ(j["s"], "");
  EXPECT_EQ(j["e"], "KIND_ZERO");
  EXPECT_EQ(j["ri64"], Json::array());
  EXPECT_EQ(j["rm"], Json::array());
  // A message field that is not set is left out.
  EXPECT_FALSE(j.contains("m"));
  // Keys in field declaration order.
  const Json ordered = ProtoJson(*message_);
  EXPECT_EQ(ordered.begin().key(), "i32");
  EXPECT_THAT(ordered.dump(), HasSubstr(R"("i32":0,"i64":0,"u32":0)"));
}

TEST(ProtoJsonTensorTest, TensorsDecodedWhateverTheEncoding) {
  const Tensor output({2, 1, 2}, {0.1f, -2, 3.5f, 1e-7f});
  const Tensor h_n({1, 1, 2}, {0.25f, -0.75f});
  for (TensorEncoding encoding : {TensorEncoding::kRaw, TensorEncoding::kValues}) {
    v1::ForwardResponse response;
    EncodeTensor(output, encoding, response.mutable_output());
    EncodeTensor(h_n, encoding, response.mutable_h_n());
    const Json j = Json::parse(ProtoJson(response).dump());
    EXPECT_EQ(j, Json::parse(R"({"output": {"shape": [2, 1, 2], "values": [0.1, -2, 3.5, 1e-7]},
                                 "h_n": {"shape": [1, 1, 2], "values": [0.25, -0.75]}})"))
        << j.dump();
  }
}

TEST(ProtoJsonTensorTest, OptionalFieldPresenceAndBadTensors) {
  v1::StreamResponse response;
  EXPECT_FALSE(ProtoJson(response).contains("chunk_index"));
  response.set_chunk_index(0);
  EXPECT_EQ(ProtoJson(response)["chunk_index"], 0);
  // A tensor whose values do not fill its shape reports why instead of numbers.
  response.mutable_output()->add_shape(3);
  response.mutable_output()->add_values(1);
  const Json j = ProtoJson(response);
  ASSERT_TRUE(j["output"].contains("error")) << j.dump();
  EXPECT_THAT(j["output"]["error"].get<std::string>(), HasSubstr("tensor"));
}

TEST(ShortestDoubleTest, RoundTripsThroughFloat) {
  for (float v : {0.1f, 1.0f / 3.0f, 1e-30f, 3.4028235e38f, -2.5f, 0.0f, 16777217.0f}) {
    const double d = ShortestDouble(v);
    EXPECT_EQ(static_cast<float>(d), v) << v;
  }
  EXPECT_EQ(ShortestDouble(0.1f), 0.1);
  EXPECT_TRUE(std::isnan(ShortestDouble(std::nanf(""))));
  EXPECT_EQ(ShortestDouble(std::numeric_limits<float>::infinity()),
            std::numeric_limits<double>::infinity());
}

TEST(TensorJsonTest, ShapeAndFlatValues) {
  EXPECT_EQ(TensorJson(Tensor({}, {7})).dump(), R"({"shape":[],"values":[7.0]})");
  EXPECT_EQ(TensorJson(Tensor({2, 0}, {})).dump(), R"({"shape":[2,0],"values":[]})");
}

}  // namespace
}  // namespace cli
}  // namespace rnnserve
