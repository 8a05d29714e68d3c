#include "models/rank_one.hpp"

#include <cmath>
#include <vector>

namespace moeflow {

// Shifted symmetric power iteration (Kolda & Mayo 2011) on ±T, from every y_j and from
// Σ_j a_j y_j; the shift (k − 1) Σ_j |a_j| ‖y_j‖^k bounds the Hessian of T(u,…,u)/k, so each run
// climbs monotonically to a local maximum of ±T on the sphere.
std::pair<double, Eigen::VectorXd> RankOnePart(const Eigen::MatrixXd& y, const Eigen::VectorXd& a, int k) {
  const Eigen::Index r = y.rows();
  auto value = [&](const Eigen::VectorXd& u) {
    return (a.array() * (y.transpose() * u).array().pow(k)).sum();
  };
  double shift = 0.0;
  for (Eigen::Index j = 0; j < y.cols(); ++j) shift += std::abs(a[j]) * std::pow(y.col(j).norm(), k);
  shift *= k - 1;
  std::vector<Eigen::VectorXd> starts;
  for (Eigen::Index j = 0; j < y.cols(); ++j) starts.push_back(y.col(j));
  starts.push_back(y * a);
  double best_value = 0.0;
  Eigen::VectorXd best = Eigen::VectorXd::Unit(r, 0);
  for (const Eigen::VectorXd& start : starts) {
    if (!(start.norm() > 0)) continue;
    for (double sign : {1.0, -1.0}) {
      Eigen::VectorXd u = start.normalized();
      for (int it = 0; it < 5000; ++it) {
        const Eigen::VectorXd p = (y.transpose() * u).array().pow(k - 1).matrix();
        Eigen::VectorXd next = sign * (y * a.cwiseProduct(p)) + shift * u;
        if (!(next.norm() > 0)) break;
        next.normalize();
        const double step = (next - u).norm();
        u = next;
        if (step < 1e-15) break;
      }
      const double v = value(u);
      if (std::abs(v) > std::abs(best_value)) {
        best_value = v;
        best = u;
      }
    }
  }
  if (k % 2 == 1 && best_value < 0) {  // odd order: c u^⊗k = (−c)(−u)^⊗k; keep c > 0
    best_value = -best_value;
    best = -best;
  }
  return {best_value, best};
}

}  // namespace moeflow
