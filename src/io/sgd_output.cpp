#include "moeflow/io/sgd_output.hpp"

#include <iomanip>
#include <sstream>

#include "moeflow/io/flow_output.hpp"
#include "moeflow/sgd/statistics.hpp"

namespace moeflow::io {
namespace {

std::vector<double> EventTimes(const std::vector<SgdRun>& runs, std::size_t event) {
  std::vector<double> times;
  for (const SgdRun& r : runs) times.push_back(r.summary.events[event].time);
  return times;
}

double FinalRisk(const SgdRun& run) {
  if (run.trajectory.values.empty()) return std::numeric_limits<double>::quiet_NaN();
  return ObservableSelector("risk", run.trajectory.observables, "risk").Evaluate(run.trajectory.values.back());
}

}  // namespace

Group SgdSeedGroup(const SgdRun& run) {
  Group group;
  group.name = "seed_" + std::to_string(run.seed);
  group.attributes = {
      {"seed", static_cast<std::int64_t>(run.seed)},
      {"termination", std::string(ToString(run.summary.termination))},
      {"message", run.summary.message},
      {"t_final", run.summary.t_final},
      {"steps", static_cast<std::int64_t>(run.summary.accepted_steps)},
      {"wall_seconds", run.summary.wall_seconds},
  };
  Group trajectory = TrajectoryGroup(run.trajectory);
  trajectory.datasets.insert(trajectory.datasets.begin() + 1,
                             Dataset{"steps", {run.steps.size()}, run.steps, {{"description", std::string("SGD steps")}}});
  group.groups.push_back(std::move(trajectory));
  group.groups.push_back(EventsGroup(run.summary.events));
  group.groups.push_back(StagesGroup(run.stages));
  const Eigen::MatrixXd& g = run.initial_gram;
  Dataset gram{"initial_gram", {static_cast<std::size_t>(g.rows()), static_cast<std::size_t>(g.cols())}, {}, {}};
  for (Eigen::Index i = 0; i < g.rows(); ++i) {
    for (Eigen::Index j = 0; j < g.cols(); ++j) gram.data.push_back(g(i, j));
  }
  group.datasets.push_back(std::move(gram));
  return group;
}

Group SgdResultFile(const ModelFile& model, const FlowSetup& setup, const std::vector<SgdRun>& runs,
                    const std::string& command_line) {
  Group root;
  root.attributes = RunAttributes("sgd", model, setup, command_line);
  std::vector<double> seeds;
  for (const SgdRun& r : runs) seeds.push_back(static_cast<double>(r.seed));
  root.attributes.insert({
      {"learning_rate", setup.sgd.learning_rate},
      {"batch", static_cast<std::int64_t>(setup.sgd.batch)},
      {"samples", static_cast<std::int64_t>(setup.sgd.samples)},
      {"test_samples", static_cast<std::int64_t>(setup.sgd.test_samples)},
      {"engine", std::string(ToString(setup.sgd.ResolvedEngine()))},
      {"event_resolution", setup.sgd.event_resolution},
      {"seeds", seeds},
  });
  for (const SgdRun& r : runs) root.groups.push_back(SgdSeedGroup(r));
  Group& stats = root.Subgroup("event_statistics");
  for (std::size_t e = 0; e < setup.events.size(); ++e) {
    const TimeStatistics s = Summarise(EventTimes(runs, e));
    stats.datasets.push_back({setup.events[e].name, {}, {s.median},
                              {{"q25", s.q25}, {"q75", s.q75}, {"runs", std::int64_t{s.runs}},
                               {"occurred", std::int64_t{s.occurred}}, {"observable", setup.events[e].observable}}});
  }
  return root;
}

std::string SgdReport(const FlowSetup& setup, const std::vector<SgdRun>& runs) {
  std::ostringstream os;
  os << std::setprecision(6);
  os << "d:              " << setup.d << "\n"
     << "SGD:            eta " << setup.sgd.learning_rate << ", batch " << setup.sgd.batch << ", "
     << (setup.sgd.samples > 0 ? "multi-pass over " + std::to_string(setup.sgd.samples) + " samples" : std::string("online"))
     << ", engine " << ToString(setup.sgd.ResolvedEngine()) << "\n";
  for (const SgdRun& r : runs) {
    os << "seed " << r.seed << ": " << ToString(r.summary.termination) << " at t = " << r.summary.t_final << " ("
       << r.summary.accepted_steps << " steps, " << std::setprecision(3) << r.summary.wall_seconds << " s), risk "
       << std::setprecision(6) << FinalRisk(r) << "\n";
  }
  for (std::size_t e = 0; e < setup.events.size(); ++e) {
    const TimeStatistics s = Summarise(EventTimes(runs, e));
    os << "event " << setup.events[e].name << ": ";
    if (s.occurred == 0) {
      os << "did not happen\n";
      continue;
    }
    os << "median t = " << s.median << "  IQR [" << s.q25 << ", " << s.q75 << "]  (" << s.occurred << "/" << s.runs
       << " seeds)\n";
  }
  return os.str();
}

}  // namespace moeflow::io

namespace moeflow::io {

Group CompareResultFile(const ModelFile& model, const OdeSgdComparison& comparison, int seeds,
                        const std::string& command_line) {
  Group root;
  ModelFile first = model;
  first.Set("d=" + std::to_string(comparison.dimensions.front().d));
  const FlowSetup setup = BuildFlow(first);
  root.attributes = RunAttributes("compare", model, setup, command_line);
  std::vector<double> dims, names_index;
  std::string names;
  for (const DimensionComparison& c : comparison.dimensions) dims.push_back(static_cast<double>(c.d));
  for (const EventSpec& e : comparison.events) names += (names.empty() ? "" : "\n") + e.name;
  root.attributes["dimensions"] = dims;
  root.attributes["seeds"] = static_cast<std::int64_t>(seeds);
  root.attributes["event_names"] = names;
  root.attributes["distance_exponent"] = comparison.distance_scaling.exponent;
  Group& table = root.Subgroup("table");
  std::vector<double> col_d, col_event, ode_median, med, q25, q75, gap, ode_steps, sgd_steps, distance;
  for (const DimensionComparison& c : comparison.dimensions) {
    distance.push_back(c.overlap_distance);
    for (std::size_t e = 0; e < comparison.events.size(); ++e) {
      col_d.push_back(static_cast<double>(c.d));
      col_event.push_back(static_cast<double>(e));
      ode_median.push_back(c.ode_times[e].median);
      med.push_back(c.sgd_times[e].median);
      q25.push_back(c.sgd_times[e].q25);
      q75.push_back(c.sgd_times[e].q75);
      gap.push_back((c.sgd_times[e].median - c.ode_times[e].median) / c.ode_times[e].median);
      ode_steps.push_back(c.ode_times[e].median / c.learning_rate);
      sgd_steps.push_back(c.sgd_times[e].median / c.learning_rate);
    }
  }
  const std::size_t rows = col_d.size();
  for (auto& [name, data] : std::vector<std::pair<std::string, std::vector<double>*>>{
           {"d", &col_d}, {"event", &col_event}, {"ode_median", &ode_median}, {"sgd_median", &med}, {"sgd_q25", &q25},
           {"sgd_q75", &q75}, {"relative_gap", &gap}, {"ode_steps", &ode_steps}, {"sgd_steps", &sgd_steps}}) {
    table.datasets.push_back({name, {rows}, *data, {}});
  }
  table.datasets.push_back({"overlap_distance", {distance.size()}, distance,
                            {{"description", std::string("median over the seeds of sup over t and the entries of M, Q "
                                                         "of |SGD - ODE|, one per d")}}});
  Group& scaling = root.Subgroup("scaling");
  for (const EventScaling& s : comparison.scaling) {
    Group& g = scaling.Subgroup(s.name);
    g.attributes = {{"ode_time", s.ode_time.exponent}, {"sgd_time", s.sgd_time.exponent},
                    {"ode_steps", s.ode_steps.exponent}, {"sgd_steps", s.sgd_steps.exponent}};
  }
  for (const DimensionComparison& c : comparison.dimensions) {
    Group& g = root.Subgroup("d_" + std::to_string(c.d));
    g.attributes = {{"d", static_cast<std::int64_t>(c.d)}, {"learning_rate", c.learning_rate},
                    {"overlap_distance", c.overlap_distance}};
    Group& sgd = g.Subgroup("sgd");
    for (const SgdRun& r : c.sgd) sgd.groups.push_back(SgdSeedGroup(r));
    Group& ode = g.Subgroup("ode");
    for (std::size_t s = 0; s < c.ode.size(); ++s) {
      Group& run = ode.Subgroup("seed_" + std::to_string(c.sgd[s].seed));
      run.attributes = OdeOutcomeAttributes(c.ode[s]);
      run.groups.push_back(TrajectoryGroup(c.ode_trajectories[s]));
      run.groups.push_back(EventsGroup(c.ode[s].events));
      run.groups.push_back(StagesGroup(c.ode_stages[s]));
    }
  }
  return root;
}

std::string CompareReport(const OdeSgdComparison& comparison) {
  std::ostringstream os;
  os << std::setprecision(5);
  os << "      d  event                  ODE t     SGD median [q25, q75]            gap      SGD steps\n";
  for (const DimensionComparison& c : comparison.dimensions) {
    for (std::size_t e = 0; e < comparison.events.size(); ++e) {
      const TimeStatistics& s = c.sgd_times[e];
      const double ode = c.ode_times[e].median;
      os << std::setw(7) << c.d << "  " << std::left << std::setw(20) << comparison.events[e].name << std::right
         << std::setw(10) << ode << "  " << std::setw(10) << s.median << " [" << s.q25 << ", " << s.q75 << "]"
         << std::setw(12) << (s.median - ode) / ode << std::setw(14) << s.median / c.learning_rate << "\n";
    }
    os << std::setw(7) << c.d << "  overlap distance (median over seeds of sup |SGD - ODE|): " << c.overlap_distance << "\n";
  }
  os << "log-log exponents against d (time / steps):\n";
  for (const EventScaling& s : comparison.scaling) {
    os << "  " << std::left << std::setw(20) << s.name << std::right << " ODE " << s.ode_time.exponent << " / "
       << s.ode_steps.exponent << "   SGD " << s.sgd_time.exponent << " / " << s.sgd_steps.exponent << "\n";
  }
  os << "  overlap distance exponent: " << comparison.distance_scaling.exponent << "\n";
  return os.str();
}

}  // namespace moeflow::io
