// Files that hold secrets (CURVE secret keys, bearer tokens): written with mode 0600 and
// atomically, so that no reader ever sees a partial file and no other user ever sees it at all.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace loom {

// Writes `content` to `path` with mode 0600: into a temporary file in the same directory
// (created 0600 by mkstemp, written and fsynced), then moved into place. Missing parent
// directories are created with mode 0700.
// With `replace` false, an existing `path` is left alone and ALREADY_EXISTS is returned (the
// file is linked into place, which fails instead of overwriting: two processes creating the
// same file at once end with one winner and the other reading the winner's file).
Status WriteSecretFile(const std::string& path, std::string_view content, bool replace);

// $XDG_STATE_HOME/loom/<relative> ($HOME/.local/state/loom/... without it): where a daemon keeps
// its keys and state on this host unless told otherwise.
std::string DefaultStatePath(std::string_view relative);

// Reads a whole file written by WriteSecretFile. NOT_FOUND when it does not exist;
// PERMISSION_DENIED, saying how to fix it, when group or others may read or write it.
Result<std::string> ReadSecretFile(const std::string& path);

}  // namespace loom
