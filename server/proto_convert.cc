#include "server/proto_convert.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/text.h"
#include "core/engine/kernels/kernel_isa.h"
#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_parameters.h"
#include "proto/status_codec.h"

namespace rnnserve {

namespace {

// The pieces of `pipeline` in order (input layer, core, head), each with the features it takes
// and gives: the running count through activations, 1 (one id) into an Embedding.
void PipelineLayersToProto(const PipelineConfig& pipeline, v1::ModelInfo* info) {
  int64_t features = pipeline.input_features();
  const auto add_layers = [&](const std::vector<LayerConfig>& layers, const char* stage) {
    for (const LayerConfig& layer : layers) {
      v1::PipelineLayer* out = info->add_layers();
      out->set_path(layer.path);
      out->set_type(std::string(LayerTypeName(layer.type)));
      out->set_repr(LayerToString(layer));
      out->set_stage(stage);
      out->set_in_features(layer.type == LayerType::kEmbedding ? 1 : features);
      if (layer.type == LayerType::kLinear || layer.type == LayerType::kEmbedding) {
        features = layer.out_features;
      }
      out->set_out_features(features);
    }
  };
  add_layers(pipeline.input_layer, "input_layer");
  const RnnConfig& c = pipeline.rnn;
  v1::PipelineLayer* core = info->add_layers();
  core->set_path(pipeline.rnn_path);
  core->set_type(std::string(ModuleName(c.module)));
  core->set_repr(ConfigToString(c));
  core->set_stage("core");
  core->set_in_features(c.input_size);
  core->set_out_features(c.output_size());
  features = c.output_size();
  add_layers(pipeline.head, "head");
}

}  // namespace

void ModelInfoToProto(const ServedModel& model, v1::ModelInfo* info) {
  const PipelineConfig& pipeline = model.model->pipeline();
  const RnnConfig& c = pipeline.rnn;
  info->set_name(model.name);
  v1::ModelConfig* config = info->mutable_config();
  config->set_input_size(c.input_size);
  config->set_hidden_size(c.hidden_size);
  config->set_num_layers(c.num_layers);
  config->set_module(std::string(ModuleName(c.module)));
  // Only torch.nn.RNN has a nonlinearity argument.
  if (c.module == RnnModule::kRnn) {
    config->set_nonlinearity(std::string(NonlinearityName(c.nonlinearity)));
  }
  config->set_proj_size(c.proj_size);
  config->set_bias(c.bias);
  config->set_batch_first(c.batch_first);
  config->set_dropout(c.dropout);
  config->set_bidirectional(c.bidirectional);
  // Full names ("rnn.weight_ih_l0", "head.0.weight"); a core-only model's are torch's bare ones.
  for (const ParameterSpec& spec : PipelineParameterSpecs(pipeline)) {
    v1::ParameterInfo* parameter = info->add_parameters();
    parameter->set_name(spec.name);
    for (int64_t d : spec.shape) parameter->add_shape(d);
  }
  // (T, N) / (N, T) of ids, or (T, N, C) / (N, T, C) of features.
  info->add_input_shape(-1);
  info->add_input_shape(-1);
  if (pipeline.takes_ids()) {
    info->set_input_layout(c.batch_first ? "(N, T)" : "(T, N)");
  } else {
    info->add_input_shape(pipeline.input_features());
    info->set_input_layout(c.batch_first ? "(N, T, C)" : "(T, N, C)");
  }
  info->set_input_kind(pipeline.takes_ids() ? "ids" : "features");
  for (int64_t d : {int64_t{-1}, int64_t{-1}, pipeline.output_features()}) {
    info->add_output_shape(d);
  }
  for (int64_t d : {c.num_state_rows(), int64_t{-1}, c.real_hidden_size()}) {
    info->add_state_shape(d);
  }
  if (c.has_cell_state()) {
    for (int64_t d : {c.num_state_rows(), int64_t{-1}, c.hidden_size}) {
      info->add_cell_state_shape(d);
    }
  }
  info->set_parameter_count(model.parameter_count);
  info->set_streaming_buffers_until_end(c.bidirectional);
  info->set_module(ConfigToString(c));
  info->set_pipeline(PipelineToString(pipeline));
  PipelineLayersToProto(pipeline, info);
  info->set_kernel_isa(std::string(KernelIsaName(model.model->kernel_isa())));
  info->set_version(model.version);
  info->set_state("READY");  // a ServedModel handed out by the registry is a READY one
}

void SessionInfoToProto(const SessionSnapshot& session, TensorEncoding encoding,
                        v1::SessionInfo* info) {
  info->set_session_id(session.session_id);
  info->set_model(session.model);
  info->set_model_version(session.model_version);
  info->set_steps_seen(session.steps_seen);
  info->set_next_chunk_index(session.next_chunk_index);
  info->set_batch_size(session.batch_size);
  info->set_unbatched(session.unbatched);
  if (session.h_n.has_value()) EncodeTensor(*session.h_n, encoding, info->mutable_h_n());
  if (session.c_n.has_value()) EncodeTensor(*session.c_n, encoding, info->mutable_c_n());
  info->set_created_unix_ms(absl::ToUnixMillis(session.created));
  info->set_last_used_unix_ms(absl::ToUnixMillis(session.last_used));
  info->set_expires_in_ms(absl::ToInt64Milliseconds(session.expires_in));
  info->set_state_bytes(session.state_bytes);
  info->set_buffered_steps(session.buffered_steps);
  info->set_buffered_input_bytes(session.memory[MemoryPart::kBufferedInput]);
  info->set_replay_bytes(session.memory[MemoryPart::kReplay]);
  info->set_id_bytes(session.memory[MemoryPart::kIds]);
  info->set_memory_bytes(session.memory.total());
}

namespace {

// h_0 / c_0: an initial state is float32, never token ids.
absl::StatusOr<std::optional<Tensor>> DecodeState(const v1::Tensor& proto,
                                                  absl::string_view what) {
  if (proto.ids_size() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": a state is float32: set `values` or `raw`, not `ids` (ids are for the input)"));
  }
  return DecodeOptional(proto, what);
}

}  // namespace

DecodedStreamRequest StreamRequestToChunk(v1::StreamRequest* request) {
  DecodedStreamRequest out;
  out.request_id = request->request_id();
  out.encoding = EncodingOf(request->input());
  ChunkRequest& chunk = out.chunk;
  chunk.session_id = request->session_id();
  chunk.model = request->model();
  chunk.model_version = request->model_version();
  chunk.start = request->start();
  chunk.end = request->end();
  chunk.omit_state = request->omit_state();
  if (request->has_chunk_index()) chunk.chunk_index = request->chunk_index();
  chunk.idempotency_key = request->idempotency_key();
  absl::StatusOr<std::optional<TensorBytes>> input = std::optional<TensorBytes>();
  if (!IsEmptyTensor(request->input())) {
    input = TakeTensorBytes(request->mutable_input(), "input");
  }
  absl::StatusOr<std::optional<Tensor>> h0 = DecodeState(request->h_0(), "h_0");
  absl::StatusOr<std::optional<Tensor>> c0 = DecodeState(request->c_0(), "c_0");
  if (!input.ok()) {
    chunk.decode_error = input.status();
  } else if (!h0.ok()) {
    chunk.decode_error = h0.status();
  } else if (!c0.ok()) {
    chunk.decode_error = c0.status();
  } else {
    chunk.input = std::move(input).value();
    chunk.h0 = std::move(h0).value();
    chunk.c0 = std::move(c0).value();
  }
  return out;
}

v1::StreamResponse ChunkResultToResponse(ChunkResult result, uint64_t request_id,
                                         TensorEncoding encoding, int64_t max_message_bytes) {
  v1::StreamResponse response;
  response.set_request_id(request_id);
  // A refused request's id is echoed only if it could be an id at all: a megabyte of id
  // would otherwise make the answer too large to send (request_id still pairs it).
  if (result.status.ok() || result.session_id.size() <= kMaxClientIdBytes) {
    response.set_session_id(std::move(result.session_id));
  }
  if (!result.status.ok()) {
    response.set_error_code(ToStreamErrorCode(result.status));
    response.set_error_message(WireMessage(result.status));
  }
  if (result.output.has_value()) {
    EncodeTensor(std::move(*result.output), encoding, response.mutable_output());
  } else if (result.replayed_output != nullptr) {
    // A duplicate's replay: the session's shared copy, copied here only into the message.
    const TensorBytes& replay = *result.replayed_output;
    EncodeTensor(replay.shape, replay.data(), encoding, response.mutable_output());
  }
  if (result.h_n.has_value()) {
    EncodeTensor(std::move(*result.h_n), encoding, response.mutable_h_n());
  }
  if (result.c_n.has_value()) {
    EncodeTensor(std::move(*result.c_n), encoding, response.mutable_c_n());
  }
  response.set_steps_seen(result.steps_seen);
  response.set_model_version(result.model_version);
  if (result.chunk_index.has_value()) response.set_chunk_index(*result.chunk_index);
  response.set_duplicate(result.duplicate);
  response.set_ended(result.ended);
  const size_t size = response.ByteSizeLong();
  if (static_cast<int64_t>(size) > max_message_bytes) {
    // Sizes are checked before work, so this is a last line of defence: the stream goes on.
    response.clear_output();
    response.clear_h_n();
    response.clear_c_n();
    // An applied chunk stays a success (an error code means "not applied"): the flag says what
    // is missing. A refused request keeps its own error.
    if (result.status.ok()) response.set_output_truncated(true);
  }
  return response;
}

absl::StatusOr<ForwardArgs> ForwardRequestToArgs(const v1::ForwardRequest& request) {
  ForwardArgs args;
  args.model = request.model();
  args.model_version = request.model_version();
  args.encoding = EncodingOf(request.input());
  absl::StatusOr<Tensor> input = DecodeTensor(request.input(), "input");
  if (!input.ok()) return input.status();
  args.input = std::move(input).value();
  absl::StatusOr<std::optional<Tensor>> h0 = DecodeState(request.h_0(), "h_0");
  if (!h0.ok()) return h0.status();
  args.h0 = std::move(h0).value();
  absl::StatusOr<std::optional<Tensor>> c0 = DecodeState(request.c_0(), "c_0");
  if (!c0.ok()) return c0.status();
  args.c0 = std::move(c0).value();
  return args;
}

void ForwardResultToResponse(const ForwardResult& result, TensorEncoding encoding,
                             v1::ForwardResponse* response) {
  EncodeTensor(result.output, encoding, response->mutable_output());
  EncodeTensor(result.h_n, encoding, response->mutable_h_n());
  if (result.c_n.has_value()) EncodeTensor(*result.c_n, encoding, response->mutable_c_n());
}

}  // namespace rnnserve
