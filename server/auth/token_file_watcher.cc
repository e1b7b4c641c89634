#include "server/auth/token_file_watcher.h"

#include <utility>

#include "base/log.h"

namespace rnnserve {

TokenFileWatcher::TokenFileWatcher(std::shared_ptr<TokenAuthenticator> authenticator,
                                   absl::Duration interval)
    : authenticator_(std::move(authenticator)),
      interval_(interval),
      thread_([this] { Run(); }) {}

TokenFileWatcher::~TokenFileWatcher() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void TokenFileWatcher::RequestReload() {
  absl::MutexLock lock(&mu_);
  reload_requested_ = true;
}

int64_t TokenFileWatcher::completed_checks() const {
  absl::MutexLock lock(&mu_);
  return completed_checks_;
}

void TokenFileWatcher::Run() {
  for (;;) {
    bool requested = false;
    {
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || reload_requested_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&woken), interval_);
      if (stopping_) return;
      requested = std::exchange(reload_requested_, false);
    }
    // File I/O outside mu_: RequestReload never waits for a slow disk.
    if (requested) {
      if (absl::Status status = authenticator_->Reload(); status.ok()) {
        LogInfo("tokens file reloaded on request: ", authenticator_->size(), " principals");
      } else {
        LogWarning("tokens file reload failed, keeping the previous tokens: ", status.message());
      }
    } else {
      absl::StatusOr<bool> reloaded = authenticator_->ReloadIfChanged();
      if (!reloaded.ok()) {
        LogWarning("tokens file reload failed, keeping the previous tokens: ",
                   reloaded.status().message());
      } else if (*reloaded) {
        LogInfo("tokens file changed and was reloaded: ", authenticator_->size(), " principals");
      }
    }
    absl::MutexLock lock(&mu_);
    ++completed_checks_;
  }
}

}  // namespace rnnserve
