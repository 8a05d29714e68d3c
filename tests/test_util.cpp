#include "test_util.hpp"

#include <gtest/gtest.h>
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

#include "moeflow/io/model_file.hpp"

namespace moeflow::testing {

double RelativeError(double actual, double expected) {
  const double scale = std::max(std::abs(expected), std::numeric_limits<double>::min());
  return std::abs(actual - expected) / scale;
}

FlowSetup BuildFromText(const std::string& text, const std::vector<std::string>& overrides) {
  io::ModelFile model = io::ModelFile::Parse(text, "test model");
  for (const std::string& o : overrides) model.Set(o);
  return BuildFlow(model);
}

FlowSetup BuildFromFile(const std::string& file, const std::vector<std::string>& overrides) {
  io::ModelFile model = io::ModelFile::Load(ModelPath(file));
  for (const std::string& o : overrides) model.Set(o);
  return BuildFlow(model);
}

std::string SoftmaxClusterMoeText(int experts) {
  return "d = 40\nseed = 5\n[clusters]\ncount = 2\nscale = 3\nglobal_signs = 1, -1\n"
         "[teacher]\nunits = 3\nlinks = h(3), h(3), h(3)\n[student]\nunits = " +
         std::to_string(experts) + "\nneurons = 2\nlink = h(3)\ntop_k = " + std::to_string(experts) +
         "\nrouter_weights = softmax\ntemperature = 0.3\ninit = random\n";
}

Eigen::MatrixXd Tangent(const Eigen::MatrixXd& d, const Eigen::MatrixXd& gram) {
  Eigen::MatrixXd t = d;
  for (int a = 0; a < t.rows(); ++a) t.row(a) -= d(a, a) * gram.row(a);
  return t;
}

Eigen::MatrixXd Tangent(const TwoLayerFlow& flow, const Eigen::MatrixXd& gram) {
  return Tangent(flow.GradientOverlaps(gram).topRows(flow.students()), gram);
}

double ExpectWithinFiveStandardErrors(const std::string& reference, double risk, const Eigen::MatrixXd& d, int sets,
                                      const std::function<PointEstimate(int)>& estimate) {
  std::vector<PointEstimate> e;
  for (int s = 0; s < sets; ++s) {
    e.push_back(estimate(s));
    EXPECT_EQ(e.back().d.rows(), d.rows());
    EXPECT_EQ(e.back().d.cols(), d.cols());
    if (e.back().d.rows() != d.rows() || e.back().d.cols() != d.cols()) return 0;
  }
  auto check = [&](const std::string& what, double truth, const std::function<double(const PointEstimate&)>& get) {
    double mean = 0, squares = 0;
    for (const PointEstimate& x : e) mean += get(x) / sets;
    for (const PointEstimate& x : e) squares += (get(x) - mean) * (get(x) - mean);
    const double se = std::sqrt(squares / (sets - 1) / sets);
    EXPECT_LE(std::abs(mean - truth), 5 * se + 1e-14)
        << what << ": " << reference << " " << truth << ", point sets " << mean << " ± " << se;
    return se;
  };
  const double se = check("risk", risk, [](const PointEstimate& x) { return x.risk; });
  for (Eigen::Index a = 0; a < d.rows(); ++a) {
    for (Eigen::Index b = 0; b < d.cols(); ++b) {
      check("D(" + std::to_string(a) + "," + std::to_string(b) + ")", d(a, b),
            [a, b](const PointEstimate& x) { return x.d(a, b); });
    }
  }
  return se;
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
