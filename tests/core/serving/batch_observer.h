// BatchObserver: a ServingObserver that records each engine call's model and number of
// sessions (ServingObserver::BatchRun), for the batching tests. Thread-safe (mu guards runs).
#ifndef RNNSERVE_TESTS_CORE_SERVING_BATCH_OBSERVER_H_
#define RNNSERVE_TESTS_CORE_SERVING_BATCH_OBSERVER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "core/serving/serving_observer.h"

namespace rnnserve {

class BatchObserver : public ServingObserver {
 public:
  void BatchRun(const std::string& model, int64_t chunks) override {
    absl::MutexLock lock(&mu);
    runs[model].push_back(chunks);
  }
  absl::Mutex mu;
  std::map<std::string, std::vector<int64_t>> runs;
};

}  // namespace rnnserve

#endif  // RNNSERVE_TESTS_CORE_SERVING_BATCH_OBSERVER_H_
