// moeflow/models/protocol.hpp
// Staged training protocols: a sequence of stages, each with the learning-rate multipliers of
// the student's blocks (0 freezes a block) and a stop rule — a duration, an event of the model,
// or whichever comes first. Model files declare them as [stage.NAME] sections, run in file
// order; without any, the run is one stage with the student's own multipliers. The same
// stages drive the ODE (RunProtocol) and SGD (SimulateSgd).
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "moeflow/integrate/integrator.hpp"
#include "moeflow/models/two_layer.hpp"

namespace moeflow {

struct Stage {
  std::string name = "run";
  double duration = std::numeric_limits<double>::infinity();  // stage length in time t
  std::string until;       // the stage ends when this event of the model has happened ("": none)
  double learning_rate = 1.0;         // multiplier of the student expert vectors
  double router_learning_rate = 1.0;  // multiplier of the student router vectors
  double weight_learning_rate = 1.0;  // multiplier of the trained second-layer weights
  // Pruning applied to the state when the stage starts (see Prune): none, cancelling,
  // duplicates, redundant (both), negligible, merge or all, with the cosine tolerance of its rule.
  std::string prune = "none";
  double prune_tolerance = 0.05;
  double prune_rms = 1e-3;  // negligible, merge: the largest change of the output RMS a pruning may make
};

// What happened to one stage of a run.
struct StageRecord {
  std::string name;
  double t_start = 0.0, t_end = 0.0;
  std::string ended_by;  // "duration", "event NAME", "t_end", or the run's termination
  std::string pruned;    // what the stage's pruning removed ("" if none)
};

// The result of pruning: the new per-unit weights and, when units were merged, the student
// vectors after it as combinations of those before, u'_a = Σ_b transform(a, b) u_b over the
// student vectors in the model's order (directions for normalised vectors); an empty transform
// leaves the vectors as they are.
struct Pruning {
  std::vector<double> weights;
  Eigen::MatrixXd transform;  // students() × students(), or empty
  std::string report;         // what was pruned, "nothing" if nothing
};

// Redundant student units, from the cosines of the current state (gram: the model's Gram
// matrix; vectors ordered as in TwoLayerFlow), by rule:
//   cancelling  units i, j with equal weights, router cosine ≥ 1 − tol (gated) and expert cosine
//               ≤ −(1 − tol), for an odd expert link (σ(−z) = −σ(z)): together they output ≈ 0;
//               both are pruned (weight 0);
//   duplicates  router and expert cosines ≥ 1 − tol: j is merged into i (w_i += w_j, w_j = 0);
//   redundant   cancelling, then duplicates;
//   negligible  units whose combined output E[(Σ_S a_i φ_i)²]^(1/2) ≤ rms_tolerance: each group of
//               units sharing a router (router cosines ≥ 1 − tol; e.g. several experts under one
//               gate whose outputs cancel), then single units; all pruned;
//   merge       each group of units sharing a gate's router (soft routing, unit vectors) whose
//               combined output one unit reproduces: Σ_S a_j π(v_j·x) σ(w_j·x) ≈ c π(v·x) σ(u·x)
//               with v the mean router direction and (c, u) the best rank-one part c u^⊗k of the
//               group's Hermite tensor Σ_S a_j w_j^⊗k at the link's lowest order k (e.g. four He_3
//               experts at ±36°, ±108° from w* sum to w*^⊗3); the group becomes its first unit,
//               with vectors u, v (combinations of the group's) and weight c if the second-layer
//               weights are trained, else its own weight (fixed weights stay in the model's
//               class), when the output RMS of the difference, computed exactly, is
//               ≤ rms_tolerance;
//   all         redundant, then negligible, then merge where it applies.
Pruning Prune(const TwoLayerFlow& flow, const Eigen::MatrixXd& gram, const std::string& rule, double tolerance,
              double rms_tolerance);

// True if the merge rule applies to the model: gated units with their own gates (not a top-k
// router), unit vectors (spherical or normalised), one neuron per expert.
bool MergeApplies(const TwoLayerSpec& spec);

// Ω with the student vectors replaced by transform · (student vectors) (empty: Ω).
Eigen::MatrixXd TransformStudents(const Eigen::MatrixXd& gram, const Eigen::MatrixXd& transform);

// The stage of a run without [stage.NAME] sections: the student's own multipliers, no stop rule.
Stage WholeRunStage(const TwoLayerSpec& spec);

// The model a stage runs, for the ODE and SGD alike: `current` with the stage's pruning applied
// to the state `gram` (the model's Gram matrix) and the stage's learning rates. `pruned` says
// what was pruned ("" without a pruning rule); `transform` is the pruning's change of the
// student vectors (Pruning::transform; empty if none), which the caller applies to its state.
TwoLayerFlow StageModel(const TwoLayerFlow& current, const Stage& stage, const Eigen::MatrixXd& gram,
                        std::string* pruned, Eigen::MatrixXd* transform);

// Integrates the stages one after another from x0 (time runs on across stages; the run ends at
// options.t_end, at an event with stop = true, or after the last stage). Events are the
// model's: each is reported once, at its first occurrence in any stage. The trajectory rows
// are on options.output_times plus each stage's end.
RunSummary RunProtocol(const TwoLayerFlow& flow, const Eigen::VectorXd& x0, const IntegratorOptions& options,
                       const std::vector<EventSpec>& events, const std::vector<Stage>& stages,
                       Trajectory* trajectory, std::vector<StageRecord>* records,
                       const IntegrationControl& control = {});

}  // namespace moeflow
