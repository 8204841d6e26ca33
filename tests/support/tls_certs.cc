#include "tests/support/tls_certs.h"

#include <sys/wait.h>

#include <filesystem>

#include "common/subprocess.h"
#include "common/util.h"

namespace loom::testing {

Result<TlsFiles> MakeSelfSignedCert(const std::string& dir, const CertOptions& options) {
  namespace fs = std::filesystem;
  TlsFiles t;
  t.cert_file = (fs::path(dir) / (options.file_prefix + ".crt")).string();
  t.key_file = (fs::path(dir) / (options.file_prefix + ".key")).string();
  t.ca_file = t.cert_file;
  const std::string log = (fs::path(dir) / (options.file_prefix + ".openssl.log")).string();
  std::string alt = "subjectAltName=";
  for (size_t i = 0; i < options.alt_names.size(); ++i) alt += (i ? "," : "") + options.alt_names[i];
  std::vector<std::string> argv = {"openssl",
                                   "req",
                                   "-x509",
                                   "-newkey",
                                   "ec",
                                   "-pkeyopt",
                                   "ec_paramgen_curve:prime256v1",
                                   "-nodes",
                                   "-days",
                                   "2",
                                   "-subj",
                                   "/CN=" + options.common_name,
                                   "-keyout",
                                   t.key_file,
                                   "-out",
                                   t.cert_file};
  if (!options.alt_names.empty()) argv.insert(argv.end(), {"-addext", alt});
  SpawnOptions so;
  so.log_path = log;
  LOOM_ASSIGN_OR_RETURN(auto proc, Subprocess::Spawn(argv, so));
  const auto status = proc.Wait(std::chrono::seconds(60));
  if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return Unavailable("openssl req failed (" + (status ? DescribeWaitStatus(*status) : std::string("timed out")) +
                       "): " + ReadFileOrEmpty(log));
  }
  t.cert_pem = ReadFileOrEmpty(t.cert_file);
  t.key_pem = ReadFileOrEmpty(t.key_file);
  if (t.cert_pem.empty() || t.key_pem.empty()) return Unavailable("openssl wrote no certificate or key into " + dir);
  return t;
}

}  // namespace loom::testing
