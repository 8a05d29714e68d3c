// moeflow/sgd/compare.hpp
// ODE versus SGD over a list of dimensions d: for each d, the SGD seeds and, for each seed, the
// population ODE started from that seed's own initial overlaps; every event's time (ODE median
// over seeds, SGD median and interquartile range, relative gap), the log-log exponent of each
// event time against d (ODE and SGD, in time and in steps = t/η), and the sup-norm distance
// between the SGD and ODE overlaps (M and Q) on the common time grid.
#pragma once

#include <string>
#include <vector>

#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/sgd/simulator.hpp"
#include "moeflow/sgd/statistics.hpp"

namespace moeflow {

struct CompareOptions {
  std::vector<long long> dimensions;
  int seeds = 4;
  int threads = 1;
  SgdControl control;
};

struct DimensionComparison {
  long long d = 0;
  double learning_rate = 0.0;
  std::vector<SgdRun> sgd;
  std::vector<RunSummary> ode;            // one per seed
  std::vector<Trajectory> ode_trajectories;
  std::vector<std::vector<StageRecord>> ode_stages;
  // Per event: the ODE's median over seeds and the SGD statistics.
  std::vector<TimeStatistics> ode_times, sgd_times;
  // Median over the seeds of sup over the common times and the entries of M and Q of
  // |SGD − ODE| (each seed against the ODE from its own initial overlaps).
  double overlap_distance = 0.0;
};

struct EventScaling {
  std::string name;
  PowerLawFit ode_time, sgd_time, ode_steps, sgd_steps;
};

struct OdeSgdComparison {
  std::vector<EventSpec> events;
  std::vector<DimensionComparison> dimensions;
  std::vector<EventScaling> scaling;  // one per event
  PowerLawFit distance_scaling;       // overlap_distance against d
};

// Builds the model at each d (key `d` overridden), runs the SGD seeds (seed, seed+1, ...) and
// the ODE per seed. Throws InputError for a bad model or options.
OdeSgdComparison CompareOdeSgd(const io::ModelFile& model, const CompareOptions& options);

// Runs fn(0..count−1) on `threads` threads; the first exception is rethrown after all finish.
void ParallelFor(std::size_t count, int threads, const std::function<void(std::size_t)>& fn);

}  // namespace moeflow
