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
#include "moeflow/models/protocol.hpp"
#include "moeflow/models/two_layer.hpp"
#include "moeflow/sgd/simulator.hpp"
#include "moeflow/verify/checks.hpp"

namespace moeflow {

// How the student starts (keys student.init, m0, q0, norm, routers_orthogonal): everything
// but the seed, so that every seed of a sweep draws its own overlaps by the same routine.
struct InitialOverlaps {
  // student.init: uniform (every overlap m0, q0), random (seeded N(0, I_d/d)), informed (unit i
  // overlaps m0 with teacher unit i mod k, experts with experts and routers with routers, q0
  // between students), explicit (student.M and student.Q as given).
  std::string kind = "uniform";
  Eigen::MatrixXd explicit_gram;  // explicit: the whole Gram matrix
  double m0 = 0.0, q0 = 0.0;
  double norm = 1.0;    // initial ‖w_i‖ (free vectors)
  bool routers_orthogonal = false;
  int students = 0, teachers = 0;            // vectors
  int student_units = 0, teacher_units = 0;  // units (gated: two vectors each)
  long long d = 0;
  // The teachers' overlaps (teachers × teachers; empty: orthonormal). A random student has
  // N(0, 1/d) coordinates on an orthonormal basis of the teachers' span, so its overlaps with
  // teachers t_l = Σ_m C_lm e_m (T = C Cᵀ) are those coordinates times Cᵀ; the other kinds give
  // the overlaps themselves.
  Eigen::MatrixXd teacher_gram;
};

// The initial Gram matrix of all vectors (students first, then teachers) for `seed`.
Eigen::MatrixXd MakeInitialGram(const InitialOverlaps& init, std::uint64_t seed);

struct FlowSetup {
  std::unique_ptr<TwoLayerFlow> system;
  Eigen::VectorXd initial_state;
  Eigen::MatrixXd initial_gram;  // all vectors: students first, then teachers (for `seed`)
  InitialOverlaps init;
  SgdOptions sgd;  // the [sgd] section (learning_rate 0 if the model gives none)
  IntegratorOptions options;
  std::vector<EventSpec> events;
  std::vector<Stage> stages;  // at least one
  std::vector<CheckSpec> checks;  // [check.NAME] sections (moeflow verify)
  long long d = 0;
  std::uint64_t seed = 0;
};

// Reads and validates every key; rejects keys the model does not use. Throws InputError.
FlowSetup BuildFlow(const io::ModelFile& model);

// Throws InputError if SGD cannot run this model: its [sgd] options, d against the model's
// vectors, the memory of the d-dimensional arrays (SgdOptions::Validate). The check of every
// command that runs SGD, before it runs.
void ValidateSgd(const FlowSetup& setup);

// The model's SGD for `seeds` seeds (seed, seed + 1, ...), each started from its own initial
// overlaps, on `threads` threads: what `sgd`, `compare`, `sweep` and `verify` run. Validates the
// [sgd] options first (InputError).
std::vector<SgdRun> SimulateModelSgd(const FlowSetup& setup, int seeds, int threads, const SgdControl& control = {});

// Initial overlaps of p students drawn as w_i ~ N(0, I_d/d) and projected on the unit sphere,
// against k orthonormal teachers, sampled exactly in O(p^2 + pk) time without forming the
// d-dimensional vectors: the teacher coordinates are Gaussian and the Gram matrix of the
// components orthogonal to the teachers is Wishart(d - k), drawn by Bartlett's decomposition.
Eigen::MatrixXd SampleInitialGram(int p, int k, long long d, std::uint64_t seed);

}  // namespace moeflow
