#include "moeflow/sgd/statistics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moeflow {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double Quantile(const std::vector<double>& sorted, double q) {
  const double position = q * static_cast<double>(sorted.size() - 1);
  const std::size_t below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  const double lo = sorted[below], hi = sorted[above];
  if (std::isinf(lo) || std::isinf(hi)) return position == static_cast<double>(below) && !std::isinf(lo) ? lo : kNaN;
  return lo + (position - static_cast<double>(below)) * (hi - lo);
}

}  // namespace

TimeStatistics Summarise(const std::vector<double>& times) {
  TimeStatistics s;
  s.runs = static_cast<int>(times.size());
  std::vector<double> sorted;
  for (double t : times) {
    s.occurred += std::isfinite(t);
    sorted.push_back(std::isfinite(t) ? t : std::numeric_limits<double>::infinity());
  }
  if (sorted.empty()) {
    s.median = s.q25 = s.q75 = kNaN;
    return s;
  }
  std::sort(sorted.begin(), sorted.end());
  s.median = Quantile(sorted, 0.5);
  s.q25 = Quantile(sorted, 0.25);
  s.q75 = Quantile(sorted, 0.75);
  return s;
}

PowerLawFit FitPowerLaw(const std::vector<double>& x, const std::vector<double>& y) {
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  PowerLawFit fit;
  for (std::size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    if (!(x[i] > 0 && y[i] > 0) || !std::isfinite(x[i]) || !std::isfinite(y[i])) continue;
    const double lx = std::log(x[i]), ly = std::log(y[i]);
    sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
    ++fit.points;
  }
  if (fit.points < 2) {
    fit.exponent = fit.prefactor = kNaN;
    return fit;
  }
  const double n = fit.points;
  fit.exponent = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  fit.prefactor = std::exp((sy - fit.exponent * sx) / n);
  return fit;
}

}  // namespace moeflow
