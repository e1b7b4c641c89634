#include "server/auth/auth_processor.h"

#include <utility>

#include <grpc/grpc_security_constants.h>

namespace rnnserve {
namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(status.message()));
}

absl::Status TooManyAuthorizations() {
  return absl::UnauthenticatedError(
      "malformed authorization metadata: send exactly one 'authorization: Bearer TOKEN'");
}

}  // namespace

BearerTokenProcessor::BearerTokenProcessor(std::shared_ptr<TokenAuthenticator> authenticator,
                                           Options options)
    : authenticator_(std::move(authenticator)), options_(options) {}

grpc::Status BearerTokenProcessor::Process(const InputMetadata& auth_metadata,
                                           grpc::AuthContext* context,
                                           OutputMetadata* consumed_auth_metadata,
                                           OutputMetadata* /*response_metadata*/) {
  const auto [first, last] = auth_metadata.equal_range(kAuthorizationMetadata);
  std::string principal;
  if (first != last) {
    // Consumed whatever the outcome: the token never reaches a handler.
    for (auto it = first; it != last; ++it) {
      consumed_auth_metadata->emplace(kAuthorizationMetadata,
                                      std::string(it->second.data(), it->second.size()));
    }
    if (std::next(first) != last) return ToGrpc(TooManyAuthorizations());
    absl::StatusOr<std::string> authenticated = authenticator_->Authenticate(
        absl::string_view(first->second.data(), first->second.size()));
    if (!authenticated.ok()) return ToGrpc(authenticated.status());
    principal = std::move(*authenticated);
  } else if (options_.accept_client_certificate) {
    // Present only when the handshake verified a client certificate against the client CA.
    const std::vector<grpc::string_ref> subjects =
        context->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME);
    if (subjects.empty()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "missing credentials: send metadata 'authorization: Bearer TOKEN' or "
                          "a client certificate");
    }
    principal.assign(subjects.front().data(), subjects.front().size());
  } else {
    return ToGrpc(authenticator_->Authenticate("").status());
  }
  context->AddProperty(kPrincipalProperty, principal);
  context->SetPeerIdentityPropertyName(kPrincipalProperty);
  return grpc::Status::OK;
}

std::string PrincipalFromContext(const grpc::AuthContext& context) {
  const std::vector<grpc::string_ref> values = context.FindPropertyValues(kPrincipalProperty);
  if (values.empty()) return "";
  return std::string(values.front().data(), values.front().size());
}

std::string PrincipalFromContext(const grpc::ServerContextBase& context) {
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  return auth == nullptr ? "" : PrincipalFromContext(*auth);
}

absl::StatusOr<std::string> AuthenticateCall(const TokenAuthenticator& authenticator,
                                             const grpc::ServerContextBase& context) {
  if (std::string principal = PrincipalFromContext(context); !principal.empty()) {
    return principal;
  }
  const auto [first, last] = context.client_metadata().equal_range(kAuthorizationMetadata);
  if (first == last) return authenticator.Authenticate("");
  if (std::next(first) != last) return TooManyAuthorizations();
  return authenticator.Authenticate(absl::string_view(first->second.data(), first->second.size()));
}

}  // namespace rnnserve
