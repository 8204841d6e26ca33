#include "common/curve.h"

#include <sys/stat.h>

#include <filesystem>
#include <sstream>

#include "common/secret_file.h"
#include "common/util.h"

namespace loom::curve {

namespace {

constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

// ZMQ_ZAP_ENFORCE_DOMAIN is in libzmq's draft API; Debian's libzmq5 (4.3.4) honours it.
#ifdef ZMQ_ZAP_ENFORCE_DOMAIN
constexpr int kZapEnforceDomain = ZMQ_ZAP_ENFORCE_DOMAIN;
#else
constexpr int kZapEnforceDomain = 93;
#endif

std::string Trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// The value of "name=value" lines; "" when absent. Lines starting with '#' are comments.
std::string Field(const std::string& text, std::string_view name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::string t = Trim(line);
    if (t.empty() || t[0] == '#') continue;
    const auto eq = t.find('=');
    if (eq == std::string::npos) continue;
    if (Trim(std::string_view(t).substr(0, eq)) == name) return Trim(std::string_view(t).substr(eq + 1));
  }
  return "";
}

}  // namespace

bool IsValidKey(std::string_view key) {
  if (key.size() != kKeyLength) return false;
  for (size_t i = 0; i < key.size(); i += 5) {
    uint64_t v = 0;
    for (size_t j = i; j < i + 5; ++j) {
      const auto d = kZ85Alphabet.find(key[j]);
      if (d == std::string_view::npos) return false;
      v = v * 85 + d;
    }
    if (v > 0xFFFFFFFFull) return false;
  }
  return true;
}

Status CheckKey(std::string_view key, std::string_view what) {
  if (IsValidKey(key)) return Status::Ok();
  return InvalidArgument(std::string(what) + " is not a CURVE key: expected 40 characters of Z85 text (as " +
                         "`loom endpoint configure` writes them), got " + std::to_string(key.size()) + " characters");
}

Result<KeyPair> GenerateKeyPair() {
  char pub[kKeyLength + 1] = {};
  char sec[kKeyLength + 1] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Internal(std::string("cannot make a CURVE key pair (is libzmq built with CURVE?): ") +
                    zmq_strerror(zmq_errno()));
  }
  return KeyPair{pub, sec};
}

Result<std::string> PublicKeyOf(std::string_view secret_key) {
  LOOM_RETURN_IF_ERROR(CheckKey(secret_key, "the secret key"));
  const std::string sec(secret_key);
  char pub[kKeyLength + 1] = {};
  if (zmq_curve_public(pub, sec.c_str()) != 0) {
    return Internal(std::string("cannot derive the CURVE public key: ") + zmq_strerror(zmq_errno()));
  }
  return std::string(pub);
}

Status WriteSecretKeyFile(const std::string& path, const KeyPair& keys, bool replace) {
  LOOM_RETURN_IF_ERROR(CheckKey(keys.public_key, "the public key"));
  LOOM_RETURN_IF_ERROR(CheckKey(keys.secret_key, "the secret key"));
  const std::string text =
      "# Loom ZeroMQ CURVE secret key. Keep it private (mode 0600): whoever holds it can connect\n"
      "# as the endpoint (or service) it belongs to.\n"
      "public_key=" +
      keys.public_key + "\nsecret_key=" + keys.secret_key + "\n";
  return WriteSecretFile(path, text, replace);
}

Result<KeyPair> ReadSecretKeyFile(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::string text, ReadSecretFile(path));
  KeyPair keys{Field(text, "public_key"), Field(text, "secret_key")};
  Status s = CheckKey(keys.secret_key, "secret_key in '" + path + "'");
  if (!s.ok()) return s;
  LOOM_ASSIGN_OR_RETURN(std::string derived, PublicKeyOf(keys.secret_key));
  if (keys.public_key.empty()) keys.public_key = derived;
  if (keys.public_key != derived) {
    return InvalidArgument("'" + path + "' is damaged: its public_key does not belong to its secret_key");
  }
  return keys;
}

Result<KeyPair> LoadOrCreateSecretKeyFile(const std::string& path, bool* created) {
  if (created != nullptr) *created = false;
  auto existing = ReadSecretKeyFile(path);
  if (existing.ok() || existing.status().code() != StatusCode::kNotFound) return existing;
  LOOM_ASSIGN_OR_RETURN(KeyPair keys, GenerateKeyPair());
  Status s = WriteSecretKeyFile(path, keys, /*replace=*/false);
  if (s.code() == StatusCode::kAlreadyExists) return ReadSecretKeyFile(path);  // another process won the race
  LOOM_RETURN_IF_ERROR(s);
  if (created != nullptr) *created = true;
  return keys;
}

Status WritePublicKeyFile(const std::string& path, std::string_view public_key) {
  LOOM_RETURN_IF_ERROR(CheckKey(public_key, "the public key"));
  const std::string text =
      "# Loom ZeroMQ CURVE public key (not a secret).\npublic_key=" + std::string(public_key) + "\n";
  LOOM_RETURN_IF_ERROR(WriteSecretFile(path, text, /*replace=*/true));
  if (::chmod(path.c_str(), 0644) != 0) return Internal("cannot chmod '" + path + "'");
  return Status::Ok();
}

Result<std::string> ReadPublicKeyFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFound("public key file '" + path + "' does not exist");
  const std::string text = ReadFileOrEmpty(path);
  std::string key = Field(text, "public_key");
  if (key.empty()) key = Trim(text);
  LOOM_RETURN_IF_ERROR(CheckKey(key, "the key in '" + path + "'"));
  return key;
}

Status MakeServer(zmq::socket_t& socket, const KeyPair& server, const std::string& zap_domain, bool enforce_zap,
                  bool* enforced) {
  LOOM_RETURN_IF_ERROR(CheckKey(server.secret_key, "the service's secret key"));
  if (enforced != nullptr) *enforced = false;
  try {
    socket.set(zmq::sockopt::curve_server, true);
    socket.set(zmq::sockopt::curve_secretkey, server.secret_key);
    if (!zap_domain.empty()) socket.set(zmq::sockopt::zap_domain, zap_domain);
  } catch (const zmq::error_t& e) {
    return Internal(std::string("cannot make a CURVE server socket: ") + e.what());
  }
  if (enforce_zap) {
    const int on = 1;
    const bool ok = zmq_setsockopt(socket.handle(), kZapEnforceDomain, &on, sizeof(on)) == 0;
    if (enforced != nullptr) *enforced = ok;
  }
  return Status::Ok();
}

Status MakeClient(zmq::socket_t& socket, const KeyPair& client, std::string_view server_public_key) {
  LOOM_RETURN_IF_ERROR(CheckKey(server_public_key, "the service's public key"));
  LOOM_RETURN_IF_ERROR(CheckKey(client.public_key, "the public key"));
  LOOM_RETURN_IF_ERROR(CheckKey(client.secret_key, "the secret key"));
  try {
    socket.set(zmq::sockopt::curve_serverkey, std::string(server_public_key));
    socket.set(zmq::sockopt::curve_publickey, client.public_key);
    socket.set(zmq::sockopt::curve_secretkey, client.secret_key);
  } catch (const zmq::error_t& e) {
    return Internal(std::string("cannot make a CURVE client socket: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace loom::curve
