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
};

// What happened to one stage of a run.
struct StageRecord {
  std::string name;
  double t_start = 0.0, t_end = 0.0;
  std::string ended_by;  // "duration", "event NAME", "t_end", or the run's termination
};

// Integrates the stages one after another from x0 (time runs on across stages; the run ends at
// options.t_end, at an event with stop = true, or after the last stage). Events are the
// model's: each is reported once, at its first occurrence in any stage. The trajectory rows
// are on options.output_times plus each stage's end.
RunSummary RunProtocol(const TwoLayerFlow& flow, const Eigen::VectorXd& x0, const IntegratorOptions& options,
                       const std::vector<EventSpec>& events, const std::vector<Stage>& stages,
                       Trajectory* trajectory, std::vector<StageRecord>* records,
                       const IntegrationControl& control = {});

}  // namespace moeflow
