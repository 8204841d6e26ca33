// CommandRunner: runs a scheduler's command-line tool (sbatch, squeue, qsub, ...) and returns
// what it printed. Providers take one, so unit tests hand them a fake that replays recorded
// outputs; SystemCommandRunner runs the real programs.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace loom::endpoint {

struct CommandOutput {
  int exit_code = 0;  // 128+N when killed by signal N
  std::string out;
  std::string err;
};

class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  // Runs argv[0] (looked up in PATH) with `argv`. An error only when the program could not be
  // run or did not finish within `timeout` (then it is killed); a non-zero exit is an output.
  virtual Result<CommandOutput> Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) = 0;
};

// fork/exec with stdout and stderr captured (each up to 4 MiB) and stdin from /dev/null.
// Thread-compatible: concurrent calls are fine, each waits for its own child only.
class SystemCommandRunner final : public CommandRunner {
 public:
  Result<CommandOutput> Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) override;
};

// "sbatch --parsable /x/y.sh" for messages: the words, the ones with spaces or quotes quoted.
std::string DescribeCommand(const std::vector<std::string>& argv);
// `s` without leading and trailing whitespace (tools' outputs end in newlines).
std::string TrimSpace(const std::string& s);
// `word` quoted for a POSIX shell (single quotes), or as is when it needs none.
std::string ShellQuote(const std::string& word);

}  // namespace loom::endpoint
