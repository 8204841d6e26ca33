#include "common/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace loom {

namespace fs = std::filesystem;

namespace {

std::string Errno() { return std::strerror(errno); }

// Creates the missing directories of `dir` with mode 0700 (existing ones keep theirs).
Status MakePrivateDirs(const fs::path& dir) {
  if (dir.empty()) return Status::Ok();
  fs::path partial;
  for (const auto& part : dir) {
    partial /= part;
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
      return Internal("cannot create directory '" + partial.string() + "': " + Errno());
    }
  }
  return Status::Ok();
}

}  // namespace

Status WriteSecretFile(const std::string& path, std::string_view content, bool replace) {
  const fs::path target(path);
  LOOM_RETURN_IF_ERROR(MakePrivateDirs(target.parent_path()));
  std::string tmp = (target.parent_path() / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);  // mode 0600
  if (fd < 0) return Internal("cannot create a temporary file next to '" + path + "': " + Errno());
  struct Cleanup {
    const std::string& tmp;
    ~Cleanup() { ::unlink(tmp.c_str()); }  // after a rename it is gone: harmless
  } cleanup{tmp};
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = Errno();
      ::close(fd);
      return Internal("cannot write '" + tmp + "': " + why);
    }
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, 0600) != 0 || ::fsync(fd) != 0) {
    const std::string why = Errno();
    ::close(fd);
    return Internal("cannot write '" + tmp + "': " + why);
  }
  ::close(fd);
  if (replace) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) return Internal("cannot rename to '" + path + "': " + Errno());
  } else if (::link(tmp.c_str(), path.c_str()) != 0) {
    if (errno == EEXIST) return AlreadyExists("'" + path + "' already exists");
    return Internal("cannot create '" + path + "': " + Errno());
  }
  return Status::Ok();
}

std::string DefaultStatePath(std::string_view relative) {
  const char* state = std::getenv("XDG_STATE_HOME");
  const char* home = std::getenv("HOME");
  const fs::path base = state != nullptr && *state != '\0' ? fs::path(state)
                        : home != nullptr                  ? fs::path(home) / ".local" / "state"
                                                           : fs::temp_directory_path();
  return (base / "loom" / relative).string();
}

Result<std::string> ReadSecretFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("'" + path + "' does not exist");
    return PermissionDenied("cannot open '" + path + "': " + Errno());
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string why = Errno();
    ::close(fd);
    return Internal("cannot stat '" + path + "': " + why);
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return PermissionDenied("'" + path + "' holds a secret but other users may access it (mode " + mode +
                            "); run `chmod 600 " + path + "`");
  }
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = Errno();
      ::close(fd);
      return Internal("cannot read '" + path + "': " + why);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace loom
