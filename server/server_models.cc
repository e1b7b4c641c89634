// RnnServer's model lifecycle: the reload thread (--repository_poll_interval, SIGHUP) that
// rescans the model repository, and the per-model health statuses
// (rnnserve.v1.RnnService/MODEL) that follow it. The rest of RnnServer is in server.cc.
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/log.h"
#include "server/server.h"

namespace rnnserve {

void RnnServer::ReloadModels() {
  absl::MutexLock lock(&reload_mu_);
  reload_requested_ = true;
}

void RnnServer::StopModelReloads() {
  {
    absl::MutexLock lock(&reload_mu_);
    reload_stop_ = true;
  }
  if (reload_thread_.joinable()) reload_thread_.join();
}

void RnnServer::ModelReloadLoop() {
  const absl::Duration poll = options_.repository_poll_interval;
  while (true) {
    {
      absl::MutexLock lock(&reload_mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(reload_mu_) {
        return reload_requested_ || reload_stop_;
      };
      const absl::Condition woken(&wake);
      if (poll > absl::ZeroDuration()) {
        reload_mu_.AwaitWithTimeout(woken, poll);
      } else {
        reload_mu_.Await(woken);
      }
      if (reload_stop_) return;
      reload_requested_ = false;
    }
    if (absl::Status reloaded = core_->mutable_models().Reload(); !reloaded.ok()) {
      LogError("model repository rescan: ", reloaded.message());
    }
    UpdateModelHealth();
  }
}

void RnnServer::UpdateModelHealth() {
  bool draining = false;
  {
    absl::MutexLock lock(&reload_mu_);
    draining = draining_;
  }
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (s == nullptr) continue;
    grpc::HealthCheckServiceInterface* health = s->GetHealthCheckService();
    for (const std::string& name : core_->models().Names()) {
      health->SetServingStatus(absl::StrCat(kServiceName, "/", name),
                               !draining && core_->models().Find(name) != nullptr);
    }
  }
}

}  // namespace rnnserve
