// Turning a call's credentials into a principal.
//
// With TLS on, BearerTokenProcessor is installed on the server credentials
// (ServerCredentials::SetAuthMetadataProcessor). gRPC runs it before every call: it checks
// the "authorization: Bearer TOKEN" metadata against a TokenAuthenticator (or, when allowed
// and no token is sent, takes the verified client certificate's subject) and records the
// principal in the call's auth context; a call without valid credentials ends UNAUTHENTICATED
// before any handler runs. It also consumes the authorization metadata, so handlers, logs and
// metrics never see a token. gRPC gives each call its own auth context chained to the
// connection's, so one call's principal never leaks into the next call on that connection.
//
// With plaintext, gRPC does not run processors (it aborts if one is set on insecure
// credentials), so handlers call AuthenticateCall themselves.
//
// BearerTokenProcessor is thread-safe (gRPC calls Process concurrently); it shares ownership
// of the authenticator, whose table a reload poller may swap at any time.
#ifndef RNNSERVE_SERVER_AUTH_AUTH_PROCESSOR_H_
#define RNNSERVE_SERVER_AUTH_AUTH_PROCESSOR_H_

#include <memory>
#include <string>

#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"
#include "server/auth/token_file.h"

namespace rnnserve {

// The auth-context property holding the authenticated principal.
inline constexpr char kPrincipalProperty[] = "rnnserve_principal";
inline constexpr char kAuthorizationMetadata[] = "authorization";

class BearerTokenProcessor : public grpc::AuthMetadataProcessor {
 public:
  struct Options {
    // A call with no authorization metadata is accepted when the peer presented a verified
    // client certificate (mTLS); its principal is the certificate's subject, e.g.
    // "CN=batch-job,O=example". Subjects contain '=', which token principals cannot, so the
    // two kinds never collide. A token, when sent, is always checked.
    bool accept_client_certificate = false;
  };

  BearerTokenProcessor(std::shared_ptr<TokenAuthenticator> authenticator, Options options);

  // Cheap (a hash and a short lock), so gRPC runs it inline instead of on another thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const std::shared_ptr<TokenAuthenticator> authenticator_;
  const Options options_;
};

// The principal BearerTokenProcessor recorded, or "" when none (plaintext, or no processor).
std::string PrincipalFromContext(const grpc::AuthContext& context);
std::string PrincipalFromContext(const grpc::ServerContextBase& context);

// For handlers: the principal the processor recorded if any, else the call's own
// authorization metadata checked against `authenticator` (the plaintext case).
// UNAUTHENTICATED when neither gives a principal.
absl::StatusOr<std::string> AuthenticateCall(const TokenAuthenticator& authenticator,
                                             const grpc::ServerContextBase& context);

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_AUTH_AUTH_PROCESSOR_H_
