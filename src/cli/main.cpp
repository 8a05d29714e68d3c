// moeflow: population gradient flow and SGD of two-layer networks and mixtures of experts.
#include <cstring>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/version.hpp"

namespace moeflow::cli {

const std::vector<Command>& AllCommands() {
  static const std::vector<Command> commands = {
      {"flow", "integrate a model's population gradient flow (ODE over order parameters)", RunFlowCommand},
      {"sgd", "run finite-d SGD on a model over seeds (same observables, events and layout)", RunSgdCommand},
      {"compare", "ODE vs SGD event times over a list of d, with log-log exponents", RunCompareCommand},
      {"verify", "check a model's claims ([check.NAME]: event order, scaling in d, bounds)", RunVerifyCommand},
      {"sweep", "run a model over a grid of key values (ODE and/or SGD), resumable, one table", RunSweepCommand},
      {"plot", "draw a flow, sgd, compare, verify or sweep file to a PNG (matplotlib)", RunPlotCommand},
      {"inspect", "print a readable summary of a moeflow HDF5 file", RunInspectCommand},
      {"hermite", "print the Hermite coefficients of a link, E[f^2], the tail, the information exponent", RunHermiteCommand},
  };
  return commands;
}

namespace {

void PrintUsage(std::ostream& os) {
  os << "moeflow " << Version() << ": population gradient flow (ODE over order parameters) and\n"
     << "finite-d SGD of teacher-student two-layer networks and mixtures of experts.\n\n"
     << "Usage: moeflow COMMAND [options]     (moeflow COMMAND --help for its options)\n\n"
     << "Commands:\n";
  for (const Command& c : AllCommands()) {
    os << "  " << c.name << std::string(10 - std::strlen(c.name), ' ') << c.summary << "\n";
  }
  os << "\nExit status: 0 success, 1 error, 2 bad input, 3 run ended abnormally "
        "(diverged, NaN, step-size underflow), 4 a verify check failed, 130 interrupted.\n";
}

}  // namespace
}  // namespace moeflow::cli

int main(int argc, char** argv) {
  using namespace moeflow::cli;
  if (argc < 2) {
    PrintUsage(std::cerr);
    return kExitInputError;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    PrintUsage(std::cout);
    return kExitOk;
  }
  if (name == "--version") {
    std::cout << "moeflow " << moeflow::Version() << "\n";
    return kExitOk;
  }
  for (const Command& c : AllCommands()) {
    if (name != c.name) continue;
    try {
      return c.run(Args(argv + 2, argv + argc));
    } catch (const moeflow::InputError& e) {
      std::cerr << "moeflow " << name << ": error: " << e.what() << "\n";
      return kExitInputError;
    } catch (const std::bad_alloc&) {
      std::cerr << "moeflow " << name
                << ": error: out of memory: the run needs more memory than this machine gives it (the usual "
                   "causes: a large sgd.samples times d, output.every_step on a long run, or many runs in "
                   "parallel: fewer --threads); the output file was not written\n";
      return kExitError;
    } catch (const std::exception& e) {
      std::cerr << "moeflow " << name << ": error: " << e.what() << "\n";
      return kExitError;
    }
  }
  std::vector<std::string> names;
  for (const Command& c : AllCommands()) names.push_back(c.name);
  std::cerr << "moeflow: unknown command '" << name << "'" << moeflow::detail::DidYouMean(name, names)
            << " (see moeflow --help)\n";
  return kExitInputError;
}
