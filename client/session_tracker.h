// SessionTracker: what a StreamChannel knows of each session it started, so it can resume them
// by itself after a broken stream, a draining server or a replaced replica (docs/client.md).
//
// A tracked request always carries a chunk_index (the tracker numbers chunks the caller left
// unnumbered) and asks for h_n (stripped again when the caller asked omit_state), so resending
// it is safe: a chunk already applied is acknowledged as a duplicate, never applied twice. A
// session the server no longer knows (NOT_FOUND: a replaced replica) is started again with
// h_0 = its last h_n (and c_0 = its last c_n for an LSTM) and chunk_index = its next index,
// carrying the chunk being resent; a bidirectional session (it buffers until `end`) is
// replayed from its start instead, so its requests are kept until `end`. steps_seen is
// reported across restarts as if uninterrupted.
//
// Thread-compatible: owned by one StreamChannel. Holds copies of the state tensors and, for
// bidirectional sessions, of their requests.
#ifndef RNNSERVE_CLIENT_SESSION_TRACKER_H_
#define RNNSERVE_CLIENT_SESSION_TRACKER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "rnnserve/v1/rnn_service.pb.h"

namespace rnnserve {
namespace client {

class SessionTracker {
 public:
  // Makes a start, or a request of a tracked session, resumable in place: numbers it, asks for
  // h_n, gives a server-assigned start an idempotency key. `bidirectional`: whether a start's
  // model buffers until `end`. Returns the caller's omit_state.
  bool Prepare(v1::StreamRequest* request, bool bidirectional);

  // Whether `request` is tracked: a start, or a request of a session this tracker holds.
  bool Tracks(const v1::StreamRequest& request) const;

  // True when the server answered NOT_FOUND for a session this tracker holds.
  bool ShouldRestart(const v1::StreamRequest& request, const v1::StreamResponse& response) const;

  // The requests that start `request`'s session again where it was, the last answering
  // `request`: one start carrying its chunk, or for a bidirectional session its whole log, then
  // `request`.
  std::vector<v1::StreamRequest> RestartRequests(const v1::StreamRequest& request);

  // Updates the tracking from the response to `request` and makes it what the caller sees.
  void Answered(const v1::StreamRequest& request, bool caller_omit,
                v1::StreamResponse* response);

  // A unidirectional session's last state (null: zeros, or not tracked / bidirectional), and
  // its replacement, for a chunk's output computed again from it (see StreamChannel).
  const v1::Tensor* ResumeState(const std::string& session_id) const;
  // The same for an LSTM's cell state (null: zeros, or a model without cell state).
  const v1::Tensor* ResumeCellState(const std::string& session_id) const;
  void SetResumeState(const std::string& session_id, const v1::Tensor& h_n,
                      const v1::Tensor* c_n = nullptr);
  // The model of a tracked session (empty when not tracked).
  std::string Model(const std::string& session_id) const;
  bool Bidirectional(const std::string& session_id) const;

 private:
  struct Session {
    std::string model;
    // The version the server pinned it to (from its answers); until then, as the start asked.
    int64_t model_version = 0;
    bool bidirectional = false;
    std::optional<v1::Tensor> h_n;  // the state to resume from; none: zeros
    std::optional<v1::Tensor> c_n;  // an LSTM's cell state to resume from; none: zeros
    uint64_t next_index = 0;        // after the last chunk_index answered
    int64_t steps_seen = 0;         // as the caller sees it, across restarts
    int64_t steps_offset = 0;       // steps applied before the server's copy was (re)started
    std::vector<v1::StreamRequest> log;  // bidirectional: the requests applied since start
  };

  absl::flat_hash_map<std::string, Session> sessions_;
  // The chunk_index the next request of a session is numbered with (sent, not answered).
  absl::flat_hash_map<std::string, uint64_t> next_to_send_;
  // Unanswered starts of bidirectional models, by request_id.
  absl::flat_hash_map<uint64_t, bool> bidirectional_starts_;
};

}  // namespace client
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_SESSION_TRACKER_H_
