// moeflow compare MODEL --d LIST [--seeds S] [--threads T] [-o OUT]: ODE vs SGD event times.
#include <boost/program_options.hpp>
#include <cmath>
#include <iostream>
#include <sstream>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/io/sgd_output.hpp"
#include "moeflow/sgd/compare.hpp"

namespace moeflow::cli {
namespace {

namespace po = boost::program_options;

po::options_description Options() {
  po::options_description opts("Options");
  opts.add_options()
      ("help,h", "show this help")
      ("d", po::value<std::string>(), "comma-separated dimensions, e.g. --d 250,1000,4000 (required)")
      ("seeds", po::value<int>()->default_value(8), "SGD seeds per d: seed, seed+1, ...")
      ("threads,j", po::value<int>()->default_value(0), "threads (0: one per core); results do not depend on it")
      ("output,o", po::value<std::string>(), "HDF5 file (default: <model name>_compare.h5)")
      ("set,s", po::value<std::vector<std::string>>()->composing(), "override a model key; KEY= (empty) removes it (repeatable)")
      ("quiet,q", "print nothing but errors");
  return opts;
}

void PrintHelp() {
  std::cout << "Usage: moeflow compare MODEL --d LIST [--seeds S] [--threads T] [-o OUT]\n\n"
               "For each d: runs the model's SGD (see moeflow sgd --help) for S seeds and, for each seed,\n"
               "the population ODE from that seed's own initial overlaps, on the SGD run's time grid\n"
               "(seeds with the same initial overlaps, as from a uniform or explicit start, share one ODE run).\n"
               "Prints every event's time (ODE median over seeds, SGD median and interquartile range,\n"
               "relative gap, SGD steps), the sup-norm distance between the SGD and ODE overlaps\n"
               "(per seed, the sup over t; its median over seeds), and the log-log exponents of the event times\n"
               "and of that distance against d; writes all of it, with every run, to HDF5.\n\n"
            << Options() << "\n"
            << "Exit status: 0 done, 1 error, 2 bad input, 130 interrupted (nothing written).\n";
}

std::vector<long long> ParseDimensions(const std::string& text) {
  std::vector<long long> dims;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto v = io::ParseNumber(item);
    if (!v || *v < 1 || *v != std::floor(*v) || *v > 1e12) {
      ThrowBadValue("--d", text, "must be a comma-separated list of integers in [1, 1e12] (e.g. 250,1000,4000)");
    }
    dims.push_back(static_cast<long long>(*v));
  }
  if (dims.empty()) ThrowBadValue("--d", text, "must list at least one dimension");
  return dims;
}

int RunCompare(const Args& args) {
  const po::variables_map vm = ParseArguments(args, Options(), "model", "compare");
  if (vm.count("help")) {
    PrintHelp();
    return kExitOk;
  }
  const io::ModelFile model = LoadModel(vm, "compare");
  if (!vm.count("d")) throw InputError("compare: missing --d LIST (see moeflow compare --help)");
  CompareOptions options;
  options.dimensions = ParseDimensions(vm["d"].as<std::string>());
  options.seeds = vm["seeds"].as<int>();
  options.threads = ResolveThreads(vm);
  options.control.interrupt = InstallInterruptHandler();
  const bool quiet = vm.count("quiet") > 0;
  if (ShowProgress(quiet)) options.control.progress = SgdProgressLine();
  const std::string model_path = vm["model"].as<std::string>();
  const std::string output = OutputPath(vm, "_compare");
  const OdeSgdComparison comparison = CompareOdeSgd(model, options);
  if (options.control.progress) ClearProgressLine();
  if (options.control.interrupt->load() || comparison.dimensions.size() != options.dimensions.size()) {
    std::cerr << "moeflow compare: interrupted; nothing written\n";
    return kExitInterrupted;
  }
  io::WriteFileAtomically(output, io::CompareResultFile(model, comparison, options.seeds, CommandLine("compare", args)));
  if (!quiet) std::cout << "model:    " << model_path << "\n" << io::CompareReport(comparison) << "written:  " << output << "\n";
  return kExitOk;
}

}  // namespace

int RunCompareCommand(const Args& args) { return RunCompare(args); }

}  // namespace moeflow::cli
