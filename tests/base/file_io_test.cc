#include "base/file_io.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace rnnserve {
namespace {

class FileIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/rnnserve_file_io_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  std::string dir_;
};

TEST_F(FileIoTest, WriteThenReadRoundTrips) {
  const std::string path = dir_ + "/a.bin";
  const std::string contents("bytes\0with a NUL", 16);
  ASSERT_TRUE(WriteFile(path, contents).ok());
  absl::StatusOr<std::string> read = ReadFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, contents);
  // No temporary file is left behind.
  EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0);
}

TEST_F(FileIoTest, MissingFileIsNotFoundAndNamesThePath) {
  absl::StatusOr<std::string> read = ReadFile(dir_ + "/missing.json");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(read.status().message().find("missing.json"), absl::string_view::npos);
}

TEST_F(FileIoTest, DirectoryAndFifoAreRefusedWithoutBlocking) {
  EXPECT_EQ(ReadFile(dir_).status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string fifo = dir_ + "/config.json";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // Opening a FIFO for reading would wait for a writer forever; ReadFile must refuse it.
  absl::StatusOr<std::string> read = ReadFile(fifo);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(read.status().message().find("not a regular file"), absl::string_view::npos);
}

TEST_F(FileIoTest, SpecialFilesAreWrittenInPlaceAndDirectoriesRefused) {
  // A device cannot be renamed over: /dev/null takes the bytes in place and stays a device.
  EXPECT_TRUE(WriteFile("/dev/null", "discarded").ok());
  struct stat info;
  ASSERT_EQ(stat("/dev/null", &info), 0);
  EXPECT_TRUE(S_ISCHR(info.st_mode));
  EXPECT_EQ(WriteFile(dir_, "x").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(FileIoTest, FileOverTheLimitIsRefused) {
  const std::string path = dir_ + "/big";
  ASSERT_TRUE(WriteFile(path, std::string(100, 'x')).ok());
  EXPECT_TRUE(ReadFile(path, 100).ok());
  EXPECT_EQ(ReadFile(path, 99).status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace rnnserve
