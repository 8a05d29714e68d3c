// moeflow/io/sgd_output.hpp
// The result of an SGD run over seeds, in the layout of a flow file (README.md, "Output files"):
//   /                       attributes of every result file (kind = "sgd", model, version, ...)
//                           plus learning_rate, batch, samples, test_samples, engine, seeds
//   /seed_<s>/trajectory/   time, steps and the observables, as in a flow file
//   /seed_<s>/events/       as in a flow file
//   /seed_<s>/initial_gram  the seed's initial Gram matrix (students first, then teachers)
//   /seed_<s>               attributes seed, termination, message, t_final, steps, wall_seconds
//   /event_statistics/<e>   median event time over the seeds; attributes q25, q75, runs, occurred
#pragma once

#include <string>
#include <vector>

#include "moeflow/io/model_file.hpp"
#include "moeflow/io/record.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/sgd/compare.hpp"
#include "moeflow/sgd/simulator.hpp"

namespace moeflow::io {

Group SgdSeedGroup(const SgdRun& run);
Group SgdResultFile(const ModelFile& model, const FlowSetup& setup, const std::vector<SgdRun>& runs,
                    const std::string& command_line);

// A few lines for the terminal: per seed the outcome and final risk, per event the median
// time and interquartile range over the seeds.
std::string SgdReport(const FlowSetup& setup, const std::vector<SgdRun>& runs);

// A comparison over d:
//   /                        attributes (kind = "compare", model, version, ..., dimensions, seeds)
//   /table/<column>          one row per (d, event): d, event (index into the attribute
//                            `event_names`), ode_median, sgd_median, sgd_q25, sgd_q75,
//                            relative_gap, ode_steps, sgd_steps; plus /table/overlap_distance (per d)
//   /scaling/<event>         attributes ode_time, sgd_time, ode_steps, sgd_steps (log-log exponents)
//   /d_<d>/sgd/seed_<s>/...  the SGD runs as in an sgd file; /d_<d>/ode/seed_<s>/... the ODE runs
Group CompareResultFile(const ModelFile& model, const OdeSgdComparison& comparison, int seeds,
                        const std::string& command_line);
std::string CompareReport(const OdeSgdComparison& comparison);

}  // namespace moeflow::io
