#include "server/auth/auth_processor.h"

#include <iterator>
#include <utility>
#include <vector>

#include <grpc/grpc_security_constants.h>

namespace rnnserve {
namespace {

// The rule both entry points share. `first..last` are the call's authorization values (of a
// std::multimap<string_ref, string_ref>); `auth_context` may be null (plaintext).
template <typename Iterator>
absl::StatusOr<std::string> Principal(const TokenAuthenticator& authenticator, Iterator first,
                                      Iterator last, const grpc::AuthContext* auth_context,
                                      const CallAuthOptions& options) {
  if (first != last) {
    if (std::next(first) != last) {
      return absl::UnauthenticatedError(
          "malformed authorization metadata: send exactly one 'authorization: Bearer TOKEN'");
    }
    return authenticator.Authenticate(
        absl::string_view(first->second.data(), first->second.size()));
  }
  if (options.accept_client_certificate && auth_context != nullptr) {
    // Set by the handshake only for a certificate verified against the client CA.
    const std::vector<grpc::string_ref> subjects =
        auth_context->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME);
    if (!subjects.empty() && !subjects.front().empty()) {
      return std::string(subjects.front().data(), subjects.front().size());
    }
    return absl::UnauthenticatedError(
        "missing credentials: send metadata 'authorization: Bearer TOKEN' or a client "
        "certificate");
  }
  return authenticator.Authenticate("");
}

}  // namespace

BearerTokenProcessor::BearerTokenProcessor(
    std::shared_ptr<const TokenAuthenticator> authenticator, CallAuthOptions options)
    : authenticator_(std::move(authenticator)), options_(options) {}

grpc::Status BearerTokenProcessor::Process(const InputMetadata& auth_metadata,
                                           grpc::AuthContext* context,
                                           OutputMetadata* /*consumed_auth_metadata*/,
                                           OutputMetadata* /*response_metadata*/) {
  const auto [first, last] = auth_metadata.equal_range(kAuthorizationMetadata);
  const absl::StatusOr<std::string> principal =
      Principal(*authenticator_, first, last, context, options_);
  if (!principal.ok()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        std::string(principal.status().message()));
  }
  return grpc::Status::OK;
}

absl::StatusOr<std::string> AuthenticateCall(const TokenAuthenticator& authenticator,
                                             const grpc::ServerContextBase& context,
                                             CallAuthOptions options) {
  const auto [first, last] = context.client_metadata().equal_range(kAuthorizationMetadata);
  const std::shared_ptr<const grpc::AuthContext> auth_context = context.auth_context();
  return Principal(authenticator, first, last, auth_context.get(), options);
}

}  // namespace rnnserve
