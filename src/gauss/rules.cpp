#include "gauss/rules.hpp"

#include <Eigen/Eigenvalues>
#include <cmath>
#include <functional>
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

CubatureRule SparseGaussHermite(int dimension, int k) {
  const int m = dimension;
  CubatureRule rule;
  rule.dimension = m;
  if (m == 0) {
    rule.w = {1.0};
    return rule;
  }
  auto binomial = [](int n, int r) {
    double b = 1;
    for (int i = 1; i <= r; ++i) b = b * (n - r + i) / i;
    return b;
  };
  // Nodes keyed by their coordinates rounded to 1e-10 (distinct Gauss–Hermite nodes of ≤ k + 1
  // points are ≥ 0.1 apart; the zero of every odd rule is 0 up to round-off).
  std::map<std::vector<long long>, std::size_t> index;
  std::vector<int> level(static_cast<std::size_t>(m), 1);
  std::vector<double> point(static_cast<std::size_t>(m));
  std::vector<long long> key(static_cast<std::size_t>(m));
  auto add_tensor = [&](double coefficient) {
    std::vector<int> at(static_cast<std::size_t>(m), 0);
    while (true) {
      double weight = coefficient;
      for (int j = 0; j < m; ++j) {
        const QuadratureRule& r = GaussHermite(level[j]);
        point[j] = r.x[at[j]];
        weight *= r.w[at[j]];
        key[j] = std::llround(point[j] * 1e10);
      }
      const auto [it, inserted] = index.emplace(key, rule.w.size());
      if (inserted) {
        rule.x.insert(rule.x.end(), point.begin(), point.end());
        rule.w.push_back(weight);
      } else {
        rule.w[it->second] += weight;
      }
      int j = 0;
      while (j < m && ++at[j] == level[j]) at[j++] = 0;
      if (j == m) break;
    }
  };
  // Every multi-index with excess e = Σ (i_j − 1) ≤ k and a non-zero coefficient (k − e ≤ m − 1).
  std::function<void(int, int, int)> visit = [&](int j, int excess, int e) {
    if (j == m) {
      if (excess == 0) {
        const double coefficient = ((k - e) % 2 ? -1.0 : 1.0) * binomial(m - 1, k - e);
        add_tensor(coefficient);
      }
      return;
    }
    for (int extra = 0; extra <= excess; ++extra) {
      level[j] = 1 + extra;
      visit(j + 1, excess - extra, e);
    }
    level[j] = 1;
  };
  for (int e = std::max(0, k - m + 1); e <= k; ++e) visit(0, e, e);
  return rule;
}

}  // namespace moeflow::detail
