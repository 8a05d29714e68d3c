// The moeflow commands. Each is a thin translation layer: parse options with
// Boost.Program_options, call the library, print. No numerics live here.
#pragma once

#include <string>
#include <vector>

namespace moeflow::cli {

using Args = std::vector<std::string>;  // the arguments after the command name

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const Args& args);
};

// Exit codes shared by every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;        // I/O or internal failure
inline constexpr int kExitInputError = 2;   // bad model file, option or value
inline constexpr int kExitOutcome = 3;      // the run ended abnormally (diverged, NaN, ...)
inline constexpr int kExitCheckFailed = 4;   // moeflow verify: some check failed
inline constexpr int kExitInterrupted = 130;

const std::vector<Command>& AllCommands();

int RunFlowCommand(const Args& args);
int RunInspectCommand(const Args& args);
int RunHermiteCommand(const Args& args);
int RunSgdCommand(const Args& args);
int RunCompareCommand(const Args& args);
int RunPlotCommand(const Args& args);
int RunVerifyCommand(const Args& args);
int RunSweepCommand(const Args& args);

}  // namespace moeflow::cli
