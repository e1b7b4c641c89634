#include "base/text.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(PrintableTest, PassesPlainTextThrough) {
  EXPECT_EQ(Printable("session-42_a.b:c"), "session-42_a.b:c");
  EXPECT_EQ(Printable(""), "");
}

TEST(PrintableTest, EscapesControlQuoteBackslashAndNonAscii) {
  EXPECT_EQ(Printable("a\nb"), "a\\nb");
  EXPECT_EQ(Printable("\r\t"), "\\r\\t");
  EXPECT_EQ(Printable("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(Printable("C:\\x"), "C:\\\\x");
  EXPECT_EQ(Printable("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(Printable(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(Printable("\x7f"), "\\x7f");
  EXPECT_EQ(Printable("\xc3\xa9"), "\\xc3\\xa9");  // UTF-8 'é': bytes, not a character
}

TEST(PrintableTest, ForgedLogLineStaysOnOneLine) {
  const std::string forged = "x\n2026-11-28T15:40:31.123Z INFO admin logged in";
  const std::string out = Printable(forged);
  EXPECT_EQ(out.find('\n'), std::string::npos);
  EXPECT_THAT(out, HasSubstr("x\\n2026"));
}

TEST(PrintableTest, TruncatesWithByteCount) {
  const std::string long_id(1000, 'a');
  EXPECT_EQ(Printable(long_id, 10), "aaaaaaaaaa...(+990 bytes)");
  EXPECT_EQ(Printable(std::string(10, 'a'), 10), "aaaaaaaaaa");  // exactly fits: no marker
}

TEST(PrintableTest, NeverSplitsAnEscape) {
  // "ab" fits, then "\n" would need 2 characters with only 1 left: stops before it.
  EXPECT_EQ(Printable("ab\ncd", 3), "ab...(+3 bytes)");
}

TEST(PrintableTest, OutputIsBoundedForHugeHostileInput) {
  std::string huge(40 << 20, '\n');  // 40 MiB of newlines: 80 MiB escaped
  const std::string out = Printable(huge);
  EXPECT_LE(out.size(), kMaxPrintableChars + 29);
  EXPECT_THAT(out, HasSubstr("...(+"));
  for (size_t max : {0, 1, 5, 128}) {
    EXPECT_LE(Printable(std::string(100000, '\xff'), max).size(), max + 29);
  }
}

TEST(ValidateClientIdTest, AcceptsTheDocumentedCharset) {
  EXPECT_TRUE(ValidateClientId("abcXYZ019._:@-", "session_id").ok());
  EXPECT_TRUE(ValidateClientId(std::string(kMaxClientIdBytes, 'z'), "session_id").ok());
  EXPECT_TRUE(ValidateClientId("a", "session_id").ok());
}

TEST(ValidateClientIdTest, RejectsEmpty) {
  const absl::Status status = ValidateClientId("", "session_id");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("session_id must be 1 to 128 bytes"));
  EXPECT_THAT(status.message(), HasSubstr("empty"));
}

TEST(ValidateClientIdTest, RejectsTooLongWithBoundedMessage) {
  const absl::Status status = ValidateClientId(std::string(40 << 20, 'a'), "session_id");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("got 41943040 bytes"));
  EXPECT_LT(status.message().size(), 400u);
}

TEST(ValidateClientIdTest, RejectsEachUnsafeByteAndNamesIt) {
  for (char c : std::string("\n\r\t \"'\\/=,;<>{}$%\x7f\x80\xff", 21)) {
    const std::string id = std::string("ab") + c + "cd";
    const absl::Status status = ValidateClientId(id, "session_id");
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << int(c);
    EXPECT_THAT(status.message(), HasSubstr("at offset 2 is not allowed"));
    EXPECT_THAT(status.message(), Not(HasSubstr("\n")));
  }
  EXPECT_THAT(ValidateClientId(std::string("a\0b", 3), "model").message(),
              HasSubstr("model must be 1 to 128 bytes of [A-Za-z0-9._:@-]; got \"a\\x00b\" "
                        "(byte 0x00 at offset 1"));
}

TEST(ValidateClientIdTest, CharsetMatchesDescription) {
  int allowed = 0;
  for (int c = 0; c < 256; ++c) allowed += IsClientIdChar(static_cast<char>(c));
  EXPECT_EQ(allowed, 26 + 26 + 10 + 5);
}

}  // namespace
}  // namespace rnnserve
