// Every conversion between the service's messages (rnnserve.v1) and ServingCore's types, in
// one place, so the handlers and the stream reactor only route calls. Requests are treated as
// hostile: tensor problems come back as INVALID_ARGUMENT naming the field. Statuses cross the
// wire through proto/status_codec only.
//
// Stateless free functions; thread-safe. Nothing here computes on tensor values.
#ifndef RNNSERVE_SERVER_PROTO_CONVERT_H_
#define RNNSERVE_SERVER_PROTO_CONVERT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "base/tensor.h"
#include "core/engine/rnn_model.h"
#include "core/serving/model_registry.h"
#include "core/serving/serving_core.h"
#include "proto/tensor_codec.h"
#include "rnnserve/v1/rnn_service.pb.h"

namespace rnnserve {

// A served model as GetModel / ListModels describe it, including torch's repr (`module`).
void ModelInfoToProto(const ServedModel& model, v1::ModelInfo* info);

// A session as GetSession / CloseSession describe it; h_n (when the snapshot has it) in
// `encoding`.
void SessionInfoToProto(const SessionSnapshot& session, TensorEncoding encoding,
                        v1::SessionInfo* info);

// A StreamRequest as the core takes it, with what its response needs to echo.
struct DecodedStreamRequest {
  ChunkRequest chunk;
  uint64_t request_id = 0;
  // The response's tensors use the encoding of the request's input.
  TensorEncoding encoding = TensorEncoding::kValues;
};

// Moves the input's raw bytes out of `request` (it is left without them) instead of copying.
// A malformed input or h_0 does not fail the call: it goes into chunk.decode_error, so the
// core answers it in the session's order like any other request.
DecodedStreamRequest StreamRequestToChunk(v1::StreamRequest* request);

// A chunk's result as its StreamResponse; the result's raw buffers move into the response. A
// response larger than `max_message_bytes` loses its tensors; an applied chunk's then says
// output_truncated (still a success: the chunk was applied), so one oversized answer does not
// break the stream and an error code keeps meaning "not applied".
v1::StreamResponse ChunkResultToResponse(ChunkResult result, uint64_t request_id,
                                         TensorEncoding encoding, int64_t max_message_bytes);

// A ForwardRequest's arguments for ServingCore::Forward.
struct ForwardArgs {
  std::string model;
  int64_t model_version = 0;  // 0: the latest READY version
  Tensor input;
  std::optional<Tensor> h0;
  std::optional<Tensor> c0;  // LSTM only
  TensorEncoding encoding = TensorEncoding::kValues;  // of the input, for the response
};
absl::StatusOr<ForwardArgs> ForwardRequestToArgs(const v1::ForwardRequest& request);

void ForwardResultToResponse(const ForwardResult& result, TensorEncoding encoding,
                             v1::ForwardResponse* response);

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_PROTO_CONVERT_H_
