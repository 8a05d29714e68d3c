#include "moeflow/sgd/compare.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <thread>

#include "moeflow/error.hpp"

namespace moeflow {
namespace {

// Offsets and sizes of the state observables: the overlaps M and Q, and trained weights a.
std::vector<std::pair<int, int>> OverlapRanges(const std::vector<ObservableInfo>& observables) {
  std::vector<std::pair<int, int>> ranges;
  const std::vector<int> offsets = ObservableOffsets(observables);
  for (std::size_t i = 0; i < observables.size(); ++i) {
    const std::string& name = observables[i].name;
    if (name == "M" || name == "Q" || name == "a") ranges.emplace_back(offsets[i], observables[i].size());
  }
  return ranges;
}

// Median over the seeds of sup over the common times and the entries of M and Q (and a) of
// |SGD − ODE|, each seed against the ODE from its own initial overlaps.
double OverlapDistance(const DimensionComparison& c) {
  const auto ranges = OverlapRanges(c.sgd.front().trajectory.observables);
  std::vector<double> sups;
  for (std::size_t s = 0; s < c.sgd.size(); ++s) {
    const std::size_t rows = std::min(c.sgd[s].trajectory.time.size(), c.ode_trajectories[s].time.size());
    double sup = 0.0;
    for (std::size_t r = 0; r < rows; ++r) {
      for (const auto& [offset, size] : ranges) {
        for (int j = offset; j < offset + size; ++j) {
          sup = std::max(sup, std::abs(c.sgd[s].trajectory.values[r][j] - c.ode_trajectories[s].values[r][j]));
        }
      }
    }
    sups.push_back(sup);
  }
  return Summarise(sups).median;
}

}  // namespace

void ParallelFor(std::size_t count, int threads, const std::function<void(std::size_t)>& fn) {
  std::vector<std::exception_ptr> errors(count);
  std::atomic<std::size_t> next{0};
  auto worker = [&]() {
    for (std::size_t i = next++; i < count; i = next++) {
      try {
        fn(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const int used = std::max(1, std::min<int>(threads, static_cast<int>(count)));
  std::vector<std::thread> pool;
  for (int i = 1; i < used; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

OdeSgdComparison CompareOdeSgd(const io::ModelFile& model, const CompareOptions& options) {
  if (options.dimensions.empty()) throw InputError("compare: give at least one d (--d LIST)");
  if (options.seeds < 1) ThrowBadValue("--seeds", std::to_string(options.seeds), "must be >= 1");
  const auto model_at = [&model](long long d) {
    io::ModelFile at_d = model;
    at_d.Set("d=" + std::to_string(d));
    return at_d;
  };
  // Every d's model and SGD options are checked before any runs: a d the model rejects is reported
  // at once, not after the runs at the d before it.
  for (long long d : options.dimensions) {
    try {
      ValidateSgd(BuildFlow(model_at(d)));
    } catch (const InputError& e) {
      throw InputError("at d = " + std::to_string(d) + ": " + e.what());
    }
  }
  OdeSgdComparison result;
  for (long long d : options.dimensions) {
    const FlowSetup setup = BuildFlow(model_at(d));
    result.events = setup.events;
    DimensionComparison c;
    c.d = d;
    c.learning_rate = setup.sgd.learning_rate;
    c.sgd = SimulateModelSgd(setup, options.seeds, options.threads, options.control);
    for (const SgdRun& r : c.sgd) {
      if (r.summary.termination == Termination::kInterrupted) return result;
    }
    c.ode.resize(c.sgd.size());
    c.ode_trajectories.resize(c.sgd.size());
    c.ode_stages.resize(c.sgd.size());
    // Each seed's ODE starts from its SGD run's initial overlaps and records at its recorded times.
    // Seeds that start from the same overlaps (all of them for a uniform, informed or explicit
    // start) share one run on the union of their times: the steps do not depend on the output
    // times, so each seed's rows are those it would get alone.
    std::vector<std::vector<std::size_t>> groups;
    for (std::size_t s = 0; s < c.sgd.size(); ++s) {
      auto same = std::find_if(groups.begin(), groups.end(), [&](const std::vector<std::size_t>& g) {
        return c.sgd[g.front()].initial_gram == c.sgd[s].initial_gram;
      });
      if (same == groups.end()) {
        groups.push_back({s});
      } else {
        same->push_back(s);
      }
    }
    ParallelFor(groups.size(), options.threads, [&](std::size_t g) {
      IntegratorOptions o = setup.options;
      o.output_times.clear();
      for (std::size_t s : groups[g]) {
        const std::vector<double>& times = c.sgd[s].trajectory.time;
        o.output_times.insert(o.output_times.end(), times.begin(), times.end());
      }
      std::sort(o.output_times.begin(), o.output_times.end());
      o.output_times.erase(std::unique(o.output_times.begin(), o.output_times.end()), o.output_times.end());
      // The last SGD step may pass t_end by less than η.
      if (!o.output_times.empty()) o.t_end = std::max(o.t_end, o.output_times.back());
      o.output_every_step = false;
      IntegrationControl control;
      control.interrupt = options.control.interrupt;
      const std::size_t first = groups[g].front();
      Trajectory shared;
      c.ode[first] = RunProtocol(*setup.system, setup.system->Pack(c.sgd[first].initial_gram), o, setup.events,
                                 setup.stages, &shared, &c.ode_stages[first], control);
      for (std::size_t s : groups[g]) {
        c.ode[s] = c.ode[first];
        c.ode_stages[s] = c.ode_stages[first];
        Trajectory& own = c.ode_trajectories[s];
        own.observables = shared.observables;
        const std::vector<double>& times = c.sgd[s].trajectory.time;
        for (std::size_t r = 0; r < shared.time.size(); ++r) {
          // Its own times, and the rows the integrator adds (t = 0, a stopping event's time).
          const double t = shared.time[r];
          if (std::binary_search(times.begin(), times.end(), t) ||
              !std::binary_search(o.output_times.begin(), o.output_times.end(), t)) {
            own.time.push_back(t);
            own.values.push_back(shared.values[r]);
          }
        }
      }
    });
    for (std::size_t e = 0; e < setup.events.size(); ++e) {
      std::vector<double> ode, sgd;
      for (std::size_t s = 0; s < c.sgd.size(); ++s) {
        ode.push_back(c.ode[s].events[e].time);
        sgd.push_back(c.sgd[s].summary.events[e].time);
      }
      c.ode_times.push_back(Summarise(ode));
      c.sgd_times.push_back(Summarise(sgd));
    }
    c.overlap_distance = OverlapDistance(c);
    result.dimensions.push_back(std::move(c));
  }
  std::vector<double> ds, distances;
  for (const DimensionComparison& c : result.dimensions) {
    ds.push_back(static_cast<double>(c.d));
    distances.push_back(c.overlap_distance);
  }
  result.distance_scaling = FitPowerLaw(ds, distances);
  for (std::size_t e = 0; e < result.events.size(); ++e) {
    EventScaling s;
    s.name = result.events[e].name;
    std::vector<double> ode_t, sgd_t, ode_n, sgd_n;
    for (const DimensionComparison& c : result.dimensions) {
      ode_t.push_back(c.ode_times[e].median);
      sgd_t.push_back(c.sgd_times[e].median);
      ode_n.push_back(c.ode_times[e].median / c.learning_rate);
      sgd_n.push_back(c.sgd_times[e].median / c.learning_rate);
    }
    s.ode_time = FitPowerLaw(ds, ode_t);
    s.sgd_time = FitPowerLaw(ds, sgd_t);
    s.ode_steps = FitPowerLaw(ds, ode_n);
    s.sgd_steps = FitPowerLaw(ds, sgd_n);
    result.scaling.push_back(s);
  }
  return result;
}

}  // namespace moeflow
