// moeflow/sgd/statistics.hpp
// Summaries over seeds and sweeps: quantiles of event times (an event that did not happen
// counts as +∞, so a median is finite only if the event happened in at least half the runs)
// and log-log power-law fits of event times against d.
#pragma once

#include <vector>

namespace moeflow {

struct TimeStatistics {
  int runs = 0;
  int occurred = 0;
  double median = 0.0, q25 = 0.0, q75 = 0.0;  // NaN where the quantile falls on a missing event
};

// `times`: one per run, NaN where the event did not happen. Quantiles interpolate linearly
// between order statistics (R's type 7).
TimeStatistics Summarise(const std::vector<double>& times);

struct PowerLawFit {
  double exponent = 0.0;   // slope of log y against log x (least squares)
  double prefactor = 0.0;  // y ≈ prefactor · x^exponent
  int points = 0;          // finite positive pairs used; the fit is NaN below two
};

PowerLawFit FitPowerLaw(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace moeflow
