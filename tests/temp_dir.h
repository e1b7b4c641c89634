// A fresh directory under /tmp for one test, removed with its contents when the object is
// destroyed. Not thread-safe to construct and destroy concurrently with use; owns the directory.
#ifndef RNNSERVE_TESTS_TEMP_DIR_H_
#define RNNSERVE_TESTS_TEMP_DIR_H_

#include <cstdlib>
#include <string>

#include <stdlib.h>

namespace rnnserve {

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/rnnserve_test_XXXXXX";
    if (mkdtemp(pattern) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    if (!path_.empty()) std::system(("rm -rf '" + path_ + "'").c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // False if the directory could not be made (then path() is empty).
  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace rnnserve

#endif  // RNNSERVE_TESTS_TEMP_DIR_H_
