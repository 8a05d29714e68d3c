// Shared helpers for the tests: paths and a named relative-error comparison.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <Eigen/Dense>

#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/two_layer.hpp"

namespace moeflow::testing {

// |actual - expected| / max(|expected|, tiny): the one relative-error formula of the tests.
double RelativeError(double actual, double expected);

std::string ModelPath(const std::string& file);  // models/<file>
std::string DataPath(const std::string& file);   // data/<file>
std::string CliPath();                           // the built moeflow executable
std::string Python();                            // the python3 that has h5py (Debian's)

// A fresh empty temporary folder, removed at exit.
std::string TempDir();

// Runs a shell command; returns its exit status and stores stdout+stderr in *output.
int RunCommand(const std::string& command, std::string* output);

// Writes `script` to a temporary file and runs it with Python(); like RunCommand.
int RunPython(const std::string& script, std::string* output);

// A model built from INI text (`text`) or from models/<file>, with `KEY=VALUE` overrides applied
// in order (as `moeflow flow --set`).
FlowSetup BuildFromText(const std::string& text, const std::vector<std::string>& overrides = {});
FlowSetup BuildFromFile(const std::string& file, const std::vector<std::string>& overrides = {});

// A small cluster MoE (d = 40, seed 5, 2 clusters at ρ = 3 with global signs ±1, teachers h3 on
// w*_1, w*_2, w*_g) whose student has `experts` experts of 2 h3 neurons and a softmax router at
// temperature 0.3 (top_k = experts).
std::string SoftmaxClusterMoeText(int experts);

// The tangent gradient overlaps D_ab − D_aa Ω_ab for the rows a of D (the students, p × n): what
// spherical gradient flow uses. The backends may differ in the radial part of D
// (multiples of the student's own row of Ω), which the spherical projection removes.
Eigen::MatrixXd Tangent(const Eigen::MatrixXd& d, const Eigen::MatrixXd& gram);
Eigen::MatrixXd Tangent(const TwoLayerFlow& flow, const Eigen::MatrixXd& gram);  // of flow.GradientOverlaps

// One estimate of the population risk and of D (any shape) from one independent point set.
struct PointEstimate {
  double risk = 0;
  Eigen::MatrixXd d;
};

// The statistical check of the point backends against a reference: the mean of `sets` independent
// estimates (`estimate(s)` for s = 0..sets−1) lies within 5 standard errors of the mean (estimated
// from the sets' spread) of the reference, for the risk and for every entry of D; gtest failures
// name the entry, the reference and the estimate. Returns the risk's standard error of the mean.
double ExpectWithinFiveStandardErrors(const std::string& reference, double risk, const Eigen::MatrixXd& d, int sets,
                                      const std::function<PointEstimate(int)>& estimate);

// A block of `units` units with one link, weight and optional gate (the other members default).
UnitBlock Block(int units, LinkPtr link, double weight, LinkPtr gate = nullptr);

}  // namespace moeflow::testing
