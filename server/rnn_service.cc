#include "server/rnn_service.h"

#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/log.h"
#include "proto/tensor_codec.h"
#include "proto/status_codec.h"

namespace rnnserve {
namespace {


void FillModelInfo(const ServedModel& served, v1::ModelInfo* info) {
  const RnnConfig& c = served.model->config();
  info->set_name(served.name);
  v1::ModelConfig* config = info->mutable_config();
  config->set_input_size(c.input_size);
  config->set_hidden_size(c.hidden_size);
  config->set_num_layers(c.num_layers);
  config->set_nonlinearity(std::string(NonlinearityName(c.nonlinearity)));
  config->set_bias(c.bias);
  config->set_batch_first(c.batch_first);
  config->set_dropout(c.dropout);
  config->set_bidirectional(c.bidirectional);
  for (const ParameterSpec& spec : ParameterSpecs(c)) {
    v1::ParameterInfo* p = info->add_parameters();
    p->set_name(spec.name);
    for (int64_t d : spec.shape) p->add_shape(d);
  }
  for (int64_t d : {int64_t{-1}, int64_t{-1}, c.input_size}) info->add_input_shape(d);
  info->set_input_layout(c.batch_first ? "(N, T, C)" : "(T, N, C)");
  for (int64_t d : {c.num_state_rows(), int64_t{-1}, c.hidden_size}) info->add_state_shape(d);
  info->set_parameter_count(served.parameter_count);
  info->set_streaming_buffers_until_end(c.bidirectional);
  info->set_module(ConfigToString(c));
}

void FillSessionInfo(const SessionSnapshot& s, TensorEncoding encoding, v1::SessionInfo* info) {
  info->set_session_id(s.session_id);
  info->set_model(s.model);
  info->set_steps_seen(s.steps_seen);
  info->set_next_chunk_index(s.next_chunk_index);
  info->set_batch_size(s.batch_size);
  info->set_unbatched(s.unbatched);
  if (s.h_n.has_value()) EncodeTensor(*s.h_n, encoding, info->mutable_h_n());
  info->set_created_unix_ms(absl::ToUnixMillis(s.created));
  info->set_last_used_unix_ms(absl::ToUnixMillis(s.last_used));
  info->set_expires_in_ms(absl::ToInt64Milliseconds(s.expires_in));
  info->set_state_bytes(s.state_bytes);
  info->set_buffered_steps(s.buffered_steps);
}

// Decodes an optional tensor field: absent (empty) gives nullopt.
absl::StatusOr<std::optional<Tensor>> DecodeOptional(const v1::Tensor& proto,
                                                     absl::string_view what) {
  if (IsEmptyTensor(proto)) return std::optional<Tensor>();
  absl::StatusOr<Tensor> tensor = DecodeTensor(proto, what);
  if (!tensor.ok()) return tensor.status();
  return std::optional<Tensor>(std::move(tensor).value());
}

}  // namespace

// One Stream call. Reads requests one after another and hands each to the core without
// waiting for its result, so many sessions can be interleaved on one stream; results come back
// on worker threads and are written in completion order (each session's in request order).
class RnnServiceImpl::StreamReactor
    : public grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse> {
 public:
  StreamReactor(RnnServiceImpl* service) : service_(service) {
    ++service_->open_streams_;
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool finish;
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
        finish = ShouldFinishLocked();
      }
      if (finish) Finish(grpc::Status::OK);
      return;
    }
    const uint64_t request_id = request_.request_id();
    const TensorEncoding encoding = EncodingOf(request_.input());
    ChunkRequest chunk;
    chunk.session_id = request_.session_id();
    chunk.model = request_.model();
    chunk.start = request_.start();
    chunk.end = request_.end();
    chunk.omit_state = request_.omit_state();
    if (request_.has_chunk_index()) chunk.chunk_index = request_.chunk_index();
    // The input's raw bytes move out of request_ (read into again next) into the chunk.
    absl::StatusOr<std::optional<TensorBytes>> input = std::optional<TensorBytes>();
    if (!IsEmptyTensor(request_.input())) {
      input = TakeTensorBytes(request_.mutable_input(), "input");
    }
    auto h0 = DecodeOptional(request_.h_0(), "h_0");
    if (!input.ok()) {
      chunk.decode_error = input.status();
    } else if (!h0.ok()) {
      chunk.decode_error = h0.status();
    } else {
      chunk.input = std::move(input).value();
      chunk.h0 = std::move(h0).value();
    }
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
    }
    service_->core_->SubmitChunk(
        std::move(chunk), [this, request_id, encoding](ChunkResult result) {
          OnResult(request_id, encoding, std::move(result));
        });
    bool read_more;
    {
      absl::MutexLock lock(&mu_);
      read_more = in_flight_ < service_->options_.max_in_flight_per_stream;
      read_paused_ = !read_more;
    }
    if (read_more) StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      writes_.pop_front();
      --in_flight_;
      writing_ = false;
      if (!ok) {
        Break();
      } else if (!writes_.empty()) {
        writing_ = true;
        StartWrite(&writes_.front());
      }
      finish = AfterProgressLocked();
    }
    if (finish) Finish(grpc::Status::OK);
  }

  void OnCancel() override {
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      Break();
      finish = AfterProgressLocked();
    }
    if (finish) Finish(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    --service_->open_streams_;
    delete this;
  }

 private:
  void OnResult(uint64_t request_id, TensorEncoding encoding, ChunkResult result) {
    service_->metrics_->CountRequest("Stream", service_->ModelLabel(result.model),
                                     result.status.code());
    v1::StreamResponse response;
    response.set_request_id(request_id);
    response.set_session_id(std::move(result.session_id));
    if (!result.status.ok()) {
      response.set_error_code(static_cast<int32_t>(result.status.code()));
      response.set_error_message(std::string(result.status.message()));
    }
    // The result's buffers move into the response (raw encoding) rather than being copied.
    if (result.output.has_value()) {
      EncodeTensor(std::move(*result.output), encoding, response.mutable_output());
    }
    if (result.h_n.has_value()) {
      EncodeTensor(std::move(*result.h_n), encoding, response.mutable_h_n());
    }
    response.set_steps_seen(result.steps_seen);
    if (result.chunk_index.has_value()) response.set_chunk_index(*result.chunk_index);
    response.set_duplicate(result.duplicate);
    response.set_ended(result.ended);
    if (static_cast<int64_t>(response.ByteSizeLong()) > service_->options_.max_message_bytes) {
      const size_t size = response.ByteSizeLong();
      response.clear_output();
      response.clear_h_n();
      response.set_error_code(grpc::StatusCode::RESOURCE_EXHAUSTED);
      response.set_error_message(absl::StrCat(
          "the response to this chunk would be ", size, " bytes, more than the server's ",
          service_->options_.max_message_bytes,
          "-byte message limit; the chunk WAS applied (steps_seen is current): read h_n with "
          "GetSession, and send shorter chunks"));
    }
    bool finish;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) {
        --in_flight_;
      } else {
        writes_.push_back(std::move(response));
        if (!writing_) {
          writing_ = true;
          StartWrite(&writes_.front());
        }
      }
      finish = AfterProgressLocked();
    }
    // Nothing touches `this` after Finish(): OnDone() may delete it at once.
    if (finish) Finish(grpc::Status::OK);
  }

  // The client is gone or a write failed: drop queued responses; results still arriving are
  // discarded.
  void Break() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_) return;
    broken_ = true;
    // The write in progress (front) completes through OnWriteDone.
    const size_t keep = writing_ ? 1 : 0;
    while (writes_.size() > keep) {
      writes_.pop_back();
      --in_flight_;
    }
    // With no read outstanding, no OnReadDone will come to end the reading side.
    if (read_paused_) reads_done_ = true;
  }

  // Resumes reading below the in-flight limit; true when the call should be finished now.
  bool AfterProgressLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (read_paused_ && !broken_ && in_flight_ < service_->options_.max_in_flight_per_stream) {
      read_paused_ = false;
      StartRead(&request_);
    }
    return ShouldFinishLocked();
  }

  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || in_flight_ > 0 || writing_) return false;
    finished_ = true;
    return true;
  }

  RnnServiceImpl* const service_;
  v1::StreamRequest request_;  // written by gRPC between StartRead and OnReadDone

  absl::Mutex mu_;
  // State below is protected by mu_.
  std::deque<v1::StreamResponse> writes_ ABSL_GUARDED_BY(mu_);  // front is being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // submitted, response not yet written
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

RnnServiceImpl::RnnServiceImpl(ServingCore* core, Metrics* metrics,
                               const ServiceOptions& options)
    : core_(core), metrics_(metrics), options_(options) {}

std::string RnnServiceImpl::ModelLabel(const std::string& name) const {
  return core_->models().Find(name) != nullptr ? name : "";
}

void RnnServiceImpl::FinishUnary(grpc::ServerUnaryReactor* reactor, const char* rpc,
                                 const std::string& model, const absl::Status& status) {
  metrics_->CountRequest(rpc, ModelLabel(model), status.code());
  if (!status.ok()) LogInfo(rpc, " failed: ", status.ToString());
  reactor->Finish(ToGrpcStatus(status));
}

grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* RnnServiceImpl::Stream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(this);
}

grpc::ServerUnaryReactor* RnnServiceImpl::Forward(grpc::CallbackServerContext* context,
                                                  const v1::ForwardRequest* request,
                                                  v1::ForwardResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::string model = request->model();
  absl::StatusOr<Tensor> input = DecodeTensor(request->input(), "input");
  if (!input.ok()) {
    FinishUnary(reactor, "Forward", model, input.status());
    return reactor;
  }
  auto h0 = DecodeOptional(request->h_0(), "h_0");
  if (!h0.ok()) {
    FinishUnary(reactor, "Forward", model, h0.status());
    return reactor;
  }
  const TensorEncoding encoding = EncodingOf(request->input());
  core_->Forward(model, std::move(input).value(), std::move(h0).value(),
                 [this, reactor, response, model, encoding](absl::StatusOr<ForwardResult> result) {
                   if (result.ok()) {
                     EncodeTensor(result->output, encoding, response->mutable_output());
                     EncodeTensor(result->h_n, encoding, response->mutable_h_n());
                   }
                   FinishUnary(reactor, "Forward", model, result.status());
                 });
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                     const v1::ListModelsRequest* request,
                                                     v1::ListModelsResponse* response) {
  for (const ServedModel* model : core_->models().All()) {
    FillModelInfo(*model, response->add_models());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  FinishUnary(reactor, "ListModels", "", absl::OkStatus());
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::GetModel(grpc::CallbackServerContext* context,
                                                   const v1::GetModelRequest* request,
                                                   v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const ServedModel* model = core_->models().Find(request->model());
  absl::Status status;
  if (model == nullptr) {
    status = core_->models().UnknownModelError(request->model());
  } else {
    FillModelInfo(*model, response);
  }
  FinishUnary(reactor, "GetModel", model != nullptr ? model->name : "", status);
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::GetSession(grpc::CallbackServerContext* context,
                                                     const v1::GetSessionRequest* request,
                                                     v1::SessionInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<SessionSnapshot> session =
      core_->GetSession(request->session_id(), !request->omit_state());
  std::string model;
  if (session.ok()) {
    model = session->model;
    FillSessionInfo(*session, request->raw() ? TensorEncoding::kRaw : TensorEncoding::kValues,
                    response);
  }
  FinishUnary(reactor, "GetSession", model, session.status());
  return reactor;
}

grpc::ServerUnaryReactor* RnnServiceImpl::CloseSession(grpc::CallbackServerContext* context,
                                                       const v1::CloseSessionRequest* request,
                                                       v1::CloseSessionResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<SessionSnapshot> session = core_->CloseSession(request->session_id());
  std::string model;
  if (session.ok()) {
    model = session->model;
    FillSessionInfo(*session, TensorEncoding::kValues, response->mutable_session());
  }
  FinishUnary(reactor, "CloseSession", model, session.status());
  return reactor;
}

}  // namespace rnnserve
