#include "test_util.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

namespace moeflow::testing {

double RelativeError(double actual, double expected) {
  const double scale = std::max(std::abs(expected), std::numeric_limits<double>::min());
  return std::abs(actual - expected) / scale;
}

std::string ModelPath(const std::string& file) { return std::string(MOEFLOW_MODELS_DIR) + "/" + file; }
std::string DataPath(const std::string& file) { return std::string(MOEFLOW_DATA_DIR) + "/" + file; }
std::string CliPath() { return MOEFLOW_CLI_PATH; }
std::string Python() { return MOEFLOW_PYTHON; }

namespace {
struct TempDirs {
  std::vector<std::string> dirs;
  ~TempDirs() {
    for (const auto& d : dirs) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
};
}  // namespace

std::string TempDir() {
  static TempDirs all;
  std::string pattern = (std::filesystem::temp_directory_path() / "moeflow-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) std::abort();
  all.dirs.push_back(pattern);
  return pattern;
}

int RunCommand(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> buffer{};
  std::size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output->append(buffer.data(), n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int RunPython(const std::string& script, std::string* output) {
  const std::string path = TempDir() + "/script.py";
  std::ofstream(path) << script;
  return RunCommand(Python() + " " + path, output);
}

UnitBlock Block(int units, LinkPtr link, double weight, LinkPtr gate) {
  UnitBlock b;
  b.units = units;
  b.link = std::move(link);
  b.weight = weight;
  b.gate = std::move(gate);
  return b;
}

}  // namespace moeflow::testing
