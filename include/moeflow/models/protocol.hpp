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
  // duplicates or redundant (both), with the cosine tolerance of its rule.
  std::string prune = "none";
  double prune_tolerance = 0.05;
  double prune_rms = 1e-3;  // negligible: the output RMS below which units are pruned
};

// What happened to one stage of a run.
struct StageRecord {
  std::string name;
  double t_start = 0.0, t_end = 0.0;
  std::string ended_by;  // "duration", "event NAME", "t_end", or the run's termination
  std::string pruned;    // what the stage's pruning removed ("" if none)
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
//   all         redundant, then negligible.
// Returns the new per-unit weights; `report` lists what was pruned.
std::vector<double> Prune(const TwoLayerFlow& flow, const Eigen::MatrixXd& gram, const std::string& rule,
                          double tolerance, double rms_tolerance, std::string* report);

// The stage of a run without [stage.NAME] sections: the student's own multipliers, no stop rule.
Stage WholeRunStage(const TwoLayerSpec& spec);

// The model a stage runs, for the ODE and SGD alike: `current` with the stage's pruning applied
// to the state `gram` (the Gram matrix of the model's vectors; Prune takes cosines) and the
// stage's learning rates. `pruned` says what was pruned ("" without a pruning rule).
TwoLayerFlow StageModel(const TwoLayerFlow& current, const Stage& stage, const Eigen::MatrixXd& gram,
                        std::string* pruned);

// Integrates the stages one after another from x0 (time runs on across stages; the run ends at
// options.t_end, at an event with stop = true, or after the last stage). Events are the
// model's: each is reported once, at its first occurrence in any stage. The trajectory rows
// are on options.output_times plus each stage's end.
RunSummary RunProtocol(const TwoLayerFlow& flow, const Eigen::VectorXd& x0, const IntegratorOptions& options,
                       const std::vector<EventSpec>& events, const std::vector<Stage>& stages,
                       Trajectory* trajectory, std::vector<StageRecord>* records,
                       const IntegrationControl& control = {});

}  // namespace moeflow
