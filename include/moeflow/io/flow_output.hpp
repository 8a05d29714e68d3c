// moeflow/io/flow_output.hpp
// The result of a flow run as a self-describing file (schema in README.md, "Output files"):
//   /                 attributes: kind, model (resolved text), model_source, model_file,
//                     overrides, command, version, created, d, seed, integrator options,
//                     termination, message, t_final, accepted_steps, drift_evaluations, project,
//                     projections, largest_projection, wall_seconds
//   /trajectory/time  (T)
//   /trajectory/<obs> (T), (T x n) or (T x rows x cols)
//   /stages/<name>    scalar: the stage's start time; attributes t_end, ended_by, index
//   /events/<name>    scalar: the event time (NaN if it did not happen); attributes value,
//                     occurred, observable, op, threshold, stop
// and a readable report of the same run.
#pragma once

#include <string>

#include "moeflow/integrate/integrator.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/io/record.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/verify/checks.hpp"

namespace moeflow::io {

// The current UTC time as 2026-11-25T17:00:00Z (the `created` attribute of result files).
std::string NowIso8601();
Group TrajectoryGroup(const Trajectory& trajectory);
// The attributes every result file's root carries: kind, model text and source, overrides,
// command, version, creation time, d, seed, t_end.
Attributes RunAttributes(const std::string& kind, const ModelFile& model, const FlowSetup& setup,
                         const std::string& command_line);
// 1 + the number of events strictly earlier (ties share a rank); 0 if it did not happen.
std::vector<std::int64_t> EventRanks(const std::vector<EventRecord>& events);
Group EventsGroup(const std::vector<EventRecord>& events);
// The outcome of one ODE run: termination, message, t_final, accepted_steps, drift_evaluations,
// projections, largest_projection, wall_seconds (a flow file's root, a compare file's ODE seeds).
Attributes OdeOutcomeAttributes(const RunSummary& summary);

// /stages/<name>: scalar start time; attributes t_end, ended_by, index (the order of the stages).
Group StagesGroup(const std::vector<StageRecord>& stages);

Group FlowResultFile(const ModelFile& model, const FlowSetup& setup, const RunSummary& summary,
                     const Trajectory& trajectory, const std::vector<StageRecord>& stages,
                     const std::string& command_line);

// A verify report: the model's run as in a flow file (kind = "verify"), plus
//   /checks/<name>   scalar status: 1 PASS, 0 FAIL, -1 SKIP; attributes kind, claim, expected,
//                    measured, values (the measured numbers), abnormal_runs
Group VerifyResultFile(const ModelFile& model, const FlowSetup& setup, const Verification& verification,
                       const std::string& command_line);
// The table: check, expected, measured, PASS/FAIL/SKIP.
std::string VerifyReport(const Verification& verification);

// A few lines for the terminal: outcome, steps, events, final risk.
std::string FlowReport(const FlowSetup& setup, const RunSummary& summary, const Trajectory& trajectory,
                       const std::vector<StageRecord>& stages = {});
// One line per stage, for protocols of more than one stage.
std::string StagesReport(const std::vector<StageRecord>& stages);

}  // namespace moeflow::io
