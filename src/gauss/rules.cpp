#include "gauss/rules.hpp"

#include <Eigen/Eigenvalues>
#include <cmath>
#include <map>
#include <mutex>

namespace moeflow::detail {
namespace {

QuadratureRule MakeLegendre(int n) {
  QuadratureRule r;
  r.x.resize(n);
  r.w.resize(n);
  for (int i = 0; i < n; ++i) {
    double x = std::cos(M_PI * (i + 0.75) / (n + 0.5));
    double dp = 0;
    for (int iter = 0; iter < 100; ++iter) {
      double p0 = 1, p1 = x;
      for (int k = 2; k <= n; ++k) {
        const double p2 = ((2 * k - 1) * x * p1 - (k - 1) * p0) / k;
        p0 = p1;
        p1 = p2;
      }
      dp = n * (x * p1 - p0) / (x * x - 1);
      const double dx = p1 / dp;
      x -= dx;
      if (std::abs(dx) < 1e-16) break;
    }
    r.x[i] = x;
    r.w[i] = 2 / ((1 - x * x) * dp * dp);
  }
  return r;
}

// Jacobi matrix of the probabilists' Hermite polynomials: off-diagonal sqrt(k).
QuadratureRule MakeHermite(int n) {
  Eigen::VectorXd diagonal = Eigen::VectorXd::Zero(n), off(std::max(n - 1, 0));
  for (int k = 1; k < n; ++k) off[k - 1] = std::sqrt(static_cast<double>(k));
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver;
  solver.computeFromTridiagonal(diagonal, off, Eigen::ComputeEigenvectors);
  QuadratureRule r;
  for (int i = 0; i < n; ++i) {
    r.x.push_back(solver.eigenvalues()[i]);
    const double v = solver.eigenvectors()(0, i);
    r.w.push_back(v * v);
  }
  return r;
}

template <class Make>
const QuadratureRule& Cached(std::map<int, QuadratureRule>& cache, int n, Make make) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(n);
  if (it == cache.end()) it = cache.emplace(n, make(n)).first;
  return it->second;
}

}  // namespace

const QuadratureRule& GaussLegendre(int n) {
  static std::map<int, QuadratureRule> cache;
  return Cached(cache, n, MakeLegendre);
}

const QuadratureRule& GaussHermite(int n) {
  static std::map<int, QuadratureRule> cache;
  return Cached(cache, n, MakeHermite);
}

const QuadratureRule& GaussianTrapezoid(int n) {
  static std::map<int, QuadratureRule> cache;
  return Cached(cache, n, [](int count) {
    QuadratureRule r;
    const double half_width = 9.0, h = 2 * half_width / (count - 1);
    for (int i = 0; i < count; ++i) {
      const double x = -half_width + h * i;
      r.x.push_back(x);
      r.w.push_back(h * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI));
    }
    return r;
  });
}

}  // namespace moeflow::detail
