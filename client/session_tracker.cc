#include "client/session_tracker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/random_id.h"

namespace rnnserve {
namespace client {

namespace {
constexpr int kNotFound = 5;  // grpc::StatusCode::NOT_FOUND
}  // namespace

bool SessionTracker::Prepare(v1::StreamRequest* request, bool bidirectional) {
  const bool caller_omit = request->omit_state();
  request->set_omit_state(false);
  if (request->start()) {
    if (request->session_id().empty() && request->idempotency_key().empty()) {
      // The key only has to tell this start from the principal's other live ones.
      absl::StatusOr<std::string> key = NewRandomId();
      request->set_idempotency_key(
          key.ok() ? *key : absl::StrCat("t", absl::GetCurrentTimeNanos()));
    }
    if (request->has_input() && !request->has_chunk_index()) request->set_chunk_index(0);
    if (bidirectional) bidirectional_starts_[request->request_id()] = true;
  } else if (!request->has_chunk_index() && next_to_send_.contains(request->session_id())) {
    request->set_chunk_index(next_to_send_[request->session_id()]);
  }
  if (!request->session_id().empty()) {
    if (request->has_chunk_index()) {
      next_to_send_[request->session_id()] =
          request->chunk_index() + (request->has_input() || !request->start() ? 1 : 0);
    } else if (request->start()) {
      next_to_send_[request->session_id()] = 0;  // a start without a chunk numbers from 0
    }
  }
  return caller_omit;
}

bool SessionTracker::Tracks(const v1::StreamRequest& request) const {
  // A session whose start is sent but not yet answered counts: chunks may be pipelined on it.
  return request.start() || next_to_send_.contains(request.session_id());
}

bool SessionTracker::ShouldRestart(const v1::StreamRequest& request,
                                   const v1::StreamResponse& response) const {
  return response.error_code() == kNotFound && !request.start() &&
         sessions_.contains(request.session_id());
}

std::vector<v1::StreamRequest> SessionTracker::RestartRequests(
    const v1::StreamRequest& request) {
  Session& s = sessions_.at(request.session_id());
  if (s.bidirectional) {
    s.steps_offset = 0;
    std::vector<v1::StreamRequest> replay = s.log;
    replay.push_back(request);
    return replay;
  }
  v1::StreamRequest restart = request;
  restart.set_start(true);
  restart.set_model(s.model);
  restart.set_model_version(s.model_version);
  if (s.h_n.has_value()) *restart.mutable_h_0() = *s.h_n;
  if (s.c_n.has_value()) *restart.mutable_c_0() = *s.c_n;
  restart.set_chunk_index(s.next_index);
  s.steps_offset = s.steps_seen;
  return {std::move(restart)};
}

void SessionTracker::Answered(const v1::StreamRequest& request, bool caller_omit,
                              v1::StreamResponse* response) {
  const auto bidirectional_start = bidirectional_starts_.extract(request.request_id());
  if (response->error_code() != 0) {
    auto refused = sessions_.find(request.session_id());
    if (refused != sessions_.end()) {
      // Not applied: the next chunk takes its index.
      next_to_send_[request.session_id()] = refused->second.next_index;
    } else if (request.start()) {
      next_to_send_.erase(request.session_id());  // a refused start leaves no session behind
    }
    return;
  }
  const std::string id =
      response->session_id().empty() ? request.session_id() : response->session_id();
  auto it = sessions_.find(id);
  if (request.start() && it == sessions_.end()) {
    Session s;
    s.model = request.model();
    s.model_version = request.model_version();
    s.bidirectional = !bidirectional_start.empty();
    if (request.has_h_0()) s.h_n = request.h_0();
    if (request.has_c_0()) s.c_n = request.c_0();
    it = sessions_.emplace(id, std::move(s)).first;
    if (!request.has_chunk_index()) next_to_send_[id] = 0;
  }
  if (it != sessions_.end()) {
    Session& s = it->second;
    // Pinned: a resume on another replica keeps this version, whatever is latest there.
    if (response->model_version() != 0) s.model_version = response->model_version();
    if (response->has_chunk_index()) {
      s.next_index = std::max(s.next_index, response->chunk_index() + 1);
      next_to_send_[id] = std::max(next_to_send_[id], s.next_index);
    }
    if (response->has_h_n()) {
      // An LSTM's h and c move together (c_n is present exactly when h_n is).
      s.h_n = response->h_n();
      s.c_n.reset();
      if (response->has_c_n()) s.c_n = response->c_n();
    }
    if (s.bidirectional && !response->duplicate()) {
      v1::StreamRequest logged = request;
      logged.set_request_id(0);
      logged.set_session_id(id);  // a server-assigned id is kept on a replay
      s.log.push_back(std::move(logged));
    }
    response->set_steps_seen(response->steps_seen() + s.steps_offset);
    s.steps_seen = response->steps_seen();
    if (response->ended()) {
      sessions_.erase(it);
      next_to_send_.erase(id);
    }
  }
  if (caller_omit) {
    response->clear_h_n();
    response->clear_c_n();
  }
}

const v1::Tensor* SessionTracker::ResumeState(const std::string& session_id) const {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end() || it->second.bidirectional || !it->second.h_n.has_value()) {
    return nullptr;
  }
  return &*it->second.h_n;
}

const v1::Tensor* SessionTracker::ResumeCellState(const std::string& session_id) const {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end() || it->second.bidirectional || !it->second.c_n.has_value()) {
    return nullptr;
  }
  return &*it->second.c_n;
}

void SessionTracker::SetResumeState(const std::string& session_id, const v1::Tensor& h_n,
                                    const v1::Tensor* c_n) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  it->second.h_n = h_n;
  if (c_n != nullptr) {
    it->second.c_n = *c_n;
  } else {
    it->second.c_n.reset();
  }
}

std::string SessionTracker::Model(const std::string& session_id) const {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? std::string() : it->second.model;
}

bool SessionTracker::Bidirectional(const std::string& session_id) const {
  auto it = sessions_.find(session_id);
  return it != sessions_.end() && it->second.bidirectional;
}

}  // namespace client
}  // namespace rnnserve
