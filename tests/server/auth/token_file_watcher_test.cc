#include "server/auth/token_file_watcher.h"

#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "base/file_io.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace rnnserve {
namespace {

std::string Line(const std::string& principal, const std::string& token) {
  return principal + " " + TokenHashHex(HashToken(token)) + "\n";
}

// Polls `done` every 10 ms for at most 10 s.
template <typename F>
bool Eventually(F done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

class TokenFileWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(temp_.ok());
    ASSERT_TRUE(WriteFile(path_, Line("alice", "token-alice")).ok());
    tokens_ = TokenAuthenticator::FromFile(path_).value();
  }

  bool Accepts(const std::string& token) {
    return tokens_->Authenticate("Bearer " + token).ok();
  }

  TempDir temp_;
  const std::string path_ = temp_.File("tokens");
  std::shared_ptr<TokenAuthenticator> tokens_;
};

TEST_F(TokenFileWatcherTest, PicksUpAChangedFile) {
  TokenFileWatcher watcher(tokens_, absl::Milliseconds(20));
  ASSERT_TRUE(WriteFile(path_, Line("bob", "token-bob")).ok());
  EXPECT_TRUE(Eventually([&] { return Accepts("token-bob"); }));
  EXPECT_FALSE(Accepts("token-alice"));
}

TEST_F(TokenFileWatcherTest, BrokenFileKeepsServingTheOldTokens) {
  TokenFileWatcher watcher(tokens_, absl::Milliseconds(20));
  ASSERT_TRUE(WriteFile(path_, "not a valid line at all\n").ok());
  const int64_t checks = watcher.completed_checks();
  ASSERT_TRUE(Eventually([&] { return watcher.completed_checks() >= checks + 3; }));
  EXPECT_TRUE(Accepts("token-alice"));
}

TEST_F(TokenFileWatcherTest, RequestReloadActsWithoutWaitingForTheInterval) {
  TokenFileWatcher watcher(tokens_, absl::Hours(1));
  ASSERT_TRUE(WriteFile(path_, Line("carol", "token-carol")).ok());
  EXPECT_EQ(watcher.completed_checks(), 0);
  watcher.RequestReload();
  EXPECT_TRUE(Eventually([&] { return watcher.completed_checks() == 1; }));
  EXPECT_TRUE(Accepts("token-carol"));
  EXPECT_FALSE(Accepts("token-alice"));
}

TEST_F(TokenFileWatcherTest, DestructorStopsPromptlyDespiteALongInterval) {
  const absl::Time start = absl::Now();
  { TokenFileWatcher watcher(tokens_, absl::Hours(1)); }
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

}  // namespace
}  // namespace rnnserve
