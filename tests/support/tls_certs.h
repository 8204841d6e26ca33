// Self-signed TLS certificates for tests of HTTPS and gRPC over TLS: made at run time with the
// openssl command-line tool, never checked in, valid for two days.
//
//   auto tls = loom::testing::MakeSelfSignedCert(dir.path());
//   server: tls->cert_file, tls->key_file;  client: trust tls->ca_file (the certificate itself)
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace loom::testing {

struct TlsFiles {
  std::string cert_file;  // PEM certificate
  std::string key_file;   // PEM private key (EC P-256, unencrypted)
  std::string ca_file;    // what a client trusts: the self-signed certificate itself
  std::string cert_pem;   // the contents of cert_file (gRPC's credentials take PEM strings)
  std::string key_pem;    // the contents of key_file
};

struct CertOptions {
  std::string common_name = "127.0.0.1";
  // subjectAltName entries; clients check the host they dialled against these.
  std::vector<std::string> alt_names = {"IP:127.0.0.1", "DNS:localhost"};
  std::string file_prefix = "tls";  // files are <dir>/<prefix>.crt and <dir>/<prefix>.key
};

// Writes a new key and self-signed certificate into `dir` (which must exist). UNAVAILABLE,
// with openssl's output, when openssl is missing or fails.
Result<TlsFiles> MakeSelfSignedCert(const std::string& dir, const CertOptions& options = {});

}  // namespace loom::testing
