// C++ client library for rnnserve's gRPC API (rnnserve.v1.RnnService).
//
// RnnServeClient wraps the generated stub with blocking calls that return absl::Status /
// StatusOr and base/tensor.h Tensors; StreamChannel drives one bidirectional Stream call
// synchronously (send a request, read its response), carrying one or many sessions, and
// resumes them by itself (ClientOptions::resume; docs/client.md).
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
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/tensor.h"
#include "client/channel.h"
#include "client/session_tracker.h"
#include "grpcpp/grpcpp.h"
#include "proto/status_codec.h"
#include "proto/tensor_codec.h"
#include "rnnserve/v1/rnn_service.grpc.pb.h"

namespace rnnserve {
namespace client {

// How hard a stream tries to resume before an error reaches the caller.
struct ResumePolicy {
  // Reconnects per request, the first included.
  int max_attempts = 10;
  // Backoff before the n-th reconnect: min(max_backoff, initial_backoff * 2^n), times a random
  // factor in [0.5, 1) (jitter, so clients do not reconnect in lockstep).
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  // Time one recovery may take in all.
  absl::Duration deadline = absl::Seconds(30);
};

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
  // Streams resume their sessions by themselves after a broken stream, a draining server or a
  // replaced replica (docs/client.md). Unary calls are never retried.
  bool resume = true;
  ResumePolicy resume_policy;
};

// torch's (output, h_n), and an LSTM's c_n.
struct ForwardResult {
  Tensor output;
  Tensor h_n;
  std::optional<Tensor> c_n;  // LSTM only
};

// A session's metadata (with its h_n and c_n fields cleared) and its decoded state, if the
// server sent one (absent while the batch size is unknown, or when the caller asked to omit
// it; c_n only for LSTM models).
struct SessionState {
  v1::SessionInfo info;
  std::optional<Tensor> h_n;
  std::optional<Tensor> c_n;
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
  // LSTM only: the cell state after the chunk, present exactly when h_n is.
  std::optional<Tensor> c_n;
  int64_t steps_seen = 0;
  // The model version the session is pinned to (0 from a server without versions).
  int64_t model_version = 0;
  std::optional<uint64_t> chunk_index;
  // The request's chunk_index was already applied (see `output`); h_n is the current state.
  bool duplicate = false;
  bool ended = false;
  // Applied, but output and h_n did not fit in a message (read the state with GetSession).
  bool output_truncated = false;
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
  // `version` 0: the latest READY one.
  absl::StatusOr<v1::ModelInfo> GetModel(const std::string& model, int64_t version = 0);
  // Every (model, version) with its state (needs a server started with --allow_model_control).
  absl::StatusOr<std::vector<v1::ModelVersionState>> RepositoryIndex();

  // torch's rnn(input, h_0), or lstm(input, (h_0, c_0)): `h0` and `c0` may be null (zeros);
  // c0 is refused by models without cell state. model_version 0: the latest READY version.
  absl::StatusOr<ForwardResult> Forward(const std::string& model, const Tensor& input,
                                        const Tensor* h0 = nullptr, const Tensor* c0 = nullptr,
                                        int64_t model_version = 0);

  // Session metadata and, unless `omit_state`, its current state (state export).
  absl::StatusOr<SessionState> GetSession(const std::string& session_id, bool omit_state = false);
  // Closes a session; returns it as it was when closed, with its final state.
  absl::StatusOr<SessionState> CloseSession(const std::string& session_id);

  // Opens a bidirectional Stream call, once the channel is connected: UNAVAILABLE when a
  // connection attempt fails, DEADLINE_EXCEEDED when none succeeds within the unary timeout.
  // `metadata` is sent with the call and again on every reconnect, e.g. {"x-session-id", id}
  // for a session-affinity router (deploy/). The stream uses this client, which must outlive
  // it.
  absl::StatusOr<std::unique_ptr<StreamChannel>> OpenStream(
      std::vector<std::pair<std::string, std::string>> metadata = {});

  // Whether `model` buffers streamed sessions until `end` (bidirectional); asked once.
  absl::StatusOr<bool> BuffersUntilEnd(const std::string& model);

  // For callers that need the raw API (the callback API, custom metadata).
  v1::RnnService::Stub* stub() { return stub_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }

 private:
  // Applies options_.timeout to `context`.
  void SetDeadline(grpc::ClientContext* context) const;

  // Waits until the channel is connected, within the unary timeout.
  absl::Status WaitConnected();

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RnnService::Stub> stub_;
  ClientOptions options_;
  absl::Mutex mu_;
  // State below is protected by mu_.
  absl::flat_hash_map<std::string, bool> buffers_until_end_ ABSL_GUARDED_BY(mu_);
};

// One open Stream call, used synchronously. Many sessions may be interleaved on it; each
// Call() sends one request and reads the next response, so requests are answered in order.
//
// With ClientOptions::resume (the default), the sessions this stream starts resume by
// themselves: a broken stream is reopened (backoff as resume_policy allows) and every request
// sent but not answered is resent in order; a session the server lost (NOT_FOUND) is started
// again from its last h_n with its next chunk_index (SessionTracker), so Read() returns the
// answers an uninterrupted stream would have. A response with `draining` switches to a new
// call once everything sent is answered. Requests of sessions this stream did not start are
// resent only when they carry a chunk_index (else they are answered UNAVAILABLE: not safe to
// resend).
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
  // Without resume, once the stream is broken: the status that broke it, or UNAVAILABLE until
  // Read() or Finish() has fetched that status.
  absl::StatusOr<uint64_t> Send(v1::StreamRequest request);
  // Reads the next response, whatever its error_code. Fails once the stream has ended (and,
  // with resume, could not be resumed), with the call's final status (or UNAVAILABLE when the
  // server ended it cleanly).
  absl::StatusOr<v1::StreamResponse> Read();

  // Send() then Read(), checking that the response answers this request; an in-stream error
  // (error_code != 0) becomes the returned status, and the stream stays usable.
  absl::StatusOr<ChunkResult> Call(v1::StreamRequest request);

  // Creates a session of `model` (the server picks the id when `session_id` is empty), with
  // optional initial state `h0` (and, for an LSTM, `c0`) and optional first chunk `input`.
  absl::StatusOr<ChunkResult> Start(const std::string& model, const std::string& session_id = "",
                                    const Tensor* h0 = nullptr, const Tensor* input = nullptr,
                                    bool end = false, const Tensor* c0 = nullptr);
  // Applies one chunk to a live session; `end` closes it afterwards.
  absl::StatusOr<ChunkResult> SendChunk(const std::string& session_id, const Tensor& input,
                                        bool end = false);
  // Closes a session without a chunk.
  absl::StatusOr<ChunkResult> End(const std::string& session_id);

  // Half-closes the stream, discards unread responses and returns the server's final status
  // (with resume: OK when the call merely broke and nothing sent is left unanswered).
  // Idempotent.
  absl::Status Finish();

  // Leave h_n out of the responses of the convenience calls above (Start/SendChunk/End).
  void set_omit_state(bool omit) { omit_state_ = omit; }
  // The model version Start() pins new sessions to; 0 (the default): the latest READY one.
  void set_model_version(int64_t version) { model_version_ = version; }
  // How many times this stream recovered: reopened its call after a failure, or restarted a
  // session (a planned switch after `draining` is not counted).
  int64_t resumes() const { return resumes_; }
  // Decodes a successful response (in-stream error -> status).
  static absl::StatusOr<ChunkResult> Decode(const v1::StreamResponse& response);

 private:
  friend class RnnServeClient;
  StreamChannel(RnnServeClient* client,
                std::vector<std::pair<std::string, std::string>> metadata);

  // A request sent and not yet answered.
  struct Pending {
    v1::StreamRequest request;
    bool tracked = false;      // resumable: see SessionTracker
    bool caller_omit = false;  // the caller's omit_state (tracked requests ask for h_n)
  };

  // Starts a new call (abandoning the current one).
  void OpenCall();
  // The final status once the call is broken (finishes it first).
  absl::Status BrokenStatus();
  // Half-closes the current call, drains it and returns its final status. Idempotent per call.
  absl::Status FinishCall();
  // Reopens the call and answers every pending request on it (into ready_), with backoff, as
  // resume_policy allows; `cause` is what broke the stream.
  absl::Status Recover(absl::Status cause);
  // One attempt of Recover() on the current call.
  absl::Status ReplayPending();
  // The output of a chunk applied earlier whose answer was lost (a duplicate of an older
  // chunk carries none), computed again with Forward from the state before it.
  absl::Status RecomputeOutput(const v1::StreamRequest& request, v1::StreamResponse* response);

  RnnServeClient* const client_;
  const std::vector<std::pair<std::string, std::string>> metadata_;
  const bool resume_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>> stream_;
  std::atomic<uint64_t> next_request_id_{1};
  bool omit_state_ = false;
  int64_t model_version_ = 0;
  bool writes_done_ = false;  // of the current call
  bool closed_ = false;       // the caller called Finish()
  bool draining_ = false;  // the server said it is draining: a new call when nothing is pending
  int64_t resumes_ = 0;
  std::optional<absl::Status> final_status_;  // of the current call
  std::optional<absl::Status> given_up_;      // resuming failed: every later call fails so
  std::deque<Pending> pending_;
  std::deque<v1::StreamResponse> ready_;  // answers obtained while recovering, not yet Read()
  SessionTracker tracker_;
};

}  // namespace client
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_RNNSERVE_CLIENT_H_
