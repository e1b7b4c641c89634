// C++ client library for rnnserve's gRPC API (rnnserve.v1.RnnService).
//
// RnnServeClient wraps the generated stub with blocking calls that return absl::Status /
// StatusOr and base/tensor.h Tensors; StreamChannel drives one bidirectional Stream call synchronously
// (send a request, read its response), carrying one or many sessions.
//
//   ClientOptions options;
//   options.tls_ca_file = "ca.crt";  // TLS; plus tls_cert_file/tls_key_file for mutual TLS
//   options.token = token;           // sent as "authorization: Bearer TOKEN" on every call
//   ASSIGN_OR_RETURN(std::unique_ptr<RnnServeClient> client,
//                    RnnServeClient::Connect("server.example:50051", options));
//   ASSIGN_OR_RETURN(ForwardResult r, client->Forward("demo", input));
//   ASSIGN_OR_RETURN(std::unique_ptr<StreamChannel> stream, client->OpenStream());
//   ASSIGN_OR_RETURN(ChunkResult first, stream->Start("demo", "", nullptr, &chunk0));
//   ASSIGN_OR_RETURN(ChunkResult next, stream->SendChunk(first.session_id, chunk1));
//
// For many concurrent sessions (thousands), use gRPC's callback API on stub() instead, as the
// `rnnserve-client bench` subcommand does: a StreamChannel blocks a thread per Read.
//
// The types live in namespace rnnserve::client, apart from the server core's types of the same
// names (rnnserve::ChunkResult, rnnserve::ForwardResult), so one binary may link both (as
// tests/client/client_torch_test.cc does). The library links the wire codec, gRPC and Abseil
// only, never the engine.
#ifndef RNNSERVE_CLIENT_RNNSERVE_CLIENT_H_
#define RNNSERVE_CLIENT_RNNSERVE_CLIENT_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/tensor.h"
#include "client/channel.h"
#include "grpcpp/grpcpp.h"
#include "proto/status_codec.h"
#include "proto/tensor_codec.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"

namespace rnnserve {
namespace client {

struct ClientOptions {
  // How request tensors are sent: kRaw (little-endian bytes, the fast path) or kValues
  // (repeated float, as JSON clients send). The server answers in the request's encoding.
  TensorEncoding encoding = TensorEncoding::kRaw;
  // Deadline for each unary call; absl::InfiniteDuration() for none. Streams have none.
  absl::Duration timeout = absl::Seconds(30);
  // Largest response accepted; the server's --max_message_bytes default (gRPC's own client
  // default, 4 MiB, would refuse a large Forward output or state the server may send).
  int64_t max_message_bytes = int64_t{64} << 20;
  // TLS: the PEM CA certificate(s) the server's certificate must chain to. Empty: plaintext.
  std::string tls_ca_file;
  // Mutual TLS: the PEM client certificate chain and its private key, both or neither; only
  // with tls_ca_file.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Sent as "authorization: Bearer TOKEN" on every call; empty: none. Never logged.
  std::string token;
};

// torch's (output, h_n).
struct ForwardResult {
  Tensor output;
  Tensor h_n;
};

// A session's metadata (with its h_n field cleared) and its decoded state, if the server sent
// one (absent while the batch size is unknown, or when the caller asked to omit it).
struct SessionState {
  v1::SessionInfo info;
  std::optional<Tensor> h_n;
};

// One successful StreamResponse, decoded.
struct ChunkResult {
  std::string session_id;
  // The chunk's output; empty (no shape) when the request had no input and for bidirectional
  // models before `end`. A duplicate (a chunk_index already applied) is not applied again: a
  // resend of the last applied chunk replays that chunk's output; an older one gets none.
  Tensor output;
  // The state after the chunk; absent with omit_state.
  std::optional<Tensor> h_n;
  int64_t steps_seen = 0;
  std::optional<uint64_t> chunk_index;
  // The request's chunk_index was already applied (see `output`); h_n is the current state.
  bool duplicate = false;
  bool ended = false;
};

class StreamChannel;

// Blocking client for one server. Thread-safe: any number of threads may call it at once (each
// call is an independent RPC on a shared channel). Owns nothing but a reference to the channel.
class RnnServeClient {
 public:
  // A client of `target`, e.g. "127.0.0.1:50051", over MakeChannel(target, options): TLS,
  // client certificate and token as `options` says. Connects lazily, on the first call; fails
  // now (naming the file) when the options are inconsistent or a PEM file is unusable.
  static absl::StatusOr<std::unique_ptr<RnnServeClient>> Connect(const std::string& target,
                                                                 ClientOptions options = {});
  // Uses an existing channel as it is (its credentials and arguments; options' TLS and token
  // fields are not applied to it, see MakeChannel).
  explicit RnnServeClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  RnnServeClient(const RnnServeClient&) = delete;
  RnnServeClient& operator=(const RnnServeClient&) = delete;

  absl::StatusOr<std::vector<v1::ModelInfo>> ListModels();
  absl::StatusOr<v1::ModelInfo> GetModel(const std::string& model);

  // torch's rnn(input, h_0): `h0` may be null (zeros).
  absl::StatusOr<ForwardResult> Forward(const std::string& model, const Tensor& input,
                                        const Tensor* h0 = nullptr);

  // Session metadata and, unless `omit_state`, its current state (state export).
  absl::StatusOr<SessionState> GetSession(const std::string& session_id, bool omit_state = false);
  // Closes a session; returns it as it was when closed, with its final state.
  absl::StatusOr<SessionState> CloseSession(const std::string& session_id);

  // Opens a bidirectional Stream call, once the channel is connected: UNAVAILABLE when a
  // connection attempt fails, DEADLINE_EXCEEDED when none succeeds within the unary timeout.
  absl::StatusOr<std::unique_ptr<StreamChannel>> OpenStream();

  // For callers that need the raw API (the callback API, custom metadata).
  v1::RnnService::Stub* stub() { return stub_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }

 private:
  // Applies options_.timeout to `context`.
  void SetDeadline(grpc::ClientContext* context) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RnnService::Stub> stub_;
  ClientOptions options_;
};

// One open Stream call, used synchronously. Many sessions may be interleaved on it; each
// Call() sends one request and reads the next response, so requests are answered in order.
//
// Thread-compatible: one thread at a time. Requests may be pipelined by several Send()s, then
// as many Read()s (responses come in request order); keep the number outstanding modest, as
// Send() blocks once gRPC's flow-control window is full of unread responses. Finishes the call
// (half-close and wait for the server's status) on destruction if Finish() was not called.
class StreamChannel {
 public:
  ~StreamChannel();

  StreamChannel(const StreamChannel&) = delete;
  StreamChannel& operator=(const StreamChannel&) = delete;

  // Sends `request`, giving it the next request_id when it has none; returns the request_id.
  // Once the stream is broken: the status that broke it, or UNAVAILABLE until Read() or
  // Finish() has fetched that status.
  absl::StatusOr<uint64_t> Send(v1::StreamRequest request);
  // Reads the next response, whatever its error_code. Fails once the stream has ended, with the
  // call's final status (or UNAVAILABLE when the server ended it cleanly).
  absl::StatusOr<v1::StreamResponse> Read();

  // Send() then Read(), checking that the response answers this request; an in-stream error
  // (error_code != 0) becomes the returned status, and the stream stays usable.
  absl::StatusOr<ChunkResult> Call(v1::StreamRequest request);

  // Creates a session of `model` (the server picks the id when `session_id` is empty), with
  // optional initial state `h0` and optional first chunk `input`.
  absl::StatusOr<ChunkResult> Start(const std::string& model, const std::string& session_id = "",
                                    const Tensor* h0 = nullptr, const Tensor* input = nullptr,
                                    bool end = false);
  // Applies one chunk to a live session; `end` closes it afterwards.
  absl::StatusOr<ChunkResult> SendChunk(const std::string& session_id, const Tensor& input,
                                        bool end = false);
  // Closes a session without a chunk.
  absl::StatusOr<ChunkResult> End(const std::string& session_id);

  // Half-closes the stream, discards unread responses and returns the server's final status.
  // Idempotent.
  absl::Status Finish();

  // Leave h_n out of the responses of the convenience calls above (Start/SendChunk/End).
  void set_omit_state(bool omit) { omit_state_ = omit; }
  // Decodes a successful response (in-stream error -> status).
  static absl::StatusOr<ChunkResult> Decode(const v1::StreamResponse& response);

 private:
  friend class RnnServeClient;
  StreamChannel(v1::RnnService::Stub* stub, TensorEncoding encoding);

  // The final status once the stream is broken (Finish()es it first).
  absl::Status BrokenStatus();

  TensorEncoding encoding_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>> stream_;
  std::atomic<uint64_t> next_request_id_{1};
  bool omit_state_ = false;
  bool writes_done_ = false;
  std::optional<absl::Status> final_status_;
};

}  // namespace client
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_RNNSERVE_CLIENT_H_
