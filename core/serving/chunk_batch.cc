#include "core/serving/chunk_batch.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "core/serving/client_text.h"
#include "core/serving/slicing.h"

namespace rnnserve {

void ChunkBatch::Run(std::vector<ChunkTask*>& tasks, Workspace& workspace) {
  table_.BeginBatch(tasks);
  Compute(tasks, workspace);
  // Chunks with steps left wait for their next slice behind what was queued meanwhile (and
  // behind the next chunks Finish hands off); the rest are answered now.
  const auto unfinished = std::stable_partition(tasks.begin(), tasks.end(), [](ChunkTask* task) {
    return !task->compute || task->steps_done == task->steps;
  });
  const std::vector<BatchScheduler::Task*> requeue(unfinished, tasks.end());
  tasks.erase(unfinished, tasks.end());
  if (!tasks.empty()) Finish(tasks);
  scheduler_.Requeue(requeue);
}

bool ChunkBatch::Prepare(ChunkTask* task) {
  Session& session = *task->session;
  Session::Work& work = session.work;
  const ChunkTask::Seen& seen = task->seen;
  const ChunkRequest& req = task->request;
  ChunkResult& result = task->result;
  const RnnModel& model = *session.model->model;
  const RnnConfig& config = model.config();
  auto fail = [&](absl::Status status) {
    result.status = std::move(status);
    return false;
  };
  if (!req.decode_error.ok()) return fail(req.decode_error);
  // Closed by CloseSession after this chunk left the session's queue.
  if (seen.ended) return fail(table_.UnknownSessionError(session.principal, session.id));
  if (task->retried_start) {
    // The start already created this session: acknowledge it as it is, with the first chunk's
    // output if that is still the last one kept.
    result.duplicate = true;
    if (req.input.has_value() && req.chunk_index.has_value() &&
        work.last_index == session.first_chunk_index) {
      result.replayed_output = work.last_output;
    }
    return false;
  }
  if (req.chunk_index.has_value()) {
    const uint64_t index = *req.chunk_index;
    if (index < seen.next_chunk_index) {
      // A retry of a chunk already applied: acknowledge, never apply twice; but a retry must
      // carry what was applied (checked for the recent indices whose checksums are kept).
      const Session::Work::Applied& applied = work.recent[index % Session::Work::kRecentChecksums];
      if (applied.set && applied.index == index && applied.checksum != task->input_checksum) {
        return fail(absl::FailedPreconditionError(absl::StrCat(
            "chunk_index ", index, " of session ", Quoted(session.id),
            " was already applied with different input (checksums differ), so this is not a "
            "retry of it; nothing was applied: resend the same chunk, or send new data with "
            "chunk_index ", seen.next_chunk_index)));
      }
      result.duplicate = true;
      // Shared, not copied: N duplicates hold one buffer.
      if (work.last_index == index) result.replayed_output = work.last_output;
      return false;
    }
    if (index > seen.next_chunk_index) {
      return fail(absl::FailedPreconditionError(absl::StrCat(
          "chunk_index ", index, " skips ahead: session ", Quoted(session.id), " expects chunk_index ",
          seen.next_chunk_index, " next; resend the missing chunks first")));
    }
  }
  if (!req.input.has_value()) {
    // Start-only or end-only; a bidirectional session computes its buffer at the end.
    if (config.bidirectional && req.end && work.buffered_steps > 0) {
      task->compute = true;
      task->steps = work.buffered_steps;
      task->batch = seen.batch;
      task->batched = !seen.unbatched;
      task->input_time_major = work.buffered.data();
    }
    return task->compute;
  }
  const TensorBytes& input = *req.input;
  // The input's kind (ids or features) before its shape: token ids sent to a features model
  // (or floats to an ids model) are told which field to use, not that the rank is off.
  if (absl::Status kind = model.CheckInputValues(input.data(), input.num_elements(), input.ids);
      !kind.ok()) {
    return fail(kind);
  }
  absl::StatusOr<InputDims> dims = model.CheckShapes(input.shape, nullptr);
  if (!dims.ok()) return fail(dims.status());
  if (absl::Status capped = CheckStepCap(dims->steps, "this chunk", options_); !capped.ok()) {
    return fail(capped);
  }
  if (!input.consistent()) {
    return fail(absl::InvalidArgumentError("input value count does not match its shape"));
  }
  if (absl::Status finite = CheckFinite(input.values(), "input", options_); !finite.ok()) {
    return fail(finite);
  }
  if (dims->batch < 1) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "a session needs a batch of at least one sequence; input has shape ",
        ShapeToString(input.shape))));
  }
  // Sizes before work: the state must always fit a message (checked when the batch size is
  // fixed), and this chunk's response (for a bidirectional session, the eventual output of
  // everything buffered) must fit too; refused here, nothing is buffered or applied.
  if (seen.batch == 0) {
    if (absl::Status fits = CheckStateFits(model.StateSize(1), dims->batch, options_);
        !fits.ok()) {
      return fail(fits);
    }
  }
  const int64_t response_steps = dims->steps + (config.bidirectional ? work.buffered_steps : 0);
  const int64_t state_floats = req.omit_state ? 0 : model.StateSize(dims->batch);
  if (absl::Status fits = CheckResponseFits(
          model.OutputSize(response_steps, dims->batch), state_floats, options_,
          config.bidirectional ? "end the sequence sooner (a bidirectional session returns its "
                                 "whole output at end), use a smaller batch, or set omit_state"
                               : "send shorter chunks, use a smaller batch, or set omit_state");
      !fits.ok()) {
    return fail(fits);
  }
  // A bidirectional session's buffer grows only into memory reserved for it first.
  int64_t buffer_capacity = 0;
  if (config.bidirectional) {
    if (work.buffered_steps + dims->steps > options_.max_buffered_steps) {
      return fail(absl::ResourceExhaustedError(absl::StrCat(
          "bidirectional session ", Quoted(session.id), " has ", work.buffered_steps,
          " timesteps buffered and this chunk adds T=", dims->steps, ", over the cap of ",
          options_.max_buffered_steps, " (--max_buffered_steps); nothing was buffered or "
          "applied: end the sequence sooner (end=true), or split it over sessions")));
    }
    const size_t needed = work.buffered.size() + static_cast<size_t>(input.num_elements());
    if (needed > work.buffered.capacity()) {
      buffer_capacity = static_cast<int64_t>(
          std::max(needed, work.buffered.capacity() + work.buffered.capacity() / 2));
    }
  }
  const int64_t buffer_growth =
      buffer_capacity == 0
          ? 0
          : (buffer_capacity - static_cast<int64_t>(work.buffered.capacity())) *
                static_cast<int64_t>(sizeof(float));
  if (seen.batch == 0) {
    // The first chunk fixes the batch size and allocates the state.
    absl::Status allocated =
        table_.AllocateState(task, dims->batch, !dims->batched, buffer_growth, events_);
    if (!allocated.ok()) return fail(allocated);
  } else if (seen.unbatched == dims->batched) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "session ", Quoted(session.id), " takes ", seen.unbatched ? "unbatched 2-D" : "batched 3-D",
        " input, as its first chunk or h_0 did; this chunk has shape ",
        ShapeToString(input.shape))));
  } else if (seen.batch != dims->batch) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "batch size must stay the same within a session: session ", Quoted(session.id),
        " has N=", seen.batch, ", this chunk has N=", dims->batch, " (shape ",
        ShapeToString(input.shape), ")")));
  } else if (buffer_growth > 0) {
    absl::Status reserved = table_.ReserveBufferedInput(task, buffer_growth, events_);
    if (!reserved.ok()) return fail(reserved);
  }
  task->steps = dims->steps;
  task->batch = dims->batch;
  task->batched = dims->batched;
  task->input_time_major = input.data();
  if (config.NeedsTimeMajorConversion(dims->batched)) {
    task->transposed_input.resize(input.num_elements());
    model.InputToTimeMajor(input.data(), dims->steps, dims->batch,
                           task->transposed_input.data());
    task->input_time_major = task->transposed_input.data();
  }
  if (config.bidirectional) {
    // The reverse direction needs the whole sequence: buffer until `end`.
    if (buffer_capacity > 0) work.buffered.reserve(static_cast<size_t>(buffer_capacity));
    work.buffered.insert(work.buffered.end(), task->input_time_major,
                         task->input_time_major + input.num_elements());
    work.buffered_steps += dims->steps;
    if (!req.end) return false;
    task->steps = work.buffered_steps;
    task->input_time_major = work.buffered.data();
  }
  task->compute = true;
  return true;
}

void ChunkBatch::Compute(std::vector<ChunkTask*>& tasks, Workspace& workspace) {
  std::vector<StreamChunk> batch;
  batch.reserve(tasks.size());
  const ServedModel* served = tasks.front()->session->model.get();
  const RnnModel& model = *served->model;
  const RnnConfig& config = model.config();
  for (ChunkTask* task : tasks) {
    const bool first_turn = task->turns++ == 0;
    Session& session = *task->session;
    if (first_turn) {
      if (!Prepare(task)) continue;
    } else if (task->seen.ended) {
      // Closed between two slices: stop; nothing was applied (the state never flipped).
      task->compute = false;
      task->result.output.reset();
      task->result.status = table_.UnknownSessionError(session.principal, session.id);
      continue;
    }
    Session::Work& work = session.work;
    // The first slice starts from the stable state; later ones from what the last one wrote.
    const int current = task->seen.current;
    const float* state_in = work.state[task->steps_done == 0 ? current : 1 - current].data();
    float* state_out = work.state[1 - current].data();
    if (first_turn) {
      // The engine writes the output where the response takes it from, except batch_first
      // output, which is converted there once the last slice is done.
      task->result.output =
          TensorBytes::Zeros(model.OutputShape(task->steps, task->batch, task->batched));
      if (config.NeedsTimeMajorConversion(task->batched)) {
        task->output_time_major.resize(model.OutputSize(task->steps, task->batch));
      }
    }
    float* output = task->output_time_major.empty() ? task->result.output->data()
                                                    : task->output_time_major.data();
    if (config.bidirectional) {
      // The reverse direction needs the whole sequence: pieces of one layer and direction
      // instead of slices in time (see slicing.h); the inputs stay the same on every turn.
      const int64_t piece = SliceSteps(task->steps, task->batch, options_);
      if (model.ForwardPiece(task->input_time_major, task->steps, task->batch, state_in, output,
                             state_out, piece, task->cursor, workspace)) {
        task->steps_done = task->steps;
      }
      observer_.BatchRun(served->name, 1);
    } else {
      const int64_t offset = task->steps_done;
      const int64_t steps = SliceSteps(task->steps - offset, task->batch, options_);
      batch.push_back(StreamChunk{task->input_time_major + model.InputSize(offset, task->batch),
                                  steps, task->batch, state_in, state_out,
                                  output + model.OutputSize(offset, task->batch)});
      task->steps_done += steps;
    }
  }
  if (!batch.empty()) {
    // Shapes were checked per chunk above, so the batched step cannot fail.
    absl::Status status = model.StepBatch(batch, &workspace);
    if (!status.ok()) LogError("StepBatch failed: ", status.ToString());
    observer_.BatchRun(served->name, static_cast<int64_t>(batch.size()));
  }
  for (ChunkTask* task : tasks) {
    if (!task->compute || task->output_time_major.empty() || task->steps_done < task->steps) {
      continue;
    }
    model.OutputFromTimeMajor(task->output_time_major.data(), task->steps, task->batch,
                              task->result.output->data());
  }
}

void ChunkBatch::Finish(std::vector<ChunkTask*>& tasks) {
  const std::vector<std::shared_ptr<Session>> handoff = table_.CompleteBatch(tasks, events_);
  // This worker still owns each session's work fields and state (see session.h): finish the
  // results without the table's lock.
  for (ChunkTask* task : tasks) {
    Session::Work& work = task->session->work;
    ChunkResult& result = task->result;
    if (result.status.ok() && !result.duplicate) {
      const std::optional<uint64_t>& index = task->request.chunk_index;
      if (task->keep_replay) {
        // Kept for replays of this chunk (its memory reserved by CompleteBatch): one copy,
        // shared by every duplicate's answer.
        work.last_index = index;
        work.last_output = std::make_shared<const TensorBytes>(*result.output);
      } else {
        work.last_index.reset();
        work.last_output.reset();
      }
      if (index.has_value()) {
        work.recent[*index % Session::Work::kRecentChecksums] = {*index, task->input_checksum,
                                                                  true};
      }
    }
    if (task->report_state != nullptr) {
      // The state buffer: h, then (LSTM) c.
      const RnnModel& model = *task->session->model->model;
      const RnnConfig& config = model.config();
      const int64_t batch = task->seen.batch;
      const bool batched = !task->seen.unbatched;
      result.h_n = TensorBytes::Copy(config.StateShape(batch, batched), task->report_state);
      if (config.has_cell_state()) {
        result.c_n = TensorBytes::Copy(config.CellStateShape(batch, batched),
                                       task->report_state + model.HiddenStateSize(batch));
      }
    }
  }
  // Metrics and events first, so a client that reads /metrics after its answer sees its chunk
  // counted; then answer, and only then let the sessions' next chunks run: otherwise a fast
  // next chunk on another worker could be answered before this one.
  table_.Publish(events_);
  for (ChunkTask* task : tasks) AnswerChunk(task, observer_);
  if (handoff.empty()) return;
  scheduler_.EnqueueAll(table_.Handoff(handoff));
}

}  // namespace rnnserve
