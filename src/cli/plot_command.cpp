// moeflow plot FILE [-o PNG] [--log-time]: a picture of a flow, sgd, compare, verify or sweep file.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/record.hpp"

extern char** environ;

namespace moeflow::cli {
namespace {

namespace po = boost::program_options;

po::options_description Options() {
  po::options_description opts("Options");
  opts.add_options()
      ("help,h", "show this help")
      ("output,o", po::value<std::string>(), "PNG to write (default: FILE with .png)")
      ("log-time", "logarithmic time axis (flow and sgd files)");
  return opts;
}

void PrintHelp() {
  std::cout << "Usage: moeflow plot FILE [-o PNG] [--log-time]\n\n"
               "Draws a moeflow result file:\n"
               "  flow     risk and the best cosines per teacher (m, m_router) against t, events as\n"
               "           vertical lines, stages shaded;\n"
               "  sgd      the same for every seed (thin) and the median over seeds (thick), with the\n"
               "           median event times;\n"
               "  compare  event times against d (ODE, SGD median and interquartile range, fitted\n"
               "           exponents) and the SGD-ODE overlap distance against d;\n"
               "  verify   the model's run as for flow, with each check's verdict and numbers;\n"
               "  sweep    the final risk against the first grid key, one line per value of the others,\n"
               "           each line's minimum marked; event times likewise.\n"
               "The picture is drawn by scripts/plot.py with Debian's python3-matplotlib (installed by\n"
               "scripts/install-deps.sh); set MOEFLOW_PLOT_SCRIPT to use another copy of the script.\n\n"
            << Options() << "\n"
            << "Exit status: 0 written, 1 the plotting failed, 2 bad input.\n";
}

int RunPlot(const Args& args) {
  const po::variables_map vm = ParseArguments(args, Options(), "file", "plot");
  if (vm.count("help")) {
    PrintHelp();
    return kExitOk;
  }
  if (!vm.count("file")) throw InputError("missing FILE: moeflow plot FILE [-o PNG] (see moeflow plot --help)");
  const std::string file = vm["file"].as<std::string>();
  if (!std::filesystem::is_regular_file(file)) ThrowBadValue("FILE", file, "must be an existing moeflow HDF5 file");
  const std::string output = vm.count("output") ? vm["output"].as<std::string>()
                                                : std::filesystem::path(file).replace_extension(".png").string();
  io::CheckWritable("--output", output, io::kPngSignature, "PNG");
  const char* env_script = std::getenv("MOEFLOW_PLOT_SCRIPT");
  const std::string script = env_script != nullptr ? env_script : MOEFLOW_PLOT_SCRIPT;
  if (!std::filesystem::is_regular_file(script)) {
    throw Error("the plotting script '" + script + "' is missing (set MOEFLOW_PLOT_SCRIPT to its path)");
  }
  const std::string python = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  std::vector<std::string> argv_strings = {python, script, file, "-o", output};
  if (vm.count("log-time")) argv_strings.push_back("--log-time");
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, python.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
    throw Error("cannot run " + python + " for the plot");
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status)) throw Error("the plotting script was killed");
  const int code = WEXITSTATUS(status);
  if (code == 2) return kExitInputError;
  if (code == 3) return kExitError;  // a Python module missing: the script has said which
  if (code != 0) {
    std::cerr << "moeflow plot: error: the plotting script " << script << " failed (exit " << code
              << ") on '" << file << "'; its Python error is above\n";
    return kExitError;
  }
  std::cout << "written: " << output << "\n";
  return kExitOk;
}

}  // namespace

int RunPlotCommand(const Args& args) { return RunPlot(args); }

}  // namespace moeflow::cli
