// Command-line parsing shared by the daemons: flags, then an optional YAML config file, then the
// flags again so that a flag always wins over the file.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "common/status.h"

namespace loom {

// Returns nullopt to go on, or the exit code to end the process with (after --help, a usage
// error or a bad config file). `config_file` is the variable bound to --config.
inline std::optional<int> ParseFlagsAndConfig(CLI::App& app, int argc, char** argv, const std::string& config_file,
                                              const std::function<Status(const std::string&)>& load) {
  try {
    app.parse(argc, argv);
    if (!config_file.empty()) {
      Status s = load(config_file);
      if (!s.ok()) {
        std::fprintf(stderr, "error: %s\n", s.message().c_str());
        return 2;
      }
      app.parse(argc, argv);
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return std::nullopt;
}

}  // namespace loom
