#include "core/serving/serving_core.h"

#include <algorithm>
#include <vector>

#include "base/log.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "core/serving/chunk_batch.h"
#include "core/serving/client_text.h"
#include "core/serving/session.h"
#include "core/serving/slicing.h"

namespace rnnserve {

struct ServingCore::ForwardTask : BatchScheduler::Task {
  // Held: an unloaded version stays alive until the call is answered.
  std::shared_ptr<const ServedModel> model;
  Tensor input;
  std::optional<Tensor> h0;
  std::optional<Tensor> c0;  // LSTM only
  ForwardCallback done;

  // Progress of a call computed in slices (slicing.h); the task owns every buffer between
  // turns, so the next slice may run on another worker.
  int turns = 0;
  InputDims dims;
  std::vector<float> input_time_major;   // batch_first input packed time-major; else unused
  std::vector<float> output_time_major;  // batch_first output as the engine writes it
  ForwardResult result;                  // output; h_n and c_n are split from `state` at the end
  std::vector<float> state;  // StateSize(batch): h_0 [+ c_0], then the state after each slice
  int64_t steps_done = 0;
  ForwardCursor cursor;  // bidirectional: ForwardPiece's progress

  // The first turn: checks the request as RnnModel::Forward does and prepares the buffers.
  absl::Status Start(const ServingOptions& options) {
    RETURN_IF_ERROR(CheckFinite(input.values, "input", options));
    if (h0.has_value()) RETURN_IF_ERROR(CheckFinite(h0->values, "h_0", options));
    if (c0.has_value()) RETURN_IF_ERROR(CheckFinite(c0->values, "c_0", options));
    const RnnModel& rnn = *model->model;
    const RnnConfig& config = rnn.config();
    // The input's kind (ids or features) before its shape, as chunk_batch.cc checks it.
    RETURN_IF_ERROR(rnn.CheckInputValues(input.data(), input.num_elements(), input.ids));
    ASSIGN_OR_RETURN(dims, rnn.CheckShapes(input.shape, h0 ? &h0->shape : nullptr,
                                           c0 ? &c0->shape : nullptr));
    if (input.num_elements() != NumElements(input.shape) ||
        (h0.has_value() && h0->num_elements() != NumElements(h0->shape)) ||
        (c0.has_value() && c0->num_elements() != NumElements(c0->shape))) {
      return absl::InvalidArgumentError("tensor value count does not match its shape");
    }
    // One buffer as the engine takes it: h_0 at the front, c_0 after it, zeros when absent.
    state.assign(rnn.StateSize(dims.batch), 0.0f);
    if (h0.has_value()) std::copy(h0->values.begin(), h0->values.end(), state.begin());
    if (c0.has_value()) {
      std::copy(c0->values.begin(), c0->values.end(),
                state.begin() + rnn.HiddenStateSize(dims.batch));
    }
    h0.reset();
    c0.reset();
    result.output = Tensor::Zeros(rnn.OutputShape(dims.steps, dims.batch, dims.batched));
    if (config.NeedsTimeMajorConversion(dims.batched)) {
      input_time_major.resize(input.values.size());
      rnn.InputToTimeMajor(input.data(), dims.steps, dims.batch, input_time_major.data());
      input = Tensor();  // only the packed copy is read from now on
      output_time_major.resize(model->model->OutputSize(dims.steps, dims.batch));
    }
    return absl::OkStatus();
  }
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
  Forward(model_name, std::move(input), std::move(h0), std::nullopt, std::move(done));
}

void ServingCore::Forward(const std::string& model_name, Tensor input, std::optional<Tensor> h0,
                          std::optional<Tensor> c0, ForwardCallback done) {
  Forward(model_name, 0, std::move(input), std::move(h0), std::move(c0), std::move(done));
}

void ServingCore::Forward(const std::string& model_name, int64_t version, Tensor input,
                          std::optional<Tensor> h0, std::optional<Tensor> c0,
                          ForwardCallback done) {
  if (draining()) {
    done(absl::UnavailableError("server is draining for shutdown; retry on another replica"));
    return;
  }
  absl::StatusOr<std::shared_ptr<const ServedModel>> found = models_->Lookup(model_name, version);
  if (!found.ok()) {
    done(found.status());
    return;
  }
  std::shared_ptr<const ServedModel> model = *std::move(found);
  // Sizes before work: an output that could not be sent is never computed. Shape errors are
  // left to the model's own check, which names them.
  const RnnModel& rnn = *model->model;
  if (absl::StatusOr<InputDims> dims =
          rnn.CheckShapes(input.shape, h0.has_value() ? &h0->shape : nullptr,
                          c0.has_value() ? &c0->shape : nullptr);
      dims.ok()) {
    if (absl::Status capped = CheckStepCap(dims->steps, "the input", options_); !capped.ok()) {
      done(capped);
      return;
    }
    absl::Status fits = CheckResponseFits(rnn.OutputSize(dims->steps, dims->batch),
                                          rnn.StateSize(dims->batch), options_,
                                          "send a shorter sequence or a smaller batch");
    if (!fits.ok()) {
      done(fits);
      return;
    }
  }
  auto task = new ForwardTask;
  task->key = model.get();
  task->settings = &model->settings;  // task->model keeps it alive
  task->model = std::move(model);
  task->input = std::move(input);
  task->h0 = std::move(h0);
  task->c0 = std::move(c0);
  task->done = std::move(done);
  scheduler_->Enqueue(task);
}

void ServingCore::RunForward(ForwardTask* task, Workspace& workspace) {
  std::unique_ptr<ForwardTask> owned(task);
  if (task->turns++ == 0) {
    if (absl::Status started = task->Start(options_); !started.ok()) {
      task->done(started);
      return;
    }
  }
  const RnnModel& model = *task->model->model;
  const RnnConfig& config = model.config();
  const int64_t steps = task->dims.steps, batch = task->dims.batch;
  if (batch > 0) {  // N == 0: torch returns empty tensors
    const bool packed = !task->output_time_major.empty();
    const float* input = packed ? task->input_time_major.data() : task->input.data();
    float* output = packed ? task->output_time_major.data() : task->result.output.data();
    const int64_t offset = task->steps_done;
    float* state = task->state.data();  // h_0 [+ c_0] in, h_n [+ c_n] out: aliasing is allowed
    if (config.bidirectional) {
      // The reverse direction needs the whole sequence: pieces of one layer and direction.
      if (model.ForwardPiece(input, steps, batch, state, output, state,
                             SliceSteps(steps, batch, options_), task->cursor, workspace)) {
        task->steps_done = steps;
      }
    } else {
      const int64_t slice = SliceSteps(steps - offset, batch, options_);
      model.ForwardTimeMajor(input + model.InputSize(offset, batch), slice, batch, state,
                             output + model.OutputSize(offset, batch), state, workspace);
      task->steps_done += slice;
    }
    if (task->steps_done < steps) {
      BatchScheduler::Task* next = owned.release();
      scheduler_->Requeue({&next, 1});
      return;
    }
    if (packed) {
      model.OutputFromTimeMajor(task->output_time_major.data(), steps, batch,
                                task->result.output.data());
    }
  }
  // Split the state buffer into torch's h_n and (LSTM) c_n.
  const float* state = task->state.data();
  const int64_t hidden_floats = model.HiddenStateSize(batch);
  task->result.h_n = Tensor(config.StateShape(batch, task->dims.batched),
                            std::vector<float>(state, state + hidden_floats));
  if (config.has_cell_state()) {
    task->result.c_n = Tensor(config.CellStateShape(batch, task->dims.batched),
                              std::vector<float>(state + hidden_floats,
                                                 state + model.StateSize(batch)));
  }
  observer_->ForwardDone(task->model->name, steps * batch);
  task->done(std::move(task->result));
}

int64_t ServingCore::SubmitChunk(ChunkRequest request, ChunkCallback done) {
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
  int64_t bound = 0;
  absl::StatusOr<bool> admitted = table_.Admit(task.get(), events, &bound);
  table_.Publish(events);
  if (!admitted.ok()) {
    if (LogEnabled(LogLevel::kDebug)) {
      const std::string& id = task->request.session_id;
      LogDebug("session ", id.empty() ? "(new)" : Quoted(id), " of ",
               DescribePrincipal(task->request.principal),
               " request refused: ", admitted.status().ToString());
    }
    task->result.status = admitted.status();
    task->result.response_bound = ResponseBytesBound(0);  // an error: no tensors
    bound = task->result.response_bound;
    task->done(std::move(task->result));
    return bound;
  }
  // Not task->result: a task queued behind its session's chunk in flight may already be gone.
  ChunkTask* admitted_task = task.release();  // owned by the scheduler or the session now
  if (*admitted) scheduler_->Enqueue(admitted_task);
  return bound;
}

void ServingCore::RunBatch(absl::Span<BatchScheduler::Task* const> batch,
                           Workspace& workspace) {
  std::vector<ChunkTask*> chunks;
  chunks.reserve(batch.size());
  const absl::Time now = absl::Now();
  for (BatchScheduler::Task* task : batch) {
    if (auto* chunk = dynamic_cast<ChunkTask*>(task)) {
      if (chunk->turns == 0) chunk->dispatched = now;  // the queue wait ends at the first slice
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

MemoryUsage ServingCore::memory() const { return table_.memory(); }

}  // namespace rnnserve
