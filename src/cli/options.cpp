#include "cli/options.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/record.hpp"

namespace moeflow::cli {

boost::program_options::variables_map ParseArguments(const Args& args,
                                                     const boost::program_options::options_description& visible,
                                                     const char* positional, const char* command) {
  namespace po = boost::program_options;
  po::options_description all;
  all.add(visible);
  po::positional_options_description positionals;
  if (positional != nullptr) {
    // A hidden option, unless a visible one has the name (hermite: LINK or --link LINK).
    if (visible.find_nothrow(positional, false) == nullptr) all.add_options()(positional, po::value<std::string>());
    positionals.add(positional, 1);
  }
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positionals).run(), vm);
    po::notify(vm);
  } catch (const po::unknown_option& e) {
    std::vector<std::string> names;
    for (const auto& option : visible.options()) names.push_back("--" + option->long_name());
    throw InputError(std::string(e.what()) + detail::DidYouMean(e.get_option_name(), names) + " (see moeflow " +
                     command + " --help)");
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + " (see moeflow " + command + " --help)");
  }
  return vm;
}

}  // namespace moeflow::cli

namespace moeflow::cli {

void PrintResolvedModel(const char* command, const std::string& model_path, const io::ModelFile& model,
                        const FlowSetup& setup) {
  std::cout << "# " << model_path << " resolved by moeflow " << command
            << " --dry-run: every key the run reads, defaults\n# included. State: " << setup.initial_state.size()
            << " order parameters at d = " << setup.d << ". Events: " << setup.events.size()
            << ". Stages: " << setup.stages.size() << ".\n"
            << model.ResolvedText();
}

std::string CommandLine(const char* command, const Args& args) {
  std::string line = std::string("moeflow ") + command;
  for (const std::string& a : args) line += " " + a;
  return line;
}

std::string OutputPath(const boost::program_options::variables_map& vm, const std::string& suffix) {
  const std::string path = vm.count("output")
                               ? vm["output"].as<std::string>()
                               : std::filesystem::path(vm["model"].as<std::string>()).stem().string() + suffix + ".h5";
  io::CheckWritable("--output", path);  // before the run, not after it
  return path;
}

io::ModelFile LoadModel(const boost::program_options::variables_map& vm, const char* command) {
  if (!vm.count("model")) {
    throw InputError(std::string("missing MODEL: moeflow ") + command + " MODEL ... (see moeflow " + command + " --help)");
  }
  io::ModelFile model = io::ModelFile::Load(vm["model"].as<std::string>());
  if (vm.count("set")) {
    for (const std::string& assignment : vm["set"].as<std::vector<std::string>>()) model.Set(assignment);
  }
  return model;
}

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void OnInterrupt(int) { g_interrupted.store(true); }
}  // namespace

const std::atomic<bool>* InstallInterruptHandler() {
  std::signal(SIGINT, OnInterrupt);
  std::signal(SIGTERM, OnInterrupt);
  return &g_interrupted;
}

bool ShowProgress(bool quiet) {
  if (quiet) return false;
  const char* force = std::getenv("MOEFLOW_PROGRESS");  // "1": also when stderr is not a terminal
  return isatty(STDERR_FILENO) || (force != nullptr && std::string(force) == "1");
}

int ResolveThreads(const boost::program_options::variables_map& vm) {
  const int threads = vm["threads"].as<int>();
  if (threads < 0) ThrowBadValue("--threads", std::to_string(threads), "must be >= 0 (0: one per core)");
  return threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::function<void(long long)> SgdProgressLine() {
  struct State {
    std::mutex mutex;
    long long steps = 0;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  };
  auto state = std::make_shared<State>();
  return [state](long long steps) {
    const std::lock_guard<std::mutex> lock(state->mutex);
    state->steps += steps;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - state->start).count();
    std::fprintf(stderr, "\r  %lld SGD steps, %.3g steps/s, %.0f s", state->steps,
                 static_cast<double>(state->steps) / std::max(seconds, 1e-9), seconds);
    std::fflush(stderr);
  };
}

void ClearProgressLine() { std::fprintf(stderr, "\r%80s\r", ""); }

}  // namespace moeflow::cli
