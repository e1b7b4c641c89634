// Turning a call's credentials into a principal: "authorization: Bearer TOKEN" metadata
// checked against a TokenAuthenticator, or (when allowed) the subject of the client
// certificate that mutual TLS verified.
//
// Two pieces, because gRPC 1.51 offers no per-call place to store a principal:
//  - BearerTokenProcessor, installed on TLS server credentials with SetAuthMetadataProcessor,
//    runs before every call on the port (health, reflection and unknown methods included)
//    and ends a call without valid credentials UNAUTHENTICATED before any handler runs.
//  - AuthenticateCall, called by handlers, returns the principal. On TLS it repeats the
//    processor's check (one SHA-256); on plaintext, where gRPC runs no processor (it aborts
//    if one is set on insecure credentials), it is the only check.
// The processor deliberately writes nothing into the AuthContext: gRPC shares that object
// between all calls of a connection and does not lock it, so a property written for one call
// would be read by the next call on the same connection (tls_test shows this), and two
// concurrent calls would race. The authorization metadata therefore stays visible to handlers:
// they must never log or export metadata.
//
// Both are thread-safe. The processor shares ownership of the authenticator, whose table a
// reload poller may swap at any time.
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

inline constexpr char kAuthorizationMetadata[] = "authorization";

struct CallAuthOptions {
  // A call with no authorization metadata is accepted when the peer presented a certificate
  // verified against the client CA (mTLS); its principal is the certificate's subject, e.g.
  // "CN=batch-job,O=example". Subjects contain '=', which token principals cannot, so the two
  // kinds never collide. A token, when sent, is always checked, certificate or not.
  bool accept_client_certificate = false;
};

class BearerTokenProcessor : public grpc::AuthMetadataProcessor {
 public:
  BearerTokenProcessor(std::shared_ptr<const TokenAuthenticator> authenticator,
                       CallAuthOptions options);

  // Cheap (a hash and a short lock), so gRPC runs it inline instead of on another thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const std::shared_ptr<const TokenAuthenticator> authenticator_;
  const CallAuthOptions options_;
};

// The principal of the call in `context`, by the same rules as BearerTokenProcessor.
// UNAUTHENTICATED (never echoing a token) when the call has no valid credentials.
absl::StatusOr<std::string> AuthenticateCall(const TokenAuthenticator& authenticator,
                                             const grpc::ServerContextBase& context,
                                             CallAuthOptions options = {});

}  // namespace rnnserve

#endif  // RNNSERVE_SERVER_AUTH_AUTH_PROCESSOR_H_
