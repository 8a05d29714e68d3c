#include "moeflow/gauss/expectation.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <sstream>

#include "common/text.hpp"
#include "gauss/rules.hpp"
#include "links/factorial.hpp"
#include "moeflow/error.hpp"
#include "moeflow/links/hermite.hpp"
#include "moeflow/links/polynomial.hpp"

namespace moeflow {
namespace {

std::string Num(double v) { return detail::FormatNumber(v); }

constexpr double kQuadratureHalfWidth = 9.0;  // |z| beyond 9: Gaussian mass < 1e-18
// Panel edges (times panel_width, mirrored) of the kinked-factor rule on [−9, 9].
constexpr double kGradedEdges[] = {0.0, 0.75, 1.5, 2.5, 3.75, 5.25, 7.0, 9.0};
constexpr double kPivotTolerance = 1e-13;     // relative: a conditional variance below is 0

// Concatenation through append (g++ 12 warns falsely on "literal" + std::string).
std::string Cat(std::initializer_list<std::string> parts) {
  std::string out;
  for (const std::string& p : parts) out.append(p);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Links made from links.

class DerivativeLink final : public Link {
 public:
  explicit DerivativeLink(LinkPtr f) : f_(std::move(f)), spec_(Cat({"d(", f_->Spec(), ")"})) {}
  std::string Spec() const override { return spec_; }
  double Value(double z) const override { return f_->Derivative(z); }
  double Derivative(double z) const override {  // only for completeness: central difference
    const double h = 1e-5 * std::max(1.0, std::abs(z));
    return (f_->Derivative(z + h) - f_->Derivative(z - h)) / (2 * h);
  }
  std::vector<double> Kinks() const override { return f_->Kinks(); }

 private:
  LinkPtr f_;
  std::string spec_;
};

class SteinLink final : public Link {  // f(h)·(h − c)
 public:
  SteinLink(LinkPtr f, double center) : f_(std::move(f)), c_(center) {}
  std::string Spec() const override { return Cat({"(", f_->Spec(), ")*(z-", Num(c_), ")"}); }
  double Value(double z) const override { return f_->Value(z) * (z - c_); }
  double Derivative(double z) const override { return f_->Derivative(z) * (z - c_) + f_->Value(z); }
  std::vector<double> Kinks() const override { return f_->Kinks(); }

 private:
  LinkPtr f_;
  double c_;
};

// ---------------------------------------------------------------------------------------------
// h = m + L z with L lower-triangular; a column is zero where the conditional variance
// vanishes (rank-deficient Σ).

Eigen::MatrixXd ConditioningFactor(const Eigen::MatrixXd& cov) {
  const int n = static_cast<int>(cov.rows());
  const double scale = std::max(1e-300, cov.diagonal().cwiseAbs().maxCoeff());
  Eigen::MatrixXd L = Eigen::MatrixXd::Zero(n, n);
  for (int i = 0; i < n; ++i) {
    double d = cov(i, i) - L.row(i).head(i).squaredNorm();
    if (d <= kPivotTolerance * scale) continue;  // h_i is determined by the previous ones
    L(i, i) = std::sqrt(d);
    for (int k = i + 1; k < n; ++k) L(k, i) = (cov(k, i) - L.row(k).head(i).dot(L.row(i).head(i))) / L(i, i);
  }
  return L;
}

struct QuadratureSettings {
  int smooth_nodes;
  double panel_width;
  int panel_nodes;
};

class ConditioningQuadrature {
 public:
  ConditioningQuadrature(const std::vector<LinkPtr>& f, const Eigen::VectorXd& m, const Eigen::MatrixXd& cov,
                         const QuadratureSettings& s)
      : f_(f), L_(ConditioningFactor(cov)), s_(s), n_(static_cast<int>(f.size())), shift_(m) {
    // Polynomial chains are integrated exactly: level i sees a polynomial of degree
    // Σ_{j≥i} deg f_j in z_i.
    exact_nodes_.assign(n_, -1);
    int degree = 0;
    bool polynomial = true;
    for (int i = n_ - 1; i >= 0; --i) {
      const int d = f_[i]->PolynomialDegree();
      polynomial = polynomial && d >= 0;
      degree += std::max(d, 0);
      if (polynomial) exact_nodes_[i] = degree / 2 + 1;
    }
  }

  double Run() { return Level(0); }

 private:
  double Level(int i) {
    if (i == n_) return 1.0;
    const double mu = shift_[i];
    const double sd = L_(i, i);
    if (sd == 0.0) {
      const double v = f_[i]->Value(mu);
      return v == 0.0 ? 0.0 : v * Level(i + 1);
    }
    double sum = 0.0;
    auto node = [&](double z, double w) {
      const double v = f_[i]->Value(mu + sd * z);
      if (v == 0.0) return;
      for (int k = i + 1; k < n_; ++k) shift_[k] += L_(k, i) * z;
      sum += w * v * Level(i + 1);
      for (int k = i + 1; k < n_; ++k) shift_[k] -= L_(k, i) * z;
    };
    const std::vector<double> kinks = f_[i]->Kinks();
    const std::vector<double> later = LaterKinkPoints(i);
    if ((kinks.empty() && later.empty()) || exact_nodes_[i] > 0) {
      // Polynomial levels: Gauss–Hermite, exact. Smooth ones: the trapezoidal rule (rules.hpp).
      const detail::QuadratureRule& rule = exact_nodes_[i] > 0 ? detail::GaussHermite(exact_nodes_[i])
                                                                : detail::GaussianTrapezoid(s_.smooth_nodes);
      for (std::size_t q = 0; q < rule.x.size(); ++q) node(rule.x[q], rule.w[q]);
      return sum;
    }
    // Composite Gauss–Legendre on [−H, H], panels graded from the centre (where the Gaussian
    // weight is) outwards, with edges at the kinks of f_i in z_i.
    std::vector<double> edges;
    for (double e : kGradedEdges) {
      edges.push_back(e * s_.panel_width);
      edges.push_back(-e * s_.panel_width);
    }
    for (double kink : kinks) {
      const double t = (kink - mu) / sd;
      if (t > -kQuadratureHalfWidth && t < kQuadratureHalfWidth) edges.push_back(t);
    }
    for (double t : later) edges.push_back(t);
    std::sort(edges.begin(), edges.end());
    edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
    const detail::QuadratureRule& rule = detail::GaussLegendre(s_.panel_nodes);
    for (std::size_t p = 0; p + 1 < edges.size(); ++p) {
      const double mid = 0.5 * (edges[p] + edges[p + 1]), half = 0.5 * (edges[p + 1] - edges[p]);
      if (half <= 0) continue;
      for (std::size_t q = 0; q < rule.x.size(); ++q) {
        const double z = mid + half * rule.x[q];
        node(z, half * rule.w[q] * std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI));
      }
    }
    return sum;
  }

  // Where the kinks of later factors j > i lie in z_i (the other z's at 0): exact kinks of the
  // integrand if h_j is determined by z_{≤i}, smoothed ones (width r_j/|L_ji|, r_j the residual
  // standard deviation) otherwise; edges at the kink and at ±1, 2, 4 widths resolve them.
  std::vector<double> LaterKinkPoints(int i) const {
    std::vector<double> points;
    for (int j = i + 1; j < n_; ++j) {
      if (L_(j, i) == 0.0) continue;
      const double residual = L_.row(j).segment(i + 1, j - i).norm();
      for (double kink : f_[j]->Kinks()) {
        const double t = (kink - shift_[j]) / L_(j, i);
        const double width = residual / std::abs(L_(j, i));
        for (double c : {0.0, -1.0, 1.0, -2.0, 2.0, -4.0, 4.0}) {
          if (c != 0.0 && width == 0.0) break;
          const double p = t + c * width;
          if (p > -kQuadratureHalfWidth && p < kQuadratureHalfWidth) points.push_back(p);
        }
      }
    }
    // Where the kinks of two later factors j, k meet: the inner integral over z_{i+1} has a
    // kink in z_i there (solving h_j = κ_j, h_k = κ_k in (z_i, z_{i+1}), later z's at 0).
    if (i + 1 < n_) {
      for (int j = i + 1; j < n_; ++j) {
        for (int k = j + 1; k < n_; ++k) {
          const double det = L_(j, i) * L_(k, i + 1) - L_(k, i) * L_(j, i + 1);
          if (std::abs(det) < 1e-14) continue;
          for (double kj : f_[j]->Kinks()) {
            for (double kk : f_[k]->Kinks()) {
              const double p = ((kj - shift_[j]) * L_(k, i + 1) - (kk - shift_[k]) * L_(j, i + 1)) / det;
              if (p > -kQuadratureHalfWidth && p < kQuadratureHalfWidth) points.push_back(p);
            }
          }
        }
      }
    }
    return points;
  }

  const std::vector<LinkPtr>& f_;
  Eigen::MatrixXd L_;
  QuadratureSettings s_;
  int n_;
  Eigen::VectorXd shift_;  // conditional means m_k + Σ_{j<i} L_kj z_j
  std::vector<int> exact_nodes_;
};

int ByArity(int requested, std::size_t n, std::initializer_list<int> table) {
  if (requested > 0) return requested;
  const std::vector<int> t(table);
  return t[std::min(n, t.size()) - 1];
}

ExpectationResult Quadrature(const std::vector<LinkPtr>& factors, const Eigen::VectorXd& mean,
                             const Eigen::MatrixXd& covariance, const ExpectationOptions& o) {
  // Non-polynomial factors are integrated at the outer levels, so that the inner polynomial
  // levels are exact with few nodes; the node count is set by the non-polynomial ones.
  const int n = static_cast<int>(factors.size());
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  std::stable_partition(order.begin(), order.end(), [&](int i) { return factors[i]->PolynomialDegree() < 0; });
  std::vector<LinkPtr> f(n);
  Eigen::VectorXd m(n);
  Eigen::MatrixXd cov(n, n);
  std::size_t non_polynomial = 0;
  for (int a = 0; a < n; ++a) {
    f[a] = factors[order[a]];
    m[a] = mean[order[a]];
    for (int b = 0; b < n; ++b) cov(a, b) = covariance(order[a], order[b]);
    non_polynomial += f[a]->PolynomialDegree() < 0 ? 1 : 0;
  }
  const int nodes = ByArity(o.quadrature_nodes, std::max<std::size_t>(non_polynomial, 1), {200, 200, 128, 64, 24});
  const QuadratureSettings fine{nodes, o.kinked_panel_width, o.kinked_panel_nodes};
  const QuadratureSettings coarse{std::max(4, nodes * 3 / 4), o.kinked_panel_width,
                                  std::max(2, o.kinked_panel_nodes - 3)};
  ExpectationResult r;
  r.backend = ExpectationBackend::kQuadrature;
  r.value = ConditioningQuadrature(f, m, cov, fine).Run();
  bool polynomial = true;
  for (const LinkPtr& l : f) polynomial = polynomial && l->PolynomialDegree() >= 0;
  r.error_estimate = polynomial ? 1e-14 * std::max(1.0, std::abs(r.value))
                                : std::abs(r.value - ConditioningQuadrature(f, m, cov, coarse).Run());
  return r;
}

// ---------------------------------------------------------------------------------------------
// Tensor quadrature in whitened coordinates: Σ = U Λ Uᵀ, h = m + B z with B = U Λ^(1/2) over the
// eigenvalues above kWhitenedRankTolerance·λ_max (rank-deficient Σ lose directions), z standard
// normal. Every factor depends on every z_j, so nothing is shared with the conditioning
// quadrature but the integrand: the two are independent discretisations. Direction j moves the
// projections at the rate s_j = max_k |B_kj|; the library's smooth links are analytic in a strip
// of half-width ≥ π/2 (tanh's poles), so in z_j the integrand is analytic for |Im z_j| < π/(2 s_j).
// A direction with s_j small is nearly polynomial: Gauss–Hermite with 4 + 40 s + 110 s² nodes
// (plus half the total polynomial degree) reaches 1e-13 on tanh·tanh (measured for s ≤ 1.5);
// otherwise the trapezoidal rule with step min(0.7, c/s_j) on |z_j| ≤ 8.7, wider with polynomial
// factors (error ~ e^(−π²/c) times the integrand's growth; ~1e-12 measured at c = 0.3, the
// default 0.27 leaves a margin for the error estimate), whichever has fewer nodes. Products of
// polynomials: Gauss–Hermite, exact.

constexpr double kWhitenedRankTolerance = 1e-13;

class WhitenedQuadrature {
 public:
  // `coarse`: the step 15% longer and 15% fewer Gauss–Hermite nodes (for the error estimate).
  // `eig`: the eigen-decomposition of Σ (one for the fine and the coarse rule).
  WhitenedQuadrature(const std::vector<LinkPtr>& f, const Eigen::VectorXd& m,
                     const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>& eig, double step, bool coarse)
      : f_(f), n_(static_cast<int>(f.size())), shift_(m) {
    const double top = std::max(0.0, eig.eigenvalues().maxCoeff());
    int degree = 0;
    bool polynomial = true;
    for (const LinkPtr& l : f_) {
      degree += std::max(0, l->PolynomialDegree());
      polynomial = polynomial && l->PolynomialDegree() >= 0;
    }
    // Polynomial factors grow like |z|^degree: the trapezoidal range grows until
    // |z|^degree·φ(z) ≤ e^(−40) at its ends.
    const double half_width = std::sqrt(2 * (37.5 + degree * std::log(3.0 + degree)));
    for (int j = n_ - 1; j >= 0; --j) {  // largest eigenvalue outermost
      const double lambda = eig.eigenvalues()[j];
      if (!(lambda > kWhitenedRankTolerance * top)) continue;
      B_.push_back(eig.eigenvectors().col(j) * std::sqrt(lambda));
      const double s = B_.back().cwiseAbs().maxCoeff();
      int hermite_nodes = static_cast<int>(std::ceil(4 + 40 * s + 110 * s * s)) + degree / 2;
      if (coarse) hermite_nodes = std::max(2, hermite_nodes * 17 / 20);
      if (polynomial) hermite_nodes = degree / 2 + 1;  // exact
      const double h = coarse ? std::min(0.8, 1.15 * step / s) : std::min(0.7, step / s);
      const int trapezoid_nodes = 2 * static_cast<int>(std::ceil(half_width / h)) + 1;
      detail::QuadratureRule rule;
      if (polynomial || hermite_nodes <= trapezoid_nodes) {
        rule = detail::GaussHermite(hermite_nodes);
      } else {
        const int half = trapezoid_nodes / 2;
        for (int q = -half; q <= half; ++q) {
          rule.x.push_back(q * h);
          rule.w.push_back(h * std::exp(-0.5 * q * h * q * h) / std::sqrt(2 * M_PI));
        }
      }
      rules_.push_back(std::move(rule));
    }
  }

  double Run() { return Level(0); }

 private:
  double Level(std::size_t j) {
    if (j == rules_.size()) {
      double v = 1.0;
      for (int i = 0; i < n_ && v != 0.0; ++i) v *= f_[i]->Value(shift_[i]);
      return v;
    }
    double sum = 0.0;
    const detail::QuadratureRule& rule = rules_[j];
    for (std::size_t q = 0; q < rule.x.size(); ++q) {
      shift_ += B_[j] * rule.x[q];
      sum += rule.w[q] * Level(j + 1);
      shift_ -= B_[j] * rule.x[q];
    }
    return sum;
  }

  const std::vector<LinkPtr>& f_;
  int n_;
  Eigen::VectorXd shift_;
  std::vector<Eigen::VectorXd> B_;
  std::vector<detail::QuadratureRule> rules_;
};

ExpectationResult Whitened(const std::vector<LinkPtr>& f, const Eigen::VectorXd& m, const Eigen::MatrixXd& cov,
                           const ExpectationOptions& o) {
  for (const LinkPtr& l : f) {
    if (!l->Kinks().empty()) {
      throw InputError("the whitened quadrature needs smooth links: " + l->Spec() +
                       " has kinks (use the quadrature backend, which splits at them)");
    }
  }
  if (!(o.whitened_step > 0.0 && o.whitened_step <= 1.0)) {
    throw InputError("whitened_step = " + Num(o.whitened_step) + ": must lie in (0, 1]");
  }
  ExpectationResult r;
  r.backend = ExpectationBackend::kWhitened;
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(cov);
  r.value = WhitenedQuadrature(f, m, eig, o.whitened_step, false).Run();
  // The same rules made coarser (step ×1.15, Gauss–Hermite nodes ×0.85): with geometric
  // convergence (error ~ e^(−π²/c)) the coarser one's error is ~e^(π²(1 − 1/1.15)/c) ≈ 70 times
  // the finer one's, so their difference bounds the finer one's error.
  // Plus a round-off floor: the sums run over up to ~10^6 nodes.
  r.error_estimate = std::abs(r.value - WhitenedQuadrature(f, m, eig, o.whitened_step, true).Run()) +
                     1e-12 * std::max(1.0, std::abs(r.value));
  return r;
}

// ---------------------------------------------------------------------------------------------
// Hermite diagram formula over standardised factors F_i(z) = f_i(√Σ_ii z + m_i):
//   E[Π F_i] = Σ_M Π_i c_{k_i}(F_i) √(k_i!) / Π_{i<j} m_ij!  Π_{i<j} ρ_ij^{m_ij},
// M symmetric, zero diagonal, row sums k_i.

class Diagram {
 public:
  Diagram(std::vector<std::vector<double>> c, Eigen::MatrixXd rho)
      : c_(std::move(c)), rho_(std::move(rho)), n_(static_cast<int>(c_.size())) {
    for (int i = 0; i < n_; ++i) {
      for (int j = i + 1; j < n_; ++j) pairs_.push_back({i, j});
    }
    k_.assign(n_, 0);
    max_order_.resize(n_);
    for (int i = 0; i < n_; ++i) max_order_[i] = static_cast<int>(c_[i].size()) - 1;
    // Each leaf multiplies c_i[k_i] √(k_i!): the products once here, not exp(lgamma) per leaf.
    for (std::vector<double>& ci : c_) {
      for (std::size_t k = 0; k < ci.size(); ++k) ci[k] = ci[k] * std::exp(0.5 * detail::LogFactorial(static_cast<int>(k)));
    }
  }
  double Sum() {
    total_ = 0;
    Assign(0, 1.0);
    return total_;
  }

 private:
  void Assign(std::size_t p, double weight) {
    if (p == pairs_.size()) {
      double term = weight;
      for (int i = 0; i < n_; ++i) {
        const double c = c_[i][k_[i]];  // c_i[k_i] √(k_i!)
        if (c == 0.0) return;
        term *= c;
      }
      total_ += term;
      return;
    }
    const auto [i, j] = pairs_[p];
    const int room = std::min(max_order_[i] - k_[i], max_order_[j] - k_[j]);
    double w = weight;
    for (int mij = 0; mij <= room; ++mij) {
      if (mij > 0) w *= rho_(i, j) / mij;
      if (w == 0.0) break;
      k_[i] += mij;
      k_[j] += mij;
      Assign(p + 1, w);
      k_[i] -= mij;
      k_[j] -= mij;
    }
  }

  std::vector<std::vector<double>> c_;  // c_i[k] √(k!)
  Eigen::MatrixXd rho_;
  int n_;
  std::vector<std::pair<int, int>> pairs_;
  std::vector<int> k_, max_order_;
  double total_ = 0;
};

ExpectationResult HermiteSeries(const std::vector<LinkPtr>& f, const Eigen::VectorXd& m, const Eigen::MatrixXd& cov,
                                const ExpectationOptions& o) {
  const int n = static_cast<int>(f.size());
  // Factors with zero variance are constants.
  double constant = 1.0;
  std::vector<int> live;
  for (int i = 0; i < n; ++i) {
    if (cov(i, i) <= 0) {
      constant *= f[i]->Value(m[i]);
    } else {
      live.push_back(i);
    }
  }
  const int r = static_cast<int>(live.size());
  // The enumeration grows like K^(pairs among non-polynomial factors); polynomial factors cap
  // their rows at their degree, so only the non-polynomial ones set the order.
  std::size_t non_polynomial = 0;
  for (int i : live) non_polynomial += f[i]->PolynomialDegree() < 0 ? 1 : 0;
  const int truncated_order =
      ByArity(o.hermite_max_order, std::max<std::size_t>(non_polynomial, 1), {kMaxHermiteOrder, kMaxHermiteOrder, 30, 14, 8});
  std::vector<std::vector<double>> c(r);
  std::vector<double> tails(r), norms(r);
  bool exact = true;
  for (int a = 0; a < r; ++a) {
    const int i = live[a];
    const int degree = f[i]->PolynomialDegree();
    const int order = degree >= 0 ? degree : truncated_order;
    exact = exact && degree >= 0;
    const HermiteExpansion e = ExpandHermite(*f[i], order, std::sqrt(cov(i, i)), m[i]);
    c[a] = e.coefficients;
    tails[a] = std::max(0.0, e.tail);
    norms[a] = std::sqrt(std::max(0.0, e.second_moment));
  }
  Eigen::MatrixXd rho = Eigen::MatrixXd::Identity(r, r);
  double rho_max = 0;
  for (int a = 0; a < r; ++a) {
    for (int b = a + 1; b < r; ++b) {
      rho(a, b) = rho(b, a) = cov(live[a], live[b]) / std::sqrt(cov(live[a], live[a]) * cov(live[b], live[b]));
      rho_max = std::max(rho_max, std::abs(rho(a, b)));
    }
  }
  ExpectationResult result;
  result.backend = ExpectationBackend::kHermite;
  result.value = constant * Diagram(c, rho).Sum();
  if (exact) {
    result.error_estimate = 1e-14 * std::max(1.0, std::abs(result.value));
  } else {
    // Truncation estimate: the factor i's neglected part times the others' norms, damped by
    // ρ_max^(K+1) (each neglected order is carried by at least K+1 correlation factors). For two
    // factors this bounds the Mehler tail (Cauchy–Schwarz); for three or more the diagram weights
    // k_i!/Π m_ij! grow with the orders and it does not (relu³ at K = 30 is off by 1.6e-9 where
    // it claims 2e-11), so there the estimate is also 4|S_K − S_(3K/4)|, the change of the sum
    // over the last quarter of the orders (for terms decaying like k^(-p), p ≥ 2, the tail is at
    // most 4/(p − 1) times that change).
    double estimate = 0;
    for (int a = 0; a < r; ++a) {
      double others = 1;
      for (int b = 0; b < r; ++b) others *= b == a ? 1.0 : norms[b];
      estimate += std::sqrt(tails[a]) * others;
    }
    result.error_estimate = std::abs(constant) * estimate * std::pow(rho_max, truncated_order + 1);
    if (r >= 3) {
      std::vector<std::vector<double>> shorter = c;
      for (int a = 0; a < r; ++a) {
        if (f[live[a]]->PolynomialDegree() < 0) shorter[a].resize(static_cast<std::size_t>(3 * truncated_order / 4 + 1));
      }
      const double change = std::abs(constant * Diagram(shorter, rho).Sum() - result.value);
      result.error_estimate = std::max(result.error_estimate, 4 * change);
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Closed forms, zero means (theory.md §2). g = erf_sqrt2.

// E[relu(u) relu(v)] for a zero-mean pair with variances a, b and covariance c (Cho & Saul's
// arc-cosine kernel; 0 when a variance vanishes).
double ReluPair(double a, double b, double c) {
  if (a <= 0 || b <= 0) return 0.0;
  const double rho = std::clamp(c / std::sqrt(a * b), -1.0, 1.0);
  return (std::sqrt(std::max(0.0, a * b - c * c)) + c * (M_PI - std::acos(rho))) / (2 * M_PI);
}

// E[relu(h_0) relu(h_1) relu(h_2)], h ~ N(0, S), S positive definite. F is homogeneous of degree
// 3/2 in S, so (Euler) (3/2)F = Σ_i S_ii ∂F/∂S_ii + Σ_{i<j} S_ij ∂F/∂S_ij, and by Price's theorem
//   ∂F/∂S_ii = ½ E[δ(h_i) relu(h_j) relu(h_k)] = ½ p_i(0) E[relu(h_j) relu(h_k) | h_i = 0]
//   ∂F/∂S_ij = E[1{h_i > 0} 1{h_j > 0} relu(h_k)] = E[h_k 1{h > 0}]
//            = Σ_l S_kl p_l(0) P(h_m > 0 for m ≠ l | h_l = 0)           (Stein's lemma)
// with p_l(0) = (2π S_ll)^(-1/2), the conditional pairs zero-mean with covariance
// S_{-l} − S_{-l,l} S_{l,-l} / S_ll, and P(u > 0, v > 0) = 1/4 + arcsin(r)/(2π).
double ReluTriple(const Eigen::Matrix3d& S) {
  auto conditional = [&](int l, int* j, int* k) {
    *j = (l + 1) % 3, *k = (l + 2) % 3;
    return Eigen::Vector3d(S(*j, *j) - S(*j, l) * S(*j, l) / S(l, l), S(*k, *k) - S(*k, l) * S(*k, l) / S(l, l),
                           S(*j, *k) - S(*j, l) * S(*k, l) / S(l, l));
  };
  double density[3], pair[3], orthant[3];
  for (int l = 0; l < 3; ++l) {
    int j = 0, k = 0;
    const Eigen::Vector3d c = conditional(l, &j, &k);
    density[l] = 1.0 / std::sqrt(2 * M_PI * S(l, l));
    pair[l] = ReluPair(c[0], c[1], c[2]);
    orthant[l] = 0.25 + std::asin(std::clamp(c[2] / std::sqrt(c[0] * c[1]), -1.0, 1.0)) / (2 * M_PI);
  }
  double euler = 0.0;
  for (int i = 0; i < 3; ++i) euler += S(i, i) * 0.5 * density[i] * pair[i];
  for (int i = 0; i < 3; ++i) {
    for (int j = i + 1; j < 3; ++j) {
      const int k = 3 - i - j;
      double first_moment = 0.0;  // E[h_k 1{h > 0}]
      for (int l = 0; l < 3; ++l) first_moment += S(k, l) * density[l] * orthant[l];
      euler += S(i, j) * first_moment;
    }
  }
  return euler * 2.0 / 3.0;
}

// Each closed form as a function of the covariance; false where it does not apply at this S.
using CovarianceRef = Eigen::Ref<const Eigen::MatrixXd>;

bool ErfPair(const CovarianceRef& S, double* v) {
  *v = 2 / M_PI * std::asin(std::clamp(S(0, 1) / std::sqrt((1 + S(0, 0)) * (1 + S(1, 1))), -1.0, 1.0));
  return true;
}

bool ErfDerivativePair(const CovarianceRef& S, double* v) {
  *v = 2 / M_PI / std::sqrt(std::max(1e-300, (1 + S(0, 0)) * (1 + S(1, 1)) - S(0, 1) * S(0, 1)));
  return true;
}

bool ErfThreePoint(const CovarianceRef& S, double* v) {  // E[g'(a) b g(c)]
  const double lambda3 = (1 + S(0, 0)) * (1 + S(2, 2)) - S(0, 2) * S(0, 2);
  *v = 2 / M_PI * (S(1, 2) * (1 + S(0, 0)) - S(0, 1) * S(0, 2)) / ((1 + S(0, 0)) * std::sqrt(std::max(1e-300, lambda3)));
  return true;
}

bool ErfFourPoint(const CovarianceRef& S, double* v) {
  // Saad & Solla's I4 (Goldt et al. 2019, eq. for E[g'(a) g'(b) g(c) g(d)]).
  const double a4 = (1 + S(0, 0)) * (1 + S(1, 1)) - S(0, 1) * S(0, 1);
  const double a0 = a4 * S(2, 3) - S(1, 2) * S(1, 3) * (1 + S(0, 0)) - S(0, 2) * S(0, 3) * (1 + S(1, 1)) +
                    S(0, 1) * S(0, 2) * S(1, 3) + S(0, 1) * S(0, 3) * S(1, 2);
  const double a1 = a4 * (1 + S(2, 2)) - S(1, 2) * S(1, 2) * (1 + S(0, 0)) - S(0, 2) * S(0, 2) * (1 + S(1, 1)) +
                    2 * S(0, 1) * S(0, 2) * S(1, 2);
  const double a2 = a4 * (1 + S(3, 3)) - S(1, 3) * S(1, 3) * (1 + S(0, 0)) - S(0, 3) * S(0, 3) * (1 + S(1, 1)) +
                    2 * S(0, 1) * S(0, 3) * S(1, 3);
  *v = 4 / (M_PI * M_PI) / std::sqrt(a4) * std::asin(std::clamp(a0 / std::sqrt(std::max(1e-300, a1 * a2)), -1.0, 1.0));
  return true;
}

// ErfThreePoint at (a, b_k, v_k) for every pair k: λ3 depends on (a, v) alone, so its square root
// is taken once per index of gram, and the value is linear in the entries of b.
bool ErfThreePointAtPairs(const Eigen::MatrixXd& gram, std::span<const int> fixed,
                          std::span<const std::pair<int, int>> bv, double* out) {
  const int a = fixed[0];
  const double qa = 1 + gram(a, a);
  const int n = static_cast<int>(gram.rows());
  Eigen::VectorXd s(n);  // 2/π / ((1 + S00) √λ3) with u in the third place
  for (int u = 0; u < n; ++u) {
    const double au = gram(a, u);
    s[u] = 2 / M_PI / (qa * std::sqrt(std::max(1e-300, qa * (1 + gram(u, u)) - au * au)));
  }
  for (std::size_t k = 0; k < bv.size(); ++k) {
    const auto [b, v] = bv[k];
    out[k] = (gram(b, v) * qa - gram(a, b) * gram(a, v)) * s[v];
  }
  return true;
}

// ErfFourPoint at (a, b, v_k, w_k) for every pair k: a4 and the prefactor depend on (a, b) alone,
// a1 and a2 on (a, b, v) and (a, b, w), so a1^(-1/2) is taken once per index of gram.
bool ErfFourPointAtPairs(const Eigen::MatrixXd& gram, std::span<const int> fixed,
                         std::span<const std::pair<int, int>> vw, double* out) {
  const int a = fixed[0], b = fixed[1];
  const double qa = 1 + gram(a, a), qb = 1 + gram(b, b), qab = gram(a, b);
  const double a4 = qa * qb - qab * qab;
  const double scale = 4 / (M_PI * M_PI) / std::sqrt(a4);
  const int n = static_cast<int>(gram.rows());
  Eigen::VectorXd r(n);  // a1(u)^(-1/2): the a1 of ErfFourPoint with u in the third place
  for (int u = 0; u < n; ++u) {
    const double au = gram(a, u), bu = gram(b, u);
    const double a1 = a4 * (1 + gram(u, u)) - bu * bu * qa - au * au * qb + 2 * qab * au * bu;
    r[u] = 1 / std::sqrt(std::max(1e-300, a1));
  }
  for (std::size_t k = 0; k < vw.size(); ++k) {
    const auto [v, w] = vw[k];
    const double av = gram(a, v), bv = gram(b, v), aw = gram(a, w), bw = gram(b, w);
    const double a0 = a4 * gram(v, w) - bv * bw * qa - av * aw * qb + qab * (av * bw + aw * bv);
    out[k] = scale * std::asin(std::clamp(a0 * r[v] * r[w], -1.0, 1.0));
  }
  return true;
}

bool ReluPairForm(const CovarianceRef& S, double* v) {
  if (S(0, 0) <= 0 || S(1, 1) <= 0) return false;
  *v = ReluPair(S(0, 0), S(1, 1), S(0, 1));
  return true;
}

bool ReluTripleForm(const CovarianceRef& S, double* v) {
  // Positive definite only (the conditional variances divide): singular S go to the other backends.
  const Eigen::Matrix3d s = S.topLeftCorner<3, 3>();
  const Eigen::SelfAdjointEigenSolver<Eigen::Matrix3d> eig(s);
  if (!(eig.eigenvalues()[0] > 1e-10 * eig.eigenvalues()[2])) return false;
  *v = ReluTriple(s);
  return true;
}

using CentredClosedForm = bool (*)(const CovarianceRef& cov, double* value);
using AtPairsForm = bool (*)(const Eigen::MatrixXd& gram, std::span<const int> fixed,
                             std::span<const std::pair<int, int>> pairs, double* out);

// The table of closed forms: the factors' specs in order, the form, and for some forms one that
// evaluates many pairs of last indices at once (CentredForm::AtPairs).
struct ClosedFormEntry {
  std::vector<const char*> specs;
  CentredClosedForm form;
  AtPairsForm at_pairs = nullptr;
};

const std::vector<ClosedFormEntry>& ClosedForms() {
  static const std::vector<ClosedFormEntry> table = {
      {{"erf_sqrt2", "erf_sqrt2"}, ErfPair},
      {{"d(erf_sqrt2)", "d(erf_sqrt2)"}, ErfDerivativePair},
      {{"d(erf_sqrt2)", "identity", "erf_sqrt2"}, ErfThreePoint, ErfThreePointAtPairs},
      {{"d(erf_sqrt2)", "d(erf_sqrt2)", "erf_sqrt2", "erf_sqrt2"}, ErfFourPoint, ErfFourPointAtPairs},
      {{"relu", "relu"}, ReluPairForm},
      {{"relu", "relu", "relu"}, ReluTripleForm},
  };
  return table;
}

// The closed form of these factors (zero means), or nullptr.
const ClosedFormEntry* FindClosedForm(const std::vector<LinkPtr>& factors) {
  for (const ClosedFormEntry& entry : ClosedForms()) {
    if (entry.specs.size() != factors.size()) continue;
    bool match = true;
    for (std::size_t i = 0; i < factors.size() && match; ++i) match = factors[i]->Spec() == entry.specs[i];
    if (match) return &entry;
  }
  return nullptr;
}

bool ClosedForm(const std::vector<LinkPtr>& f, const Eigen::VectorXd& m, const Eigen::MatrixXd& S,
                ExpectationResult* out) {
  if (m.cwiseAbs().maxCoeff() != 0.0) return false;
  const ClosedFormEntry* entry = FindClosedForm(f);
  double v = 0;
  if (entry == nullptr || !entry->form(S, &v)) return false;
  out->value = v;
  out->error_estimate = 1e-15 * std::max(1.0, std::abs(v));
  out->backend = ExpectationBackend::kClosedForm;
  return true;
}

ExpectationResult MonteCarlo(const std::vector<LinkPtr>& f, const Eigen::VectorXd& m, const Eigen::MatrixXd& cov,
                             const ExpectationOptions& o) {
  const Eigen::MatrixXd L = ConditioningFactor(cov);
  const int n = static_cast<int>(f.size());
  std::mt19937_64 rng(o.monte_carlo_seed);
  std::normal_distribution<double> normal;
  Eigen::VectorXd z(n), h(n);
  long double sum = 0, sum2 = 0;
  for (long long s = 0; s < o.monte_carlo_samples; ++s) {
    for (int i = 0; i < n; ++i) z[i] = normal(rng);
    h = m + L * z;
    double v = 1;
    for (int i = 0; i < n; ++i) v *= f[i]->Value(h[i]);
    sum += v;
    sum2 += static_cast<long double>(v) * v;
  }
  const double N = static_cast<double>(o.monte_carlo_samples);
  ExpectationResult r;
  r.backend = ExpectationBackend::kMonteCarlo;
  r.value = static_cast<double>(sum / N);
  r.error_estimate = std::sqrt(std::max(0.0, static_cast<double>(sum2 / N) - r.value * r.value) / N);
  return r;
}

}  // namespace

namespace detail {

// E[Π p_i(h_i)], h ~ N(0, S), for polynomial factors p_i(h) = Σ_n a_in h^n, as a polynomial in
// the entries of S, enumerated once. By Isserlis' theorem
//   E[Π h_i^(n_i)] = Σ Π_i n_i! / (Π_i l_i! 2^(l_i) Π_(i<j) m_ij!) · Π_i S_ii^(l_i) Π_(i<j) S_ij^(m_ij)
// over the multigraphs with l_i loops at i and m_ij edges between i and j (n_i = 2 l_i + Σ_j m_ij:
// the pairings of the n_i copies of h_i), so E is a fixed list of monomials in S; evaluating it
// costs one product per monomial, over the entries that monomial contains.
class PolynomialMoments {
 public:
  static constexpr int kMaxFactors = 6, kMaxDegree = 8;
  static constexpr std::size_t kMaxTerms = 4096;

  // From each factor's monomial coefficients (degree ≤ kMaxDegree, at most kMaxFactors factors);
  // nullptr if the expectation has more than kMaxTerms monomials.
  static std::shared_ptr<const PolynomialMoments> Build(const std::vector<std::vector<double>>& monomial) {
    auto m = std::make_shared<PolynomialMoments>();
    const int r = static_cast<int>(monomial.size());
    for (int i = 0; i < r; ++i) {
      for (int j = i; j < r; ++j) m->entries_.push_back({i, j});
    }
    static_assert(kMaxFactors * (kMaxFactors + 1) / 2 <= 32 && kMaxDegree < 16);
    auto key = [](const std::vector<std::uint8_t>& exponents) {
      Key k{0, 0};
      for (std::size_t e = 0; e < exponents.size(); ++e) k[e / 16] |= static_cast<std::uint64_t>(exponents[e]) << (4 * (e % 16));
      return k;
    };
    std::map<Key, double> terms;
    std::vector<int> rest(static_cast<std::size_t>(r), 0);
    std::vector<std::uint8_t> exponents(m->entries_.size(), 0);
    bool too_many = false;
    // Graphs with `rest` edge-ends left per vertex, entries from e on; weight so far w.
    std::function<void(std::size_t, double)> graphs = [&](std::size_t e, double w) {
      if (too_many) return;
      if (e == m->entries_.size()) {
        terms[key(exponents)] += w;
        too_many = terms.size() > kMaxTerms;
        return;
      }
      const auto [i, j] = m->entries_[e];
      const bool closes_row = j == r - 1;  // vertex i has no entry after this one
      if (i == j) {
        double wl = w;
        for (int l = 0; 2 * l <= rest[i]; ++l) {
          if (l > 0) wl /= 2.0 * l;  // 1/(l! 2^l)
          if (closes_row && rest[i] != 2 * l) continue;
          rest[i] -= 2 * l;
          exponents[e] = static_cast<std::uint8_t>(l);
          graphs(e + 1, wl);
          rest[i] += 2 * l;
        }
      } else {
        double wm = w;
        for (int k = 0; k <= std::min(rest[i], rest[j]); ++k) {
          if (k > 0) wm /= k;  // 1/m_ij!
          if (closes_row && rest[i] != k) continue;
          rest[i] -= k;
          rest[j] -= k;
          exponents[e] = static_cast<std::uint8_t>(k);
          graphs(e + 1, wm);
          rest[i] += k;
          rest[j] += k;
        }
      }
      exponents[e] = 0;
    };
    // Every choice of one monomial per factor: coefficient Π a_(i n_i) · Π n_i!.
    std::function<void(int, double)> powers = [&](int i, double w) {
      if (too_many) return;
      if (i == r) {
        graphs(0, w);
        return;
      }
      const std::vector<double>& a = monomial[static_cast<std::size_t>(i)];
      for (std::size_t n = 0; n < a.size(); ++n) {
        if (a[n] == 0.0) continue;
        rest[i] = static_cast<int>(n);
        double factorial = 1.0;
        for (std::size_t k = 2; k <= n; ++k) factorial *= static_cast<double>(k);
        powers(i + 1, w * a[n] * factorial);
      }
      rest[i] = 0;
    };
    powers(0, 1.0);
    if (too_many) return nullptr;
    // Each monomial as the indices of its factors S_e^p (p ≥ 1) in the table of powers Value
    // fills, entry by entry, padded to a common width with index 0, where the table holds 1.
    std::vector<std::vector<std::uint16_t>> factors;
    m->max_power_.assign(m->entries_.size(), 0);
    for (const auto& [k, c] : terms) {
      if (c == 0.0) continue;
      m->coefficients_.push_back(c);
      std::vector<std::uint16_t>& f = factors.emplace_back();
      for (std::size_t e = 0; e < m->entries_.size(); ++e) {
        const std::size_t p = Exponent(k, e);
        if (p > 0) f.push_back(static_cast<std::uint16_t>(e * (kMaxDegree + 1) + p));
        m->max_power_[e] = std::max(m->max_power_[e], static_cast<std::uint8_t>(p));
      }
    }
    m->width_ = Pad(factors, &m->factors_);
    if (r >= 2) m->BuildAtPairs(terms, r);
    return m;
  }

  double Value(const Eigen::Ref<const Eigen::MatrixXd>& cov) const {
    PowerTable power;
    for (std::size_t e = 0; e < entries_.size(); ++e) Powers(cov(entries_[e].first, entries_[e].second), e, &power);
    return Sum(coefficients_.data(), coefficients_.size(), factors_.data(), width_, power.data());
  }

  // The expectation at the tuples (fixed..., v_k, w_k) of `gram` (CentredForm::AtPairs), in three
  // levels: the entries among the fixed indices are raised to their powers once, every monomial's
  // product over them is taken once and added into the monomial of the remaining entries it
  // multiplies; likewise, once per run of equal v_k, the products over the entries involving v
  // alone are added into the monomials of the entries involving w; each pair then evaluates that
  // polynomial in its entries involving w.
  void AtPairs(const Eigen::MatrixXd& gram, std::span<const int> fixed, std::span<const std::pair<int, int>> vw,
               double* out) const {
    std::array<int, kMaxFactors> index{};
    std::copy(fixed.begin(), fixed.end(), index.begin());
    PowerTable power;
    const auto powers = [&](const std::vector<std::size_t>& entries) {
      for (const std::size_t e : entries) Powers(gram(index[entries_[e].first], index[entries_[e].second]), e, &power);
    };
    powers(fixed_entries_);
    std::array<double, kMaxTerms> pair_coefficients, w_coefficients;  // on the stack: no allocation per call
    SumGroups(grouped_coefficients_.data(), fixed_factors_.data(), fixed_width_, power.data(), group_end_.data(),
              group_end_.size(), pair_coefficients.data());
    const std::size_t v = fixed.size();
    for (std::size_t k = 0; k < vw.size(); ++k) {
      index[v] = vw[k].first;
      index[v + 1] = vw[k].second;
      if (k == 0 || vw[k].first != vw[k - 1].first) {
        powers(v_entries_);
        SumGroups(pair_coefficients.data(), v_factors_.data(), v_width_, power.data(), w_group_end_.data(), w_terms_,
                  w_coefficients.data());
      }
      powers(w_entries_);
      out[k] = Sum(w_coefficients.data(), w_terms_, w_factors_.data(), w_width_, power.data());
    }
  }

  std::size_t Terms() const { return coefficients_.size(); }

 private:
  // A monomial's key: the exponents of the entries (each ≤ kMaxDegree < 16) as 4-bit digits, 16 per word.
  using Key = std::array<std::uint64_t, 2>;
  static std::size_t Exponent(const Key& k, std::size_t e) {
    return static_cast<std::size_t>((k[e / 16] >> (4 * (e % 16))) & 0xF);
  }

  // Entry e's powers 0..max_power_[e] at e·(kMaxDegree + 1); a monomial's factor s = S_e^p is index
  // e·(kMaxDegree + 1) + p, and index 0 (entry 0's power 0) is 1.
  using PowerTable = std::array<double, kMaxFactors * (kMaxFactors + 1) / 2 * (kMaxDegree + 1)>;
  void Powers(double x, std::size_t e, PowerTable* power) const {
    double* p = power->data() + e * (kMaxDegree + 1);
    p[0] = 1.0;
    for (int k = 1; k <= max_power_[e]; ++k) p[k] = p[k - 1] * x;
  }

  // Each list of factor indices padded with 0 (the table's 1) to the longest, appended to *out;
  // returns that width.
  static std::size_t Pad(std::vector<std::vector<std::uint16_t>>& factors, std::vector<std::uint16_t>* out) {
    std::size_t width = 0;
    for (const std::vector<std::uint16_t>& f : factors) width = std::max(width, f.size());
    for (std::vector<std::uint16_t>& f : factors) {
      f.resize(width, 0);
      out->insert(out->end(), f.begin(), f.end());
    }
    return width;
  }

  // AtPairs' split of the monomials, for the first r − 2 factors fixed: `terms` are Build's
  // monomials by their exponents.
  void BuildAtPairs(const std::map<Key, double>& terms, int r) {
    const int m = r - 2;
    for (std::size_t e = 0; e < entries_.size(); ++e) {
      if (max_power_[e] == 0 && e > 0) continue;  // in no monomial (entry 0 holds the padding's 1)
      const int j = entries_[e].second;
      (j < m ? fixed_entries_ : j == m ? v_entries_ : w_entries_).push_back(e);
    }
    const auto clear = [](Key k, const std::vector<std::size_t>& entries) {
      for (const std::size_t e : entries) k[e / 16] &= ~(std::uint64_t{0xF} << (4 * (e % 16)));
      return k;
    };
    // The monomials grouped by their exponents of the entries involving w and then v (the key with
    // the fixed entries' digits cleared), each with its coefficient and its exponents of the fixed
    // entries; so the groups with equal exponents of the w entries are adjacent.
    std::map<std::pair<Key, Key>, std::vector<std::pair<double, Key>>> groups;
    for (const auto& [k, c] : terms) {
      if (c == 0.0) continue;
      const Key pair_key = clear(k, fixed_entries_);
      groups[{clear(pair_key, v_entries_), pair_key}].emplace_back(c, k);
    }
    const auto factors = [](const Key& k, const std::vector<std::size_t>& entries) {
      std::vector<std::uint16_t> f;
      for (const std::size_t e : entries) {
        if (const std::size_t p = Exponent(k, e); p > 0) f.push_back(static_cast<std::uint16_t>(e * (kMaxDegree + 1) + p));
      }
      return f;
    };
    std::vector<std::vector<std::uint16_t>> fixed_factors, v_factors, w_factors;
    for (auto group = groups.begin(); group != groups.end(); ++group) {
      const auto& [keys, members] = *group;
      const auto& [w_key, pair_key] = keys;
      for (const auto& [c, k] : members) {
        grouped_coefficients_.push_back(c);
        fixed_factors.push_back(factors(k, fixed_entries_));
      }
      group_end_.push_back(grouped_coefficients_.size());
      v_factors.push_back(factors(pair_key, v_entries_));
      if (const auto next = std::next(group); next == groups.end() || next->first.first != w_key) {
        w_factors.push_back(factors(w_key, w_entries_));
        w_group_end_.push_back(v_factors.size());
      }
    }
    w_terms_ = w_factors.size();
    fixed_width_ = Pad(fixed_factors, &fixed_factors_);
    v_width_ = Pad(v_factors, &v_factors_);
    w_width_ = Pad(w_factors, &w_factors_);
  }

  // out[g] = Σ coefficient_t · Π_s power[factor_ts] over the monomials group_end[g − 1] ≤ t <
  // group_end[g] (group_end[−1] = 0), of `width` factors each, summed in order; the common widths
  // with a fixed trip count, which the compiler unrolls.
  template <std::size_t kWidth>
  static void SumGroupsOf(const double* coefficients, const std::uint16_t* f, std::size_t width, const double* power,
                          const std::size_t* group_end, std::size_t groups, double* out) {
    if constexpr (kWidth > 0) width = kWidth;
    std::size_t t = 0;
    for (std::size_t g = 0; g < groups; ++g) {
      double sum = 0.0;
      for (; t < group_end[g]; ++t, f += width) {
        double term = coefficients[t];
        for (std::size_t s = 0; s < width; ++s) term *= power[f[s]];
        sum += term;
      }
      out[g] = sum;
    }
  }
  static void SumGroups(const double* coefficients, const std::uint16_t* f, std::size_t width, const double* power,
                        const std::size_t* group_end, std::size_t groups, double* out) {
    switch (width) {
      case 1: return SumGroupsOf<1>(coefficients, f, width, power, group_end, groups, out);
      case 2: return SumGroupsOf<2>(coefficients, f, width, power, group_end, groups, out);
      case 3: return SumGroupsOf<3>(coefficients, f, width, power, group_end, groups, out);
      case 4: return SumGroupsOf<4>(coefficients, f, width, power, group_end, groups, out);
      case 5: return SumGroupsOf<5>(coefficients, f, width, power, group_end, groups, out);
      case 6: return SumGroupsOf<6>(coefficients, f, width, power, group_end, groups, out);
      default: return SumGroupsOf<0>(coefficients, f, width, power, group_end, groups, out);
    }
  }
  // The sum of the n monomials (one group).
  static double Sum(const double* coefficients, std::size_t n, const std::uint16_t* f, std::size_t width,
                    const double* power) {
    double sum = 0.0;
    SumGroups(coefficients, f, width, power, &n, 1, &sum);
    return sum;
  }

  std::vector<std::pair<int, int>> entries_;  // (i, j), i ≤ j, row by row
  std::vector<std::uint8_t> max_power_;  // per entry, its highest exponent in a monomial
  std::vector<double> coefficients_;
  std::size_t width_ = 0;               // the most entries with a non-zero power in one monomial
  std::vector<std::uint16_t> factors_;  // per monomial, width_ indices into the power table
  // AtPairs: the entries among the fixed indices, those involving v (and not w) and those involving
  // w. The grouped_coefficients_ (with fixed_factors_ over the fixed entries, fixed_width_ each)
  // summed over the groups ending at group_end_ are the coefficients of the monomials
  // over the other entries; those (with v_factors_ over the v entries, v_width_ each) summed over
  // the groups ending at w_group_end_ are the coefficients of the w_terms_ monomials over the w
  // entries (w_factors_, w_width_ each).
  std::vector<std::size_t> fixed_entries_, v_entries_, w_entries_;
  std::vector<double> grouped_coefficients_;
  std::vector<std::uint16_t> fixed_factors_, v_factors_, w_factors_;
  std::vector<std::size_t> group_end_, w_group_end_;
  std::size_t fixed_width_ = 0, v_width_ = 0, w_width_ = 0, w_terms_ = 0;
};

}  // namespace detail

bool CentredForm::operator()(const Eigen::Ref<const Eigen::MatrixXd>& cov, double* value) const {
  if (closed_ != nullptr) return closed_(cov, value);
  if (polynomial_ == nullptr) return false;
  *value = polynomial_->Value(cov);
  return true;
}

bool CentredForm::AtPairs(const Eigen::MatrixXd& gram, std::span<const int> fixed,
                          std::span<const std::pair<int, int>> vw, double* out) const {
  if (!*this || static_cast<int>(fixed.size()) + 2 != factors_) return false;
  if (at_pairs_ != nullptr) return at_pairs_(gram, fixed, vw, out);
  if (polynomial_ != nullptr) {
    polynomial_->AtPairs(gram, fixed, vw, out);
    return true;
  }
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, 0, 8, 8> cov(factors_, factors_);
  std::array<int, 8> i{};
  std::copy(fixed.begin(), fixed.end(), i.begin());
  for (std::size_t k = 0; k < vw.size(); ++k) {
    i[fixed.size()] = vw[k].first;
    i[fixed.size() + 1] = vw[k].second;
    for (int r = 0; r < factors_; ++r) {
      for (int q = 0; q < factors_; ++q) cov(r, q) = gram(i[r], i[q]);
    }
    if (!(*this)(cov, &out[k])) return false;
  }
  return true;
}

std::size_t CentredForm::PolynomialTerms() const { return polynomial_ == nullptr ? 0 : polynomial_->Terms(); }

CentredForm FindCentredForm(const std::vector<LinkPtr>& factors) {
  CentredForm form;
  form.factors_ = static_cast<int>(factors.size());
  if (const ClosedFormEntry* entry = FindClosedForm(factors)) {
    form.closed_ = entry->form;
    form.at_pairs_ = entry->at_pairs;
  }
  if (form.closed_ != nullptr || factors.empty() || factors.size() > detail::PolynomialMoments::kMaxFactors) return form;
  std::vector<std::vector<double>> monomial;
  for (const LinkPtr& f : factors) {
    const int degree = f->PolynomialDegree();
    if (degree < 0 || degree > detail::PolynomialMoments::kMaxDegree) return form;
    monomial.push_back(HermiteToMonomial(f->HermiteCoefficients(degree)));
  }
  form.polynomial_ = detail::PolynomialMoments::Build(monomial);
  return form;
}

const char* ToString(ExpectationBackend backend) {
  switch (backend) {
    case ExpectationBackend::kAuto: return "auto";
    case ExpectationBackend::kClosedForm: return "closed_form";
    case ExpectationBackend::kHermite: return "hermite";
    case ExpectationBackend::kQuadrature: return "quadrature";
    case ExpectationBackend::kMonteCarlo: return "monte_carlo";
    case ExpectationBackend::kWhitened: return "whitened";
  }
  return "?";
}

LinkPtr DerivativeOf(const LinkPtr& link) {
  const int degree = link->PolynomialDegree();
  if (degree < 0) return std::make_shared<DerivativeLink>(link);
  const std::vector<double> c = link->HermiteCoefficients(degree);
  std::vector<double> d(std::max(1, degree), 0.0);  // h_k' = √k h_{k−1}
  for (int k = 1; k <= degree; ++k) d[k - 1] = std::sqrt(static_cast<double>(k)) * c[k];
  return std::make_shared<HermitePolynomialLink>(d, Cat({"d(", link->Spec(), ")"}));
}

LinkPtr TimesShiftedIdentity(const LinkPtr& link, double center) {
  const int degree = link->PolynomialDegree();
  if (degree < 0) return std::make_shared<SteinLink>(link, center);
  const std::vector<double> c = link->HermiteCoefficients(degree);
  std::vector<double> out(degree + 2, 0.0);  // z h_k = √(k+1) h_{k+1} + √k h_{k−1}
  for (int k = 0; k <= degree; ++k) {
    out[k + 1] += std::sqrt(k + 1.0) * c[k];
    if (k > 0) out[k - 1] += std::sqrt(static_cast<double>(k)) * c[k];
    out[k] -= center * c[k];
  }
  return std::make_shared<HermitePolynomialLink>(out, Cat({"(", link->Spec(), ")*(z-", Num(center), ")"}));
}

void ValidateGaussian(const Eigen::VectorXd& mean, const Eigen::MatrixXd& cov, std::size_t factors) {
  const auto n = static_cast<Eigen::Index>(factors);
  if (n == 0) throw InputError("an expectation needs at least one factor");
  if (mean.size() != n || cov.rows() != n || cov.cols() != n) {
    throw InputError("mean has " + std::to_string(mean.size()) + " entries and the covariance is " +
                     std::to_string(cov.rows()) + "x" + std::to_string(cov.cols()) + " for " +
                     std::to_string(n) + " factors: sizes must agree");
  }
  if (!mean.allFinite() || !cov.allFinite()) throw InputError("the mean or the covariance has a NaN or infinite entry");
  const double scale = std::max(1.0, cov.cwiseAbs().maxCoeff());
  if ((cov - cov.transpose()).cwiseAbs().maxCoeff() > 1e-12 * scale) {
    throw InputError("the covariance is not symmetric");
  }
  const double smallest = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(cov, Eigen::EigenvaluesOnly).eigenvalues().minCoeff();
  if (smallest < -1e-12 * scale) {
    throw InputError("the covariance is not positive semi-definite: smallest eigenvalue " + Num(smallest));
  }
}

ExpectationResult Expect(const std::vector<LinkPtr>& factors, const Eigen::VectorXd& mean, const Eigen::MatrixXd& cov,
                         ExpectationBackend backend, const ExpectationOptions& options) {
  if (options.validate) ValidateGaussian(mean, cov, factors.size());
  ExpectationResult result;
  switch (backend) {
    case ExpectationBackend::kAuto: {
      if (ClosedForm(factors, mean, cov, &result)) return result;
      bool all_polynomial = true, any_polynomial = false, kinked = false;
      for (const LinkPtr& f : factors) {
        all_polynomial = all_polynomial && f->PolynomialDegree() >= 0;
        any_polynomial = any_polynomial || f->PolynomialDegree() >= 0;
        kinked = kinked || !f->Kinks().empty();
      }
      if (all_polynomial) return HermiteSeries(factors, mean, cov, options);
      // The conditioning quadrature integrates polynomial factors exactly at inner levels with
      // few nodes (the whitened one spreads their growth over every direction: 250 ms against
      // 8 ms on the four-point He3×sigmoid pair term), and it splits at kinks.
      return kinked || any_polynomial ? Quadrature(factors, mean, cov, options) : Whitened(factors, mean, cov, options);
    }
    case ExpectationBackend::kClosedForm:
      if (!ClosedForm(factors, mean, cov, &result)) {
        std::string specs;
        for (const LinkPtr& f : factors) specs.append(specs.empty() ? "" : ", ").append(f->Spec());
        throw InputError("no closed form for the factors (" + specs + ") with these means");
      }
      return result;
    case ExpectationBackend::kHermite: return HermiteSeries(factors, mean, cov, options);
    case ExpectationBackend::kQuadrature: return Quadrature(factors, mean, cov, options);
    case ExpectationBackend::kMonteCarlo: return MonteCarlo(factors, mean, cov, options);
    case ExpectationBackend::kWhitened: return Whitened(factors, mean, cov, options);
  }
  return result;
}

ExpectationGradient ExpectWithGradient(const std::vector<LinkPtr>& factors, const Eigen::VectorXd& mean,
                                       const Eigen::MatrixXd& cov, ExpectationBackend backend,
                                       const ExpectationOptions& options) {
  const int n = static_cast<int>(factors.size());
  ExpectationGradient g;
  g.value = Expect(factors, mean, cov, backend, options);
  g.d_mean.resize(n);
  g.d_cov.resize(n, n);
  std::vector<LinkPtr> d(n);
  for (int i = 0; i < n; ++i) d[i] = DerivativeOf(factors[i]);
  for (int i = 0; i < n; ++i) {
    std::vector<LinkPtr> f = factors;
    f[i] = d[i];
    g.d_mean[i] = Expect(f, mean, cov, backend, options).value;
    for (int j = i + 1; j < n; ++j) {
      std::vector<LinkPtr> fj = f;
      fj[j] = d[j];
      g.d_cov(i, j) = g.d_cov(j, i) = Expect(fj, mean, cov, backend, options).value;
    }
  }
  // Diagonal (Stein): ∂E/∂Σ_ii = ½ E[∂_i² F] = ½ Σ_k (Σ⁻¹)_ik E[(h_k − m_k) ∂_i F].
  const Eigen::LDLT<Eigen::MatrixXd> ldlt(cov);
  if (ldlt.info() != Eigen::Success || ldlt.vectorD().cwiseAbs().minCoeff() <= 1e-12 * cov.cwiseAbs().maxCoeff()) {
    throw InputError("diagonal covariance derivatives need an invertible covariance");
  }
  const Eigen::MatrixXd inverse = ldlt.solve(Eigen::MatrixXd::Identity(n, n));
  for (int i = 0; i < n; ++i) {
    double sum = 0;
    for (int k = 0; k < n; ++k) {
      std::vector<LinkPtr> f = factors;
      f[i] = d[i];
      f[k] = TimesShiftedIdentity(f[k], mean[k]);
      sum += inverse(i, k) * Expect(f, mean, cov, backend, options).value;
    }
    g.d_cov(i, i) = 0.5 * sum;
  }
  return g;
}

}  // namespace moeflow
