// moeflow/io/sweep_output.hpp
// A sweep as one file (README.md, "Output files"):
//   /                      attributes: kind = "sweep", model (the model file as given),
//                          model_file, overrides, grid (one "KEY=V1,V2,..." line per axis),
//                          run, seeds, points, command, version, created
//   /table/<column>        one row per grid point, in grid order (first axis slowest):
//                          index; one column per grid key (the value, or for values that are
//                          not numbers the index into the column's attribute `values`, one
//                          value per line); status (0 ok, 1 ended abnormally, 2 error);
//                          flow_final_risk, flow_t_final, flow_event_<e> (NaN: no event);
//                          sgd_final_risk, sgd_final_train_risk, sgd_final_test_risk (medians
//                          over the seeds of the last recorded value, where recorded),
//                          sgd_event_<e> (median over the seeds)
//   /points/point_<i>      attributes index, label, fingerprint, status, status_name, message,
//                          grid.<key>; subgroups flow/ and sgd/ laid out as a flow file and an
//                          sgd file
// and the table for the terminal.
#pragma once

#include <string>
#include <vector>

#include "moeflow/io/model_file.hpp"
#include "moeflow/io/record.hpp"
#include "moeflow/sweep/sweep.hpp"

namespace moeflow::io {

Group SweepResultFile(const ModelFile& base, const std::vector<GridAxis>& axes, const SweepOptions& options,
                      const SweepResult& result);
std::string SweepReport(const std::vector<GridAxis>& axes, const SweepResult& result);

}  // namespace moeflow::io
