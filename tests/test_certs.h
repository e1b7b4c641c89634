// Test certificates made at run time by tests/server/auth/make_test_certs.sh (openssl): CAs
// ca1 and ca2, server-a/server-b (from ca1, for 127.0.0.1 and localhost), client1 (from ca1)
// and client2 (from ca2), each NAME.crt + NAME.key. The test target defines
// RNNSERVE_MAKE_TEST_CERTS as the script's path. Stateless; thread-compatible.
#ifndef RNNSERVE_TESTS_TEST_CERTS_H_
#define RNNSERVE_TESTS_TEST_CERTS_H_

#include <cstdlib>
#include <string>

namespace rnnserve {

// Makes the certificates in `dir`; "" on success, else the command that failed.
inline std::string MakeTestCerts(const std::string& dir) {
  const std::string command = "bash '" RNNSERVE_MAKE_TEST_CERTS "' '" + dir + "'";
  return std::system(command.c_str()) == 0 ? "" : command;
}

}  // namespace rnnserve

#endif  // RNNSERVE_TESTS_TEST_CERTS_H_
