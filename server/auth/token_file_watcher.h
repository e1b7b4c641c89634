// Keeps a TokenAuthenticator in step with its file: a background thread calls
// ReloadIfChanged every `interval`, and RequestReload (e.g. from the thread that sigwaits for
// SIGHUP; never from a signal handler) makes it re-read the file at once. A failed reload
// keeps the previous table and is logged at WARN once per change of the file; the log lines
// name the file and line, never a token or a hash.
//
// Thread-safe. Shares ownership of the authenticator; the destructor stops and joins the
// thread.
#ifndef RNNSERVE_SERVER_AUTH_TOKEN_FILE_WATCHER_H_
#define RNNSERVE_SERVER_AUTH_TOKEN_FILE_WATCHER_H_

#include <cstdint>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth/token_file.h"

namespace rnnserve {

class TokenFileWatcher {
 public:
  TokenFileWatcher(std::shared_ptr<TokenAuthenticator> authenticator, absl::Duration interval);
  ~TokenFileWatcher();

  TokenFileWatcher(const TokenFileWatcher&) = delete;
  TokenFileWatcher& operator=(const TokenFileWatcher&) = delete;

  // Asks the thread to re-read the file now, changed or not. Returns at once.
  void RequestReload();

  // Checks of the file completed so far (timed or requested), successful or not.
  int64_t completed_checks() const;

 private:
  void Run();

  const std::shared_ptr<TokenAuthenticator> authenticator_;
  const absl::Duration interval_;

  // State below is protected by mu_.
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool reload_requested_ ABSL_GUARDED_BY(mu_) = false;
  int64_t completed_checks_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread thread_;  // last: starts after the members it reads
};

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_AUTH_TOKEN_FILE_WATCHER_H_
