// ZeroMQ CURVE keys for the service <-> endpoint link: key pairs, Z85 key checks, the key files
// the service and the endpoints keep, and the socket options that make a socket a CURVE server
// (authenticating clients through a ZAP handler) or a CURVE client.
//
//   auto keys = curve::LoadOrCreateSecretKeyFile("/etc/loom/service.key");   // 0600
//   curve::MakeServer(router, *keys, "loom");   // before bind
//   curve::MakeClient(dealer, endpoint_keys, service_public_key);   // before connect
//
// Keys are Z85 text (40 characters for 32 bytes), as libzmq's zmq_curve_keypair makes them.
// A secret key file holds both keys, one `NAME=VALUE` line each (`public_key=`, `secret_key=`),
// after a comment; a public key file holds `public_key=` (a file of just the key is read too).
#pragma once

#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/status.h"

namespace loom::curve {

inline constexpr size_t kKeyLength = 40;  // Z85 characters of a 32-byte key

struct KeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// A fresh key pair from libzmq (libsodium's CSPRNG underneath).
Result<KeyPair> GenerateKeyPair();
// The public key that belongs to a secret key.
Result<std::string> PublicKeyOf(std::string_view secret_key);

// True when `key` is 40 characters of the Z85 alphabet whose 5-character groups each decode to
// 32 bits.
bool IsValidKey(std::string_view key);
// OK, or INVALID_ARGUMENT naming `what` (e.g. "--service-public-key") and saying what a key is.
Status CheckKey(std::string_view key, std::string_view what);

// Writes both keys to `path` (mode 0600, atomically; see WriteSecretFile). ALREADY_EXISTS when
// the file exists and `replace` is false.
Status WriteSecretKeyFile(const std::string& path, const KeyPair& keys, bool replace = false);
// Reads a secret key file and checks that its public key belongs to its secret key.
// PERMISSION_DENIED when others may read it.
Result<KeyPair> ReadSecretKeyFile(const std::string& path);
// Reads `path`, or creates it with a fresh key pair if it does not exist (two processes racing
// to create it end up with the same keys). `*created` (may be null) says which happened.
Result<KeyPair> LoadOrCreateSecretKeyFile(const std::string& path, bool* created = nullptr);

// Writes the public key file (mode 0644, atomically).
Status WritePublicKeyFile(const std::string& path, std::string_view public_key);
// The public key in `path`: a public key file, a secret key file (its public_key line), or a
// file holding nothing but the key.
Result<std::string> ReadPublicKeyFile(const std::string& path);

// Makes `socket` a CURVE server with the server's keys. Every connecting client is
// authenticated by the ZAP handler bound in the socket's context under `zap_domain` (empty:
// no ZAP, any client key is let in: for tests that play a server); when
// `enforce_zap` holds (and libzmq has ZMQ_ZAP_ENFORCE_DOMAIN), a connection fails when no ZAP
// handler answers instead of being let in unauthenticated. `*enforced` (may be null) says
// whether libzmq took the option. REQUIRES: before bind.
Status MakeServer(zmq::socket_t& socket, const KeyPair& server, const std::string& zap_domain, bool enforce_zap,
                  bool* enforced = nullptr);
// Makes `socket` a CURVE client holding `client` and expecting the server `server_public_key`.
// REQUIRES: before connect.
Status MakeClient(zmq::socket_t& socket, const KeyPair& client, std::string_view server_public_key);

}  // namespace loom::curve
