#include "server/auth/token_file.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Line(absl::string_view principal, absl::string_view token) {
  return absl::StrCat(principal, " ", TokenHashHex(HashToken(token)), "\n");
}

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(temp_.ok()); }

  void Write(absl::string_view contents) { ASSERT_TRUE(WriteFile(path_, contents).ok()); }

  absl::Status ParseError(absl::string_view contents) {
    return ParseTokensFile(contents, "tokens.txt").status();
  }

  TempDir temp_;
  const std::string path_ = temp_.File("tokens");
};

TEST(TokenHashTest, MatchesKnownSha256) {
  // sha256("abc") from FIPS 180-2, appendix B.1.
  EXPECT_EQ(TokenHashHex(HashToken("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(TokenFileTest, ParsesCommentsBlankLinesAndTabs) {
  const std::string contents = absl::StrCat("# rnnserve tokens\n\n   \n", Line("alice", "t-a"),
                                            "  # indented comment\r\n",
                                            "bob\t", TokenHashHex(HashToken("t-b")), "  \r\n");
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokensFile(contents, "f");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].principal, "alice");
  EXPECT_EQ((*entries)[1].principal, "bob");
  EXPECT_EQ((*entries)[1].hash, HashToken("t-b"));
}

TEST_F(TokenFileTest, BadLinesNameTheLineAndNeverEchoTheHash) {
  const std::string hash = TokenHashHex(HashToken("secret"));
  struct Case {
    std::string contents;
    std::string expected;
  };
  const Case cases[] = {
      {"# c\nalice\n", "line 2: expected 'PRINCIPAL SHA256HEX'; got 1 fields"},
      {"alice " + hash + " extra\n", "line 1: expected 'PRINCIPAL SHA256HEX'; got 3 fields"},
      {"alice " + hash.substr(1) + "\n", "line 1: second field must be the token's SHA-256"},
      {"alice " + hash.substr(0, 63) + "G\n", "character at offset 63 is not in [0-9a-f]"},
      {"alice " + absl::AsciiStrToUpper(hash) + "\n", "is not in [0-9a-f]"},
      {"al/ice " + hash + "\n", "line 1: principal must be bytes of [A-Za-z0-9._:@-]; byte 0x2f"},
      {std::string(129, 'p') + " " + hash + "\n", "principal must be 1 to 128 bytes; got 129"},
      {Line("alice", "x") + Line("alice", "y"), "line 2: principal \"alice\" already appears on line 1"},
      {Line("alice", "x") + "\n" + Line("bob", "x"), "line 3: the same token hash as line 1"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ParseError(c.contents);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.contents;
    EXPECT_THAT(status.message(), HasSubstr("tokens file \"tokens.txt\""));
    EXPECT_THAT(status.message(), HasSubstr(c.expected)) << c.contents;
    EXPECT_THAT(status.message(), Not(HasSubstr(hash.substr(0, 16))));
  }
}

TEST_F(TokenFileTest, AuthenticatesBearerHeaders) {
  Write(Line("alice", "token-alice") + Line("svc:batch@example", "token-batch"));
  absl::StatusOr<std::unique_ptr<TokenAuthenticator>> auth = TokenAuthenticator::FromFile(path_);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->size(), 2u);
  EXPECT_EQ((*auth)->Authenticate("Bearer token-alice").value(), "alice");
  EXPECT_EQ((*auth)->Authenticate("bearer   token-batch").value(), "svc:batch@example");
  EXPECT_EQ((*auth)->Authenticate("BEARER token-batch ").value(), "svc:batch@example");
}

TEST_F(TokenFileTest, RefusesMissingMalformedAndUnknownWithoutEchoingTheToken) {
  Write(Line("alice", "token-alice"));
  auto auth = TokenAuthenticator::FromFile(path_).value();
  const struct {
    std::string header;
    std::string expected;
  } cases[] = {
      {"", "missing credentials"},
      {"token-alice", "expected 'Bearer TOKEN'"},
      {"Basic token-alice", "expected 'Bearer TOKEN'"},
      {"Bearer ", "expected 'Bearer TOKEN'"},  // stripped to "Bearer": no token
      {"Bearer token-alice extra", "without spaces"},
      {"Bearer token-al\x01ice", "printable ASCII"},
      {"Bearer token-alicf", "unknown bearer token"},
      {"Bearer token-alic", "unknown bearer token"},
      {"Bearer " + TokenHashHex(HashToken("token-alice")), "unknown bearer token"},
  };
  for (const auto& c : cases) {
    const absl::Status status = auth->Authenticate(c.header).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << c.header;
    EXPECT_THAT(status.message(), HasSubstr(c.expected)) << c.header;
    EXPECT_THAT(status.message(), Not(HasSubstr("token-al"))) << c.header;
  }
}

TEST_F(TokenFileTest, ReloadRevokesAndAddsTokens) {
  Write(Line("alice", "token-alice") + Line("bob", "token-bob"));
  auto auth = TokenAuthenticator::FromFile(path_).value();
  ASSERT_TRUE(auth->Authenticate("Bearer token-bob").ok());
  Write(Line("alice", "token-alice") + Line("carol", "token-carol"));  // bob revoked
  ASSERT_TRUE(auth->Reload().ok());
  EXPECT_EQ(auth->Authenticate("Bearer token-bob").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth->Authenticate("Bearer token-carol").value(), "carol");
  EXPECT_EQ(auth->Authenticate("Bearer token-alice").value(), "alice");
}

TEST_F(TokenFileTest, BadFileKeepsTheOldTable) {
  Write(Line("alice", "token-alice"));
  auto auth = TokenAuthenticator::FromFile(path_).value();
  Write(Line("alice", "token-alice") + "bob not-a-hash\n");
  const absl::Status status = auth->Reload();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("line 2"));
  EXPECT_EQ(auth->Authenticate("Bearer token-alice").value(), "alice");
  ASSERT_EQ(unlink(path_.c_str()), 0);
  EXPECT_EQ(auth->Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(auth->Authenticate("Bearer token-alice").value(), "alice");
}

TEST_F(TokenFileTest, ReloadIfChangedFollowsTheFile) {
  Write(Line("alice", "token-alice"));
  auto auth = TokenAuthenticator::FromFile(path_).value();
  EXPECT_FALSE(auth->ReloadIfChanged().value());  // unchanged since FromFile
  Write(Line("bob", "token-bob"));                // new inode (rename into place)
  EXPECT_TRUE(auth->ReloadIfChanged().value());
  EXPECT_FALSE(auth->ReloadIfChanged().value());
  EXPECT_EQ(auth->Authenticate("Bearer token-bob").value(), "bob");
  EXPECT_FALSE(auth->Authenticate("Bearer token-alice").ok());

  Write("broken\n");  // reported once, then quiet until the file changes again
  EXPECT_EQ(auth->ReloadIfChanged().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(auth->ReloadIfChanged().value());
  EXPECT_EQ(auth->Authenticate("Bearer token-bob").value(), "bob");

  ASSERT_EQ(unlink(path_.c_str()), 0);  // a vanished file: reported once as well
  EXPECT_EQ(auth->ReloadIfChanged().status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(auth->ReloadIfChanged().value());
  Write(Line("carol", "token-carol"));
  EXPECT_TRUE(auth->ReloadIfChanged().value());
  EXPECT_EQ(auth->Authenticate("Bearer token-carol").value(), "carol");
}

TEST_F(TokenFileTest, FromFileNamesAMissingPath) {
  const absl::Status status = TokenAuthenticator::FromFile(temp_.File("nope")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(temp_.File("nope")));
}

TEST(TokenAuthenticatorTest, EmptyTableRefusesEveryone) {
  TokenAuthenticator auth(std::vector<TokenEntry>{});
  EXPECT_EQ(auth.Authenticate("Bearer anything").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Reload().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace rnnserve
