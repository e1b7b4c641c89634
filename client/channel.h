// Channels to an rnnserve server made from ClientOptions: plaintext or TLS (server verified
// against tls_ca_file), mutual TLS (tls_cert_file + tls_key_file presented to the server), a
// bearer token sent as "authorization: Bearer TOKEN" on every call, and a receive limit as
// large as the server's. Every client of the library (RnnServeClient, StreamChannel, the bench
// load generator's callback streams) goes through MakeChannel, so none of them can forget the
// token or the limit.
//
// The token travels through a client interceptor rather than call credentials: gRPC refuses
// call credentials on an insecure channel, and a plaintext server with --auth_tokens_file is a
// supported (if unwise off loopback) deployment. Over plaintext the token is readable on the
// wire; docs/security.md says so.
//
// Stateless free functions; thread-safe. The returned channel owns its credentials and a copy
// of the token.
#ifndef RNNSERVE_CLIENT_CHANNEL_H_
#define RNNSERVE_CLIENT_CHANNEL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"

namespace rnnserve {
namespace client {

struct ClientOptions;

// The metadata key and value prefix a token is sent with.
inline constexpr char kAuthorizationKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

// Largest PEM file read (certificates and keys are a few KB; a bundle of CAs some hundreds).
inline constexpr int64_t kMaxPemFileBytes = 1 << 20;

// Checks the TLS and token fields without reading files: cert and key come together, and only
// with tls_ca_file (TLS is on exactly when tls_ca_file is set); the token is printable ASCII
// with no spaces, as gRPC metadata values must be. INVALID_ARGUMENT saying what is wrong,
// never echoing the token.
absl::Status ValidateChannelOptions(const ClientOptions& options);

// InsecureChannelCredentials, or SslCredentials from the PEM files of `options` (read here;
// NOT_FOUND / INVALID_ARGUMENT naming the file when one is missing, empty or not PEM).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientOptions& options);

// A channel to `target` ("host:port") with the credentials above, the token interceptor (when
// options.token is set) and max_message_bytes as the receive limit, on top of `args` (callers
// may add their own, e.g. to keep channels on separate connections). Lazy: connects on the
// first call, so a server that refuses the handshake shows up as that call's UNAVAILABLE.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& target, const ClientOptions& options,
    grpc::ChannelArguments args = grpc::ChannelArguments());

}  // namespace client
}  // namespace rnnserve

#endif  // RNNSERVE_CLIENT_CHANNEL_H_
