#include "server/auth/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdint>

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include "absl/strings/str_cat.h"
#include "base/file_io.h"
#include "base/status_macros.h"
#include "base/text.h"

namespace rnnserve {
namespace {

constexpr int64_t kMaxPemBytes = 1 << 20;

struct BioFree { void operator()(BIO* bio) const { BIO_free(bio); } };
struct X509Free { void operator()(X509* cert) const { X509_free(cert); } };
struct PkeyFree { void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); } };
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The last OpenSSL error as text, clearing the queue so it does not leak into gRPC's use.
std::string OpenSslError() {
  const unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "no PEM block of that kind";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  return buffer;
}

absl::Status FileError(absl::string_view what, const std::string& path, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " \"", Printable(path), "\": ", why));
}

absl::StatusOr<BioPtr> ReadPem(absl::string_view what, const std::string& path,
                               std::string* contents) {
  absl::StatusOr<std::string> read = ReadFile(path, kMaxPemBytes);
  if (!read.ok()) return PrefixStatus(what, read.status());
  *contents = std::move(*read);
  BioPtr bio(BIO_new_mem_buf(contents->data(), static_cast<int>(contents->size())));
  if (bio == nullptr) return absl::ResourceExhaustedError("BIO_new_mem_buf failed");
  return bio;
}

// The first certificate in `path`; `count` receives how many the file holds.
absl::StatusOr<X509Ptr> ReadCertificates(absl::string_view what, const std::string& path,
                                         int* count) {
  std::string contents;
  ASSIGN_OR_RETURN(BioPtr bio, ReadPem(what, path, &contents));
  X509Ptr first(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (first == nullptr) {
    return FileError(what, path, absl::StrCat("no PEM certificate (", OpenSslError(), ")"));
  }
  *count = 1;
  while (X509Ptr next{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) ++*count;
  ERR_clear_error();  // the loop ends on a "no start line" error
  return first;
}

}  // namespace

absl::Status ValidateTlsFiles(const TlsOptions& options) {
  if (options.cert_file.empty() || options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate file and a private key file");
  }
  int count = 0;
  ASSIGN_OR_RETURN(X509Ptr leaf, ReadCertificates("TLS certificate file", options.cert_file,
                                                  &count));
  std::string key_pem;
  ASSIGN_OR_RETURN(BioPtr key_bio, ReadPem("TLS key file", options.key_file, &key_pem));
  PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return FileError("TLS key file", options.key_file,
                     absl::StrCat("no unencrypted PEM private key (", OpenSslError(), ")"));
  }
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS key file \"", Printable(options.key_file),
        "\" does not hold the private key of the first certificate in \"",
        Printable(options.cert_file), "\""));
  }
  if (!options.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(X509Ptr ca, ReadCertificates("TLS client CA file", options.client_ca_file,
                                                  &count));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options) {
  RETURN_IF_ERROR(ValidateTlsFiles(options));
  const unsigned int refresh_seconds = static_cast<unsigned int>(
      std::clamp<int64_t>(absl::ToInt64Seconds(options.refresh_interval), 1, 86400));
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (options.client_ca_file.empty()) {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.key_file, options.cert_file, refresh_seconds);
  } else {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.key_file, options.cert_file, options.client_ca_file, refresh_seconds);
  }
  grpc::experimental::TlsServerCredentialsOptions tls_options(provider);
  tls_options.watch_identity_key_cert_pairs();
  if (options.client_ca_file.empty()) {
    tls_options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls_options.watch_root_certs();
    tls_options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::experimental::TlsServerCredentials(tls_options);
  if (credentials == nullptr) {
    return absl::InternalError("gRPC refused the TLS server credentials options");
  }
  return credentials;
}

}  // namespace rnnserve
