#include "core/serving/serving_core.h"

#include <algorithm>
#include <cmath>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/log.h"

namespace rnnserve {

const char* SessionEndReasonName(SessionEndReason reason) {
  switch (reason) {
    case SessionEndReason::kClosed:
      return "closed";
    case SessionEndReason::kIdleTimeout:
      return "idle_timeout";
    case SessionEndReason::kEvicted:
      return "evicted";
    case SessionEndReason::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

// A streamed session. Fields marked "mu_" are read and written under ServingCore::mu_, except
// that batch, unbatched and next_chunk_index, which only the worker running the session's
// in-flight chunk writes, may be read by that worker without it. The compute fields belong to
// whichever worker runs the session's in-flight chunk (busy == true); the handoff between
// workers goes through the scheduler's lock.
struct ServingCore::Session {
  std::string id;
  const ServedModel* model = nullptr;
  absl::Time created;

  // mu_
  absl::Time last_used;
  int64_t steps_seen = 0;
  uint64_t next_chunk_index = 0;
  int64_t batch = 0;  // N; 0 until the first chunk or h_0 fixes it
  bool unbatched = false;
  int64_t state_bytes = 0;
  bool busy = false;   // a chunk of this session is queued or running in the scheduler
  bool answering = false;  // busy, but only answering its computed chunk: may be ended
  bool ended = false;  // removed from the table; queued chunks were answered
  // Chunks waiting behind the busy one; short (usually empty), and empty costs no allocation.
  absl::InlinedVector<ChunkTask*, 2> pending;
  int current = 0;  // which of `state` holds h_n; flipped when a computed chunk completes
  int64_t buffered_steps = 0;

  // Compute state. state[current] is stable while readers hold mu_; a worker writes only
  // state[1 - current] and flips `current` under mu_ when done. Until the session's next chunk
  // is handed to the scheduler, the worker that flipped it may also read state[current]
  // without mu_: no one else writes it, and the buffers live as long as the Session.
  std::vector<float> state[2];  // (L*D, N, H) each
  std::vector<float> buffered;  // bidirectional: time-major (T, N, C) input awaiting `end`
  std::optional<uint64_t> last_index;  // chunk_index of the last applied chunk, for replays
  std::optional<TensorBytes> last_output;
};

struct ServingCore::ChunkTask : BatchScheduler::Task {
  ChunkRequest request;
  ChunkCallback done;
  std::shared_ptr<Session> session;
  absl::Time submitted;
  absl::Time dispatched;
  ChunkResult result;
  // The session was ended (closed) when the batch began.
  bool session_ended = false;
  // Set by PrepareChunk for chunks that compute.
  bool compute = false;
  int64_t steps = 0;
  int64_t batch = 0;
  bool batched = true;
  const float* input_time_major = nullptr;
  std::vector<float> transposed_input;   // batch_first input packed time-major
  // batch_first output as the engine writes it, (T, N, D*H); other layouts are written straight
  // into result.output.
  std::vector<float> output_time_major;
  // Set by CompleteChunks: h_n goes into the result (copied there after mu_ is released).
  bool report_state = false;
};

struct ServingCore::ForwardTask : BatchScheduler::Task {
  const ServedModel* model = nullptr;
  Tensor input;
  std::optional<Tensor> h0;
  ForwardCallback done;
};

namespace {

// h_n's shape as the client sees it: (L*D, N, H), or (L*D, H) for unbatched sessions.
Shape StateShape(const RnnConfig& config, int64_t batch, bool unbatched) {
  return unbatched ? Shape{config.num_state_rows(), config.hidden_size}
                   : Shape{config.num_state_rows(), batch, config.hidden_size};
}

int64_t StateBytesFor(const RnnModel& model, int64_t batch) {
  // Two buffers: one readable while the other is written.
  return 2 * model.StateSize(batch) * static_cast<int64_t>(sizeof(float));
}

}  // namespace

ServingCore::ServingCore(std::unique_ptr<ModelRegistry> models, const ServingOptions& options,
                         ServingObserver* observer)
    : models_(std::move(models)),
      options_(options),
      observer_(observer != nullptr ? observer : &null_observer_),
      id_rng_(std::random_device{}()) {
  BatchScheduler::Options scheduler_options;
  scheduler_options.threads = options_.threads > 0
                                  ? options_.threads
                                  : std::max(1u, std::thread::hardware_concurrency());
  scheduler_options.max_batch = options_.max_batch;
  scheduler_options.max_queue_delay = options_.max_queue_delay;
  scheduler_ = std::make_unique<BatchScheduler>(
      scheduler_options, [this](absl::Span<BatchScheduler::Task* const> batch,
                                Workspace& workspace) { RunBatch(batch, workspace); });
  reaper_ = std::thread([this] { ReaperLoop(); });
}

ServingCore::~ServingCore() {
  stop_reaper_.Notify();
  reaper_.join();
  scheduler_->WaitIdle(absl::InfiniteFuture());
  EndAllSessions();
  scheduler_.reset();
}

void ServingCore::ReaperLoop() {
  const absl::Duration interval = std::clamp(options_.session_idle_timeout / 4,
                                             absl::Milliseconds(10), absl::Seconds(1));
  while (!stop_reaper_.WaitForNotificationWithTimeout(interval)) {
    ReapIdleSessions(absl::Now());
  }
}

absl::Status ServingCore::CheckFinite(absl::Span<const float> values, const char* what) const {
  if (options_.allow_non_finite) return absl::OkStatus();
  const std::optional<int64_t> bad = FirstNonFinite(values.data(), values.size());
  if (!bad.has_value()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      what, " holds a non-finite value (", values[*bad], ") at flat index ", *bad,
      "; send finite numbers, or start the server with --allow_non_finite"));
}

void ServingCore::Forward(const std::string& model_name, Tensor input, std::optional<Tensor> h0,
                          ForwardCallback done) {
  if (draining()) {
    done(absl::UnavailableError("server is draining for shutdown; retry on another replica"));
    return;
  }
  const ServedModel* model = models_->Find(model_name);
  if (model == nullptr) {
    done(models_->UnknownModelError(model_name));
    return;
  }
  auto task = new ForwardTask;
  task->key = model;
  task->model = model;
  task->input = std::move(input);
  task->h0 = std::move(h0);
  task->done = std::move(done);
  scheduler_->Enqueue(task);
}

void ServingCore::RunForward(ForwardTask* task, Workspace& workspace) {
  std::unique_ptr<ForwardTask> owned(task);
  absl::Status finite = CheckFinite(task->input.values, "input");
  if (finite.ok() && task->h0.has_value()) finite = CheckFinite(task->h0->values, "h_0");
  if (!finite.ok()) {
    task->done(finite);
    return;
  }
  absl::StatusOr<ForwardResult> result =
      task->model->model->Forward(task->input, task->h0 ? &*task->h0 : nullptr, &workspace);
  if (result.ok()) {
    observer_->ForwardDone(task->model->name, NumElements(result->output.shape) /
                                                  task->model->model->config().output_size());
  }
  task->done(std::move(result));
}

std::string ServingCore::NewSessionId() {
  return absl::StrFormat("%016x%016x", id_rng_(), id_rng_());
}

absl::Status ServingCore::UnknownSessionError(const std::string& id) const {
  auto it = tombstones_.find(id);
  if (it == tombstones_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "unknown session '", id, "': no live session has this id; start one with start=true"));
  }
  const std::string when = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", it->second.when,
                                            absl::UTCTimeZone());
  switch (it->second.reason) {
    case SessionEndReason::kIdleTimeout:
      return absl::NotFoundError(absl::StrCat(
          "session '", id, "' expired: it was idle for longer than the session idle timeout (",
          absl::FormatDuration(options_.session_idle_timeout), ") and was removed at ", when,
          "; start a new session, passing the last h_n you exported as h_0 to continue"));
    case SessionEndReason::kEvicted:
      return absl::NotFoundError(absl::StrCat(
          "session '", id, "' was evicted at ", when,
          " to free state memory for other sessions; start a new session, passing the last h_n "
          "you exported as h_0 to continue"));
    case SessionEndReason::kClosed:
      return absl::NotFoundError(absl::StrCat("session '", id, "' was closed at ", when,
                                              "; start a new session to continue"));
    case SessionEndReason::kShutdown:
      break;
  }
  return absl::NotFoundError(absl::StrCat("session '", id, "' ended at server shutdown"));
}

absl::Status ServingCore::ReserveStateBytes(int64_t bytes, const Session* requester) {
  const absl::Time now = absl::Now();
  while (state_bytes_ + bytes > options_.max_state_bytes) {
    std::shared_ptr<Session> victim;
    for (const auto& [id, session] : sessions_) {
      if (session.get() == requester || (session->busy && !session->answering) ||
          !session->pending.empty() ||
          session->state_bytes == 0 || now - session->last_used < options_.evict_idle_after) {
        continue;
      }
      if (victim == nullptr || session->last_used < victim->last_used) victim = session;
    }
    if (victim == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "session state memory is full: ", state_bytes_, " of ", options_.max_state_bytes,
          " bytes in use by ", sessions_.size(), " sessions and this session needs ", bytes,
          " more; close finished sessions or raise --max_state_bytes"));
    }
    LogInfo("session ", victim->id, " evicted (idle since ",
            absl::FormatTime("%H:%M:%S", victim->last_used, absl::UTCTimeZone()),
            ") to make room for state");
    EndSessionLocked(victim, SessionEndReason::kEvicted, nullptr);
  }
  state_bytes_ += bytes;
  observer_->StateBytes(state_bytes_);
  return absl::OkStatus();
}

void ServingCore::ReleaseStateBytes(int64_t bytes) {
  state_bytes_ -= bytes;
  observer_->StateBytes(state_bytes_);
}

void ServingCore::EndSessionLocked(const std::shared_ptr<Session>& session,
                                   SessionEndReason reason, std::vector<ChunkTask*>* orphans) {
  if (session->ended) return;
  session->ended = true;
  sessions_.erase(session->id);
  ReleaseStateBytes(session->state_bytes);
  session->state_bytes = 0;
  // An evicted or expired session has no queued chunks (only idle sessions are chosen).
  if (orphans != nullptr) {
    orphans->insert(orphans->end(), session->pending.begin(), session->pending.end());
  }
  session->pending.clear();
  if (reason != SessionEndReason::kShutdown) {
    tombstones_[session->id] = Tombstone{reason, absl::Now()};
    tombstone_order_.push_back(session->id);
    while (static_cast<int64_t>(tombstone_order_.size()) > options_.max_tombstones) {
      tombstones_.erase(tombstone_order_.front());
      tombstone_order_.pop_front();
    }
  }
  observer_->SessionEnded(session->model->name, reason);
  LogInfo("session ", session->id, " ended (", SessionEndReasonName(reason), ") model=",
          session->model->name, " steps_seen=", session->steps_seen);
}

void ServingCore::SubmitChunk(ChunkRequest request, ChunkCallback done) {
  auto task = new ChunkTask;
  task->submitted = absl::Now();
  task->done = std::move(done);
  task->result.session_id = request.session_id;
  task->result.model = request.model;
  task->result.chunk_index = request.chunk_index;
  task->request = std::move(request);
  const ChunkRequest& req = task->request;

  absl::Status refusal;
  bool enqueue = false;
  {
    absl::MutexLock lock(&mu_);
    std::shared_ptr<Session> session;
    if (req.start) {
      const ServedModel* model = req.model.empty() ? nullptr : models_->Find(req.model);
      if (draining_) {
        refusal = absl::UnavailableError(
            "server is draining for shutdown and starts no new sessions; start the session on "
            "another replica (import its state with h_0)");
      } else if (!req.decode_error.ok()) {
        refusal = req.decode_error;
      } else if (req.model.empty()) {
        refusal = absl::InvalidArgumentError("a request with start=true needs `model`");
      } else if (model == nullptr) {
        refusal = models_->UnknownModelError(req.model);
      } else if (!req.session_id.empty() && sessions_.count(req.session_id)) {
        refusal = absl::AlreadyExistsError(absl::StrCat(
            "session '", req.session_id,
            "' is already live; continue it without start=true, or choose another id"));
      } else if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
        refusal = absl::ResourceExhaustedError(absl::StrCat(
            "too many sessions: ", sessions_.size(), " are live, the limit is ",
            options_.max_sessions, " (--max_sessions); close finished sessions"));
      } else {
        session = std::make_shared<Session>();
        session->id = req.session_id.empty() ? NewSessionId() : req.session_id;
        session->model = model;
        session->created = session->last_used = task->submitted;
        const RnnConfig& config = model->model->config();
        if (req.h0.has_value()) {
          // State import: h_0 fixes the batch size.
          const Shape& shape = req.h0->shape;
          const bool unbatched = shape.size() == 2;
          const int64_t batch = shape.size() == 3 ? shape[1] : 1;
          Shape expected = {config.num_state_rows(), batch, config.hidden_size};
          if (unbatched) expected.erase(expected.begin() + 1);
          if ((shape.size() != 2 && shape.size() != 3) || shape != expected || batch < 1) {
            refusal = absl::InvalidArgumentError(absl::StrCat(
                "h_0 must have shape (", config.num_state_rows(), ", N, ", config.hidden_size,
                "), or (", config.num_state_rows(), ", ", config.hidden_size,
                ") for unbatched input, with N >= 1; got ", ShapeToString(shape)));
          } else if (absl::Status finite = CheckFinite(req.h0->values, "h_0"); !finite.ok()) {
            refusal = finite;
          } else if (absl::Status room = ReserveStateBytes(
                         StateBytesFor(*model->model, batch), session.get());
                     !room.ok()) {
            refusal = room;
          } else {
            session->batch = batch;
            session->unbatched = unbatched;
            session->state_bytes = StateBytesFor(*model->model, batch);
            session->state[0] = req.h0->values;
            session->state[1].resize(req.h0->values.size());
          }
        }
        if (refusal.ok()) {
          tombstones_.erase(session->id);
          sessions_.emplace(session->id, session);
          observer_->SessionStarted(model->name);
          LogInfo("session ", session->id, " started model=", model->name,
                  req.h0.has_value() ? " (state imported)" : "");
        }
      }
    } else {
      auto it = sessions_.find(req.session_id);
      if (req.session_id.empty()) {
        refusal = absl::InvalidArgumentError(
            "`session_id` is empty: set it, or set start=true to begin a new session");
      } else if (it == sessions_.end()) {
        refusal = UnknownSessionError(req.session_id);
      } else if (req.h0.has_value()) {
        refusal = absl::InvalidArgumentError(absl::StrCat(
            "h_0 is only accepted with start=true (state import); session '", req.session_id,
            "' already has its state"));
      } else if (!req.model.empty() && req.model != it->second->model->name) {
        refusal = absl::InvalidArgumentError(
            absl::StrCat("session '", req.session_id, "' runs model '",
                         it->second->model->name, "', not '", req.model, "'"));
      } else {
        session = it->second;
      }
    }
    if (refusal.ok()) {
      task->session = session;
      task->key = session->model;
      task->result.session_id = session->id;
      task->result.model = session->model->name;
      if (session->busy) {
        session->pending.push_back(task);
      } else {
        session->busy = true;
        enqueue = true;
      }
    }
  }
  if (!refusal.ok()) {
    LogInfo("session ", req.session_id.empty() ? "(new)" : req.session_id,
            " request refused: ", refusal.ToString());
    task->result.status = refusal;
    task->done(std::move(task->result));
    delete task;
    return;
  }
  if (enqueue) scheduler_->Enqueue(task);
}

void ServingCore::RunBatch(absl::Span<BatchScheduler::Task* const> batch,
                           Workspace& workspace) {
  std::vector<ChunkTask*> chunks;
  chunks.reserve(batch.size());
  const absl::Time now = absl::Now();
  for (BatchScheduler::Task* task : batch) {
    if (auto* chunk = dynamic_cast<ChunkTask*>(task)) {
      chunk->dispatched = now;
      chunks.push_back(chunk);
    } else {
      RunForward(static_cast<ForwardTask*>(task), workspace);
    }
  }
  if (!chunks.empty()) RunChunks(chunks, workspace);
}

bool ServingCore::PrepareChunk(ChunkTask* task) {
  Session& session = *task->session;
  const ChunkRequest& req = task->request;
  ChunkResult& result = task->result;
  const RnnModel& model = *session.model->model;
  const RnnConfig& config = model.config();
  auto fail = [&](absl::Status status) {
    result.status = std::move(status);
    return false;
  };
  if (!req.decode_error.ok()) return fail(req.decode_error);
  if (task->session_ended) {
    // Closed by CloseSession after this chunk left the session's queue.
    absl::MutexLock lock(&mu_);
    return fail(UnknownSessionError(session.id));
  }
  if (req.chunk_index.has_value()) {
    const uint64_t index = *req.chunk_index;
    if (index < session.next_chunk_index) {
      // A retry of a chunk already applied: acknowledge, never apply twice.
      result.duplicate = true;
      if (session.last_index == index && session.last_output.has_value()) {
        result.output = session.last_output;
      }
      return false;
    }
    if (index > session.next_chunk_index) {
      return fail(absl::FailedPreconditionError(absl::StrCat(
          "chunk_index ", index, " skips ahead: session '", session.id, "' expects chunk_index ",
          session.next_chunk_index, " next; resend the missing chunks first")));
    }
  }
  const bool has_input = req.input.has_value();
  if (!has_input) {
    // Start-only or end-only; a bidirectional session computes its buffer at the end.
    if (config.bidirectional && req.end && session.buffered_steps > 0) {
      task->compute = true;
      task->steps = session.buffered_steps;
      task->batch = session.batch;
      task->batched = !session.unbatched;
      task->input_time_major = session.buffered.data();
    }
    return task->compute;
  }
  const TensorBytes& input = *req.input;
  absl::StatusOr<InputDims> dims = model.CheckShapes(input.shape, nullptr);
  if (!dims.ok()) return fail(dims.status());
  if (!input.consistent()) {
    return fail(absl::InvalidArgumentError("input value count does not match its shape"));
  }
  if (absl::Status finite = CheckFinite(input.values(), "input"); !finite.ok()) {
    return fail(finite);
  }
  if (dims->batch < 1) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "a session needs a batch of at least one sequence; input has shape ",
        ShapeToString(input.shape))));
  }
  // batch and unbatched change only here, by the worker owning the session's chunk (or at
  // start, before any chunk): reading them needs no lock, setting them does.
  if (session.batch == 0) {
    // The first chunk fixes the batch size and allocates the state.
    absl::MutexLock lock(&mu_);
    const int64_t bytes = StateBytesFor(model, dims->batch);
    if (absl::Status room = ReserveStateBytes(bytes, &session); !room.ok()) {
      return fail(room);
    }
    session.batch = dims->batch;
    session.unbatched = !dims->batched;
    session.state_bytes = bytes;
    session.state[0].assign(model.StateSize(dims->batch), 0.0f);
    session.state[1].assign(model.StateSize(dims->batch), 0.0f);
  } else if (session.unbatched == dims->batched) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "session '", session.id, "' takes ", session.unbatched ? "unbatched 2-D" : "batched 3-D",
        " input, as its first chunk or h_0 did; this chunk has shape ",
        ShapeToString(input.shape))));
  } else if (session.batch != dims->batch) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "batch size must stay the same within a session: session '", session.id,
        "' has N=", session.batch, ", this chunk has N=", dims->batch, " (shape ",
        ShapeToString(input.shape), ")")));
  }
  task->steps = dims->steps;
  task->batch = dims->batch;
  task->batched = dims->batched;
  task->input_time_major = input.data();
  if (dims->batched && config.batch_first) {
    task->transposed_input.resize(input.num_elements());
    SwapLeadingDims(input.data(), dims->batch, dims->steps, config.input_size,
                    task->transposed_input.data());
    task->input_time_major = task->transposed_input.data();
  }
  if (config.bidirectional) {
    // The reverse direction needs the whole sequence: buffer until `end`.
    session.buffered.insert(session.buffered.end(), task->input_time_major,
                            task->input_time_major + input.num_elements());
    session.buffered_steps += dims->steps;
    if (!req.end) return false;
    task->steps = session.buffered_steps;
    task->input_time_major = session.buffered.data();
  }
  task->compute = true;
  return true;
}

void ServingCore::RunChunks(std::vector<ChunkTask*>& tasks, Workspace& workspace) {
  {
    // One lock for the whole batch instead of one per chunk.
    absl::MutexLock lock(&mu_);
    for (ChunkTask* task : tasks) task->session_ended = task->session->ended;
  }
  std::vector<StreamChunk> batch;
  batch.reserve(tasks.size());
  const RnnModel* model = nullptr;
  for (ChunkTask* task : tasks) {
    if (!PrepareChunk(task)) continue;
    Session& session = *task->session;
    model = session.model->model.get();
    const RnnConfig& config = model->config();
    const float* state_in = session.state[session.current].data();
    float* state_out = session.state[1 - session.current].data();
    // The engine writes the output where the response takes it from, except batch_first
    // output, which is transposed there afterwards.
    const int64_t features = config.output_size();
    if (!task->batched) {
      task->result.output = TensorBytes::Zeros({task->steps, features});
    } else if (config.batch_first) {
      task->result.output = TensorBytes::Zeros({task->batch, task->steps, features});
    } else {
      task->result.output = TensorBytes::Zeros({task->steps, task->batch, features});
    }
    float* output = task->result.output->data();
    if (task->batched && config.batch_first) {
      task->output_time_major.resize(model->OutputSize(task->steps, task->batch));
      output = task->output_time_major.data();
    }
    if (config.bidirectional) {
      model->ForwardTimeMajor(task->input_time_major, task->steps, task->batch, state_in, output,
                              state_out, workspace);
      observer_->BatchRun(session.model->name, 1);
    } else {
      batch.push_back(StreamChunk{task->input_time_major, task->steps, task->batch, state_in,
                                  state_out, output});
    }
  }
  if (!batch.empty()) {
    // Shapes were checked per chunk above, so the batched step cannot fail.
    absl::Status status = model->StepBatch(batch, &workspace);
    if (!status.ok()) LogError("StepBatch failed: ", status.ToString());
    observer_->BatchRun(tasks.front()->session->model->name, static_cast<int64_t>(batch.size()));
  }
  // batch_first outputs into the client's layout.
  for (ChunkTask* task : tasks) {
    if (!task->compute || task->output_time_major.empty()) continue;
    SwapLeadingDims(task->output_time_major.data(), task->steps, task->batch,
                    task->session->model->model->config().output_size(),
                    task->result.output->data());
  }
  CompleteChunks(tasks);
}

void ServingCore::CompleteChunks(std::vector<ChunkTask*>& tasks) {
  std::vector<ChunkTask*> orphans;
  // Sessions whose next chunk may run once this batch is answered.
  std::vector<std::shared_ptr<Session>> handoff;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    for (ChunkTask* task : tasks) {
      Session& session = *task->session;
      const ChunkRequest& req = task->request;
      ChunkResult& result = task->result;
      const bool applied = result.status.ok() && !result.duplicate;
      if (applied && req.input.has_value()) {
        const RnnConfig& config = session.model->model->config();
        session.steps_seen = config.bidirectional ? session.buffered_steps
                                                  : session.steps_seen + task->steps;
      }
      if (task->compute) {
        session.current = 1 - session.current;
        if (session.model->model->config().bidirectional) {
          session.buffered.clear();
          session.buffered.shrink_to_fit();
          session.buffered_steps = 0;
        }
      }
      if (applied && (req.chunk_index.has_value() || req.input.has_value())) {
        ++session.next_chunk_index;
      }
      session.last_used = now;
      result.steps_seen = session.steps_seen;
      task->report_state = session.batch > 0 && !req.omit_state;
      if (session.ended) {
        result.ended = true;
      } else if (!result.status.ok() && req.start) {
        // A start whose first chunk failed leaves no session behind: failed requests have no
        // effect, so the client can fix the chunk and start again with the same id.
        result.ended = true;
        EndSessionLocked(task->session, SessionEndReason::kClosed, &orphans);
      } else if (applied && req.end) {
        result.ended = true;
        EndSessionLocked(task->session, SessionEndReason::kClosed, &orphans);
      } else {
        session.answering = true;
        handoff.push_back(task->session);
      }
    }
  }
  // This worker still owns each session's compute fields and state (see Session): finish the
  // results without mu_.
  for (ChunkTask* task : tasks) {
    Session& session = *task->session;
    ChunkResult& result = task->result;
    if (result.status.ok() && !result.duplicate) {
      if (task->request.chunk_index.has_value() && result.output.has_value()) {
        // Kept for a replay of this chunk; reuses the previous copy's buffer.
        session.last_index = task->request.chunk_index;
        if (!session.last_output.has_value()) session.last_output.emplace();
        session.last_output->shape = result.output->shape;
        session.last_output->bytes.assign(result.output->bytes);
      } else {
        session.last_index.reset();
        session.last_output.reset();
      }
    }
    if (task->report_state) {
      result.h_n = TensorBytes::Copy(
          StateShape(session.model->model->config(), session.batch, session.unbatched),
          session.state[session.current].data());
    }
  }
  // Answer first, and only then let the session's next chunk run: otherwise a fast next chunk
  // on another worker could be answered before this one.
  for (ChunkTask* task : tasks) Respond(task);
  for (ChunkTask* task : orphans) {
    task->result.status = absl::NotFoundError(absl::StrCat(
        "session '", task->session->id, "' was closed before this request was applied"));
    Respond(task);
  }
  if (handoff.empty()) return;
  std::vector<BatchScheduler::Task*> next;
  {
    absl::MutexLock lock(&mu_);
    for (const std::shared_ptr<Session>& session : handoff) {
      session->answering = false;
      if (!session->pending.empty()) {
        next.push_back(session->pending.front());
        session->pending.erase(session->pending.begin());
      } else {
        session->busy = false;
      }
    }
  }
  scheduler_->EnqueueAll(next);
}

void ServingCore::Respond(ChunkTask* task) {
  std::unique_ptr<ChunkTask> owned(task);
  const absl::Time now = absl::Now();
  if (task->result.status.ok()) {
    observer_->ChunkDone(task->session->model->name, task->dispatched - task->submitted,
                         now - task->submitted,
                         task->compute ? task->steps * task->batch : 0);
  } else {
    LogInfo("session ", task->session->id, " request failed: ", task->result.status.ToString());
  }
  task->done(std::move(task->result));
}

SessionSnapshot ServingCore::SnapshotLocked(const Session& session, bool with_state) const {
  SessionSnapshot s;
  s.session_id = session.id;
  s.model = session.model->name;
  s.steps_seen = session.steps_seen;
  s.next_chunk_index = session.next_chunk_index;
  s.batch_size = session.batch;
  s.unbatched = session.unbatched;
  if (with_state && session.batch > 0) {
    s.h_n = Tensor(StateShape(session.model->model->config(), session.batch, session.unbatched),
                   session.state[session.current]);
  }
  s.created = session.created;
  s.last_used = session.last_used;
  s.expires_in = std::max(absl::ZeroDuration(),
                          session.last_used + options_.session_idle_timeout - absl::Now());
  s.state_bytes = session.state_bytes;
  s.buffered_steps = session.buffered_steps;
  return s;
}

absl::StatusOr<SessionSnapshot> ServingCore::GetSession(const std::string& session_id,
                                                        bool with_state) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return UnknownSessionError(session_id);
  return SnapshotLocked(*it->second, with_state);
}

absl::StatusOr<SessionSnapshot> ServingCore::CloseSession(const std::string& session_id) {
  std::vector<ChunkTask*> orphans;
  SessionSnapshot snapshot;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return UnknownSessionError(session_id);
    std::shared_ptr<Session> session = it->second;
    snapshot = SnapshotLocked(*session, /*with_state=*/true);
    EndSessionLocked(session, SessionEndReason::kClosed, &orphans);
  }
  for (ChunkTask* task : orphans) {
    task->result.status = absl::NotFoundError(absl::StrCat(
        "session '", session_id, "' was closed before this request was applied"));
    Respond(task);
  }
  return snapshot;
}

void ServingCore::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool ServingCore::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool ServingCore::WaitIdle(absl::Time deadline) { return scheduler_->WaitIdle(deadline); }

void ServingCore::EndAllSessions() {
  std::vector<ChunkTask*> orphans;
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::shared_ptr<Session>> all;
    for (const auto& [id, session] : sessions_) all.push_back(session);
    for (const auto& session : all) {
      EndSessionLocked(session, SessionEndReason::kShutdown, &orphans);
    }
  }
  for (ChunkTask* task : orphans) {
    task->result.status = absl::UnavailableError("server shut down before this request was applied");
    Respond(task);
  }
}

int64_t ServingCore::ReapIdleSessions(absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Session>> idle;
  for (const auto& [id, session] : sessions_) {
    if ((!session->busy || session->answering) && session->pending.empty() &&
        now - session->last_used >= options_.session_idle_timeout) {
      idle.push_back(session);
    }
  }
  for (const auto& session : idle) {
    EndSessionLocked(session, SessionEndReason::kIdleTimeout, nullptr);
  }
  return static_cast<int64_t>(idle.size());
}

int64_t ServingCore::session_count() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(sessions_.size());
}

int64_t ServingCore::state_bytes() const {
  absl::MutexLock lock(&mu_);
  return state_bytes_;
}

}  // namespace rnnserve
