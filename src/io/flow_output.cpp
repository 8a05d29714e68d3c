#include "moeflow/io/flow_output.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <iomanip>
#include <sstream>

#include "common/text.hpp"
#include "moeflow/version.hpp"

namespace moeflow::io {

std::string NowIso8601() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::ostringstream os;
  os << std::put_time(&utc, "%Y-%m-%dT%H:%M:%SZ");
  return os.str();
}

Group TrajectoryGroup(const Trajectory& trajectory) {
  Group group;
  group.name = "trajectory";
  const std::size_t rows = trajectory.time.size();
  group.datasets.push_back({"time", {rows}, trajectory.time, {{"description", std::string("time t (= η·steps for SGD)")}}});
  const std::vector<int> offsets = ObservableOffsets(trajectory.observables);
  for (std::size_t i = 0; i < trajectory.observables.size(); ++i) {
    const ObservableInfo& o = trajectory.observables[i];
    Dataset ds;
    ds.name = o.name;
    ds.shape = {rows};
    ds.attributes = {{"description", o.description}};
    if (o.is_matrix) {
      ds.shape = {rows, static_cast<std::size_t>(o.rows), static_cast<std::size_t>(o.cols)};
    } else if (o.size() > 1) {
      ds.shape = {rows, static_cast<std::size_t>(o.size())};
    }
    ds.data.reserve(rows * o.size());
    for (const Eigen::VectorXd& v : trajectory.values) {
      for (int j = 0; j < o.size(); ++j) ds.data.push_back(v[offsets[i] + j]);
    }
    group.datasets.push_back(std::move(ds));
  }
  return group;
}

// The order in which the events happened: 1 + the number of events strictly earlier (ties
// share a rank); 0 for an event that did not happen.
std::vector<std::int64_t> EventRanks(const std::vector<EventRecord>& events) {
  std::vector<std::int64_t> ranks(events.size(), 0);
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (!events[i].occurred) continue;
    ranks[i] = 1;
    for (const EventRecord& other : events) ranks[i] += other.occurred && other.time < events[i].time;
  }
  return ranks;
}

Group EventsGroup(const std::vector<EventRecord>& events) {
  Group group;
  group.name = "events";
  const std::vector<std::int64_t> ranks = EventRanks(events);
  for (std::size_t i = 0; i < events.size(); ++i) {
    const EventRecord& e = events[i];
    group.datasets.push_back({e.spec.name, {}, {e.time},
                              {{"value", e.value},
                               {"rank", ranks[i]},
                               {"occurred", std::int64_t{e.occurred}},
                               {"observable", e.spec.observable},
                               {"op", std::string(ToString(e.spec.comparison))},
                               {"threshold", e.spec.threshold},
                               {"relative", e.spec.relative},
                               {"reference", e.spec.reference},
                               {"stop", std::int64_t{e.spec.stop}}}});
  }
  return group;
}

Attributes RunAttributes(const std::string& kind, const ModelFile& model, const FlowSetup& setup,
                         const std::string& command_line) {
  return {
      {"kind", kind},
      {"model", model.ResolvedText()},
      {"model_source", model.SourceText()},
      {"model_file", model.Origin()},
      {"overrides", detail::Join(model.Overrides(), "\n")},
      {"command", command_line},
      {"version", std::string(Version())},
      {"created", NowIso8601()},
      {"d", static_cast<std::int64_t>(setup.d)},
      {"seed", static_cast<std::int64_t>(setup.seed)},
      {"t_end", setup.options.t_end},
  };
}

Group StagesGroup(const std::vector<StageRecord>& stages) {
  Group group;
  group.name = "stages";
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const StageRecord& s = stages[i];
    group.datasets.push_back({s.name, {}, {s.t_start},
                              {{"t_end", s.t_end},
                               {"ended_by", s.ended_by},
                               {"pruned", s.pruned},
                               {"index", static_cast<std::int64_t>(i)}}});
  }
  return group;
}

std::string StagesReport(const std::vector<StageRecord>& stages) {
  std::ostringstream os;
  if (stages.size() < 2) return {};
  os << std::setprecision(8);
  for (const StageRecord& s : stages) {
    os << "stage " << s.name << ": t = " << s.t_start << " -> " << s.t_end << " (" << s.ended_by << ")";
    if (!s.pruned.empty()) os << "; pruned: " << s.pruned;
    os << "\n";
  }
  return os.str();
}

Attributes OdeOutcomeAttributes(const RunSummary& summary) {
  return {
      {"termination", std::string(ToString(summary.termination))},
      {"message", summary.message},
      {"t_final", summary.t_final},
      {"accepted_steps", static_cast<std::int64_t>(summary.accepted_steps)},
      {"drift_evaluations", static_cast<std::int64_t>(summary.drift_evaluations)},
      {"projections", static_cast<std::int64_t>(summary.projections)},
      {"largest_projection", summary.largest_projection},
      {"wall_seconds", summary.wall_seconds},
  };
}

Group FlowResultFile(const ModelFile& model, const FlowSetup& setup, const RunSummary& summary,
                     const Trajectory& trajectory, const std::vector<StageRecord>& stages,
                     const std::string& command_line) {
  Group root;
  const IntegratorOptions& o = setup.options;
  root.attributes = RunAttributes("flow", model, setup, command_line);
  root.attributes.insert({
      {"stepper", std::string(ToString(o.stepper))},
      {"abs_tol", o.abs_tol},
      {"rel_tol", o.rel_tol},
      {"project", static_cast<std::int64_t>(o.project)},
  });
  root.attributes.merge(OdeOutcomeAttributes(summary));
  root.groups.push_back(TrajectoryGroup(trajectory));
  root.groups.push_back(EventsGroup(summary.events));
  root.groups.push_back(StagesGroup(stages));
  return root;
}

std::string FlowReport(const FlowSetup& setup, const RunSummary& summary, const Trajectory& trajectory,
                       const std::vector<StageRecord>& stages) {
  std::ostringstream os;
  os << std::setprecision(10);
  os << "outcome:        " << ToString(summary.termination) << " (" << summary.message << ")\n"
     << "d:              " << setup.d << "\n"
     << "stepper:        " << ToString(setup.options.stepper) << "  abs_tol " << setup.options.abs_tol
     << "  rel_tol " << setup.options.rel_tol << "\n"
     << "accepted steps: " << summary.accepted_steps << "  (drift evaluations " << summary.drift_evaluations
     << ", " << std::setprecision(3) << summary.wall_seconds * 1e3 << " ms)\n" << std::setprecision(10);
  if (summary.projections > 0) {
    os << "projections:    " << summary.projections << " steps ended outside the PSD cone by > abs_tol and were "
       << "projected back (largest change " << std::setprecision(3) << summary.largest_projection << ")\n"
       << std::setprecision(10);
  }
  for (const EventRecord& e : summary.events) {
    os << "event " << e.spec.name << ": ";
    if (e.occurred) {
      os << "t = " << e.time << "  (" << e.spec.observable << " = " << e.value << ")\n";
    } else {
      os << "did not happen (" << e.spec.observable << " " << ToString(e.spec.comparison) << " "
         << e.spec.threshold << ")\n";
    }
  }
  os << StagesReport(stages);
  const std::vector<std::int64_t> ranks = EventRanks(summary.events);
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] > 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&ranks](std::size_t a, std::size_t b) { return ranks[a] < ranks[b]; });
  if (order.size() > 1) {
    os << "event order:   ";
    for (std::size_t i : order) os << " " << summary.events[i].spec.name;
    os << "\n";
  }
  if (!trajectory.time.empty()) {
    const std::vector<int> offsets = ObservableOffsets(trajectory.observables);
    for (std::size_t i = 0; i < trajectory.observables.size(); ++i) {
      if (trajectory.observables[i].name != "risk") continue;
      os << "risk:           " << trajectory.values.front()[offsets[i]] << " at t = 0 -> "
         << trajectory.values.back()[offsets[i]] << " at t = " << trajectory.time.back() << "\n";
    }
  }
  return os.str();
}

Group VerifyResultFile(const ModelFile& model, const FlowSetup& setup, const Verification& verification,
                       const std::string& command_line) {
  Group root = FlowResultFile(model, setup, verification.summary, verification.trajectory, verification.stages,
                              command_line);
  root.attributes["kind"] = std::string("verify");
  root.attributes["all_passed"] = static_cast<std::int64_t>(verification.AllPassed());
  Group& checks = root.Subgroup("checks");
  const char* kinds[] = {"order", "before", "scaling", "bound", "final", "argmin"};
  for (const CheckResult& r : verification.results) {
    const double status = r.status == CheckStatus::kPass ? 1.0 : (r.status == CheckStatus::kFail ? 0.0 : -1.0);
    checks.datasets.push_back({r.spec.name, {}, {status},
                               {{"kind", std::string(kinds[static_cast<int>(r.spec.kind)])},
                                {"claim", r.spec.description},
                                {"set", detail::Join(r.spec.overrides, ", ")},
                                {"expected", r.expected},
                                {"measured", r.measured},
                                {"status", std::string(ToString(r.status))},
                                {"abnormal_runs", detail::Join(r.abnormal_runs, "\n")},
                                {"values", r.values}}});
  }
  return root;
}

std::string VerifyReport(const Verification& verification) {
  std::ostringstream os;
  int pass = 0, fail = 0, skip = 0;
  for (const CheckResult& r : verification.results) {
    os << ToString(r.status) << "  " << r.spec.name << (r.spec.description.empty() ? "" : ": " + r.spec.description)
       << "\n      expected: " << r.expected << "\n      measured: " << r.measured << "\n";
    pass += r.status == CheckStatus::kPass;
    fail += r.status == CheckStatus::kFail;
    skip += r.status == CheckStatus::kSkipped;
  }
  os << pass << " passed, " << fail << " failed, " << skip << " skipped\n";
  return os.str();
}

}  // namespace moeflow::io
