// TLS (and mutual TLS) server credentials for the gRPC port that follow certificate rotation:
// the key, certificate chain and client CA files are re-read every refresh_interval by gRPC's
// FileWatcherCertificateProvider, so cert-manager can replace them with no restart and
// without dropping connections (new handshakes use the new files, open connections go on).
// The files are checked once up front, so a wrong path or a key that does not match the
// certificate fails at start with the file named instead of at the first handshake.
// Stateless free functions; thread-safe. The returned credentials own the file watcher.
#ifndef RNNSERVE_SERVER_AUTH_TLS_H_
#define RNNSERVE_SERVER_AUTH_TLS_H_

#include <memory>
#include <string>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rnnserve {

struct TlsOptions {
  std::string cert_file;  // PEM certificate chain, leaf first
  std::string key_file;   // PEM private key of the leaf certificate
  // When set, clients must present a certificate that chains to one of these PEM CA
  // certificates (mTLS); the handshake is refused otherwise.
  std::string client_ca_file;
  // How often the files are re-read; rounded to whole seconds, at least 1 s.
  absl::Duration refresh_interval = absl::Minutes(1);
};

// Checks that each named file is readable PEM: the certificate file holds at least one
// certificate, the key file a private key matching the first certificate, the CA file (when
// set) at least one certificate. INVALID_ARGUMENT / NOT_FOUND naming the file otherwise.
absl::Status ValidateTlsFiles(const TlsOptions& options);

// ValidateTlsFiles, then gRPC TLS server credentials watching the files. Client certificates
// are requested, required and verified exactly when client_ca_file is set.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options);

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_AUTH_TLS_H_
