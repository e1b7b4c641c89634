#include "core/serving/serving_core.h"

#include <algorithm>
#include <vector>

#include "base/log.h"
#include "base/text.h"
#include "core/serving/chunk_batch.h"
#include "core/serving/client_text.h"
#include "core/serving/session.h"

namespace rnnserve {

struct ServingCore::ForwardTask : BatchScheduler::Task {
  const ServedModel* model = nullptr;
  Tensor input;
  std::optional<Tensor> h0;
  ForwardCallback done;
};

ServingCore::ServingCore(std::unique_ptr<ModelRegistry> models, const ServingOptions& options,
                         ServingObserver* observer)
    : models_(std::move(models)),
      options_(options),
      observer_(observer != nullptr ? observer : &null_observer_),
      table_(*models_, options_, *observer_) {
  BatchScheduler::Options scheduler_options;
  scheduler_options.threads = options_.threads > 0
                                  ? options_.threads
                                  : std::max(1u, std::thread::hardware_concurrency());
  scheduler_options.max_batch = options_.max_batch;
  scheduler_options.max_queue_delay = options_.max_queue_delay;
  scheduler_options.max_workspace_bytes = options_.max_workspace_bytes;
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
    ReapIdleSessions(options_.clock());
  }
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
  // Sizes before work: an output that could not be sent is never computed. Shape errors are
  // left to the model's own check, which names them.
  const RnnModel& rnn = *model->model;
  if (absl::StatusOr<InputDims> dims =
          rnn.CheckShapes(input.shape, h0.has_value() ? &h0->shape : nullptr);
      dims.ok()) {
    absl::Status fits = CheckResponseFits(rnn.OutputSize(dims->steps, dims->batch),
                                          rnn.StateSize(dims->batch), options_,
                                          "send a shorter sequence or a smaller batch");
    if (!fits.ok()) {
      done(fits);
      return;
    }
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
  absl::Status finite = CheckFinite(task->input.values, "input", options_);
  if (finite.ok() && task->h0.has_value()) finite = CheckFinite(task->h0->values, "h_0", options_);
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

void ServingCore::SubmitChunk(ChunkRequest request, ChunkCallback done) {
  auto task = std::make_unique<ChunkTask>();
  task->submitted = absl::Now();
  task->done = std::move(done);
  // Echoed only if it could name a session: a refused request never sends a huge or forged id
  // back (a response over the message limit would be misreported as applied).
  if (ValidateClientId(request.session_id, "session_id").ok()) {
    task->result.session_id = request.session_id;
  }
  task->result.model = request.model;
  task->result.chunk_index = request.chunk_index;
  task->request = std::move(request);
  SessionEvents events;
  absl::StatusOr<bool> admitted = table_.Admit(task.get(), events);
  table_.Publish(events);
  if (!admitted.ok()) {
    if (LogEnabled(LogLevel::kDebug)) {
      const std::string& id = task->request.session_id;
      LogDebug("session ", id.empty() ? "(new)" : Quoted(id), " of ",
               DescribePrincipal(task->request.principal),
               " request refused: ", admitted.status().ToString());
    }
    task->result.status = admitted.status();
    task->done(std::move(task->result));
    return;
  }
  ChunkTask* admitted_task = task.release();  // owned by the scheduler or the session now
  if (*admitted) scheduler_->Enqueue(admitted_task);
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
  if (chunks.empty()) return;
  ChunkBatch(table_, *scheduler_, options_, *observer_).Run(chunks, workspace);
}

absl::StatusOr<SessionSnapshot> ServingCore::GetSession(const std::string& session_id,
                                                        bool with_state,
                                                        const std::string& principal) {
  return table_.GetSession(session_id, with_state, principal);
}

absl::StatusOr<SessionSnapshot> ServingCore::CloseSession(const std::string& session_id,
                                                          const std::string& principal) {
  SessionEvents events;
  absl::StatusOr<SessionSnapshot> snapshot = table_.CloseSession(session_id, events, principal);
  table_.Publish(events);
  return snapshot;
}

void ServingCore::BeginDrain() { table_.BeginDrain(); }

bool ServingCore::draining() const { return table_.draining(); }

bool ServingCore::WaitIdle(absl::Time deadline) { return scheduler_->WaitIdle(deadline); }

void ServingCore::EndAllSessions() {
  SessionEvents events;
  table_.EndAll(events);
  table_.Publish(events);
}

int64_t ServingCore::ReapIdleSessions(absl::Time now) {
  SessionEvents events;
  const int64_t reaped = table_.ReapIdle(now, events);
  table_.Publish(events);
  if (reaped > 0) LogInfo("expired ", reaped, " idle session(s)");
  return reaped;
}

int64_t ServingCore::session_count() const { return table_.session_count(); }

int64_t ServingCore::state_bytes() const { return table_.state_bytes(); }

}  // namespace rnnserve
