// moeflow/models/model_builder.hpp
// From a model file to what the integrator needs: the flow system, its initial state, the
// integrator options and the events. Every key is read here, with its default and its rule.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <memory>
#include <vector>

#include "moeflow/integrate/flow_system.hpp"
#include "moeflow/integrate/integrator.hpp"
#include "moeflow/io/model_file.hpp"

namespace moeflow {

struct FlowSetup {
  std::unique_ptr<FlowSystem> system;
  Eigen::VectorXd initial_state;
  Eigen::MatrixXd initial_gram;  // all vectors: students first, then teachers
  IntegratorOptions options;
  std::vector<EventSpec> events;
  long long d = 0;
  std::uint64_t seed = 0;
};

// Reads and validates every key; rejects keys the model does not use. Throws InputError.
FlowSetup BuildFlow(const io::ModelFile& model);

// Initial overlaps of p students drawn as w_i ~ N(0, I_d/d) and projected on the unit sphere,
// against k orthonormal teachers, sampled exactly in O(p^2 + pk) time without forming the
// d-dimensional vectors: the teacher coordinates are Gaussian and the Gram matrix of the
// components orthogonal to the teachers is Wishart(d - k), drawn by Bartlett's decomposition.
Eigen::MatrixXd SampleInitialGram(int p, int k, long long d, std::uint64_t seed);

}  // namespace moeflow
