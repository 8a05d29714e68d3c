#include "moeflow/links/hermite.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "moeflow/error.hpp"
#include "gauss/rules.hpp"
#include "links/factorial.hpp"
#include "moeflow/links/polynomial.hpp"

namespace moeflow {
namespace {

constexpr int kLegendrePoints = 20;
constexpr double kPanelWidth = 0.25;  // in z, for scale a <= 1; divided by a above

// log(n!/(j! (n−2j)! 2^j)), the number of ways to pick j disjoint pairs among n: the coefficient
// of z^(n−2j) in He_n(z) up to the sign (−1)^j, and of He_(n−2j)(z) in z^n.
double LogPairings(int n, int j) {
  return detail::LogFactorial(n) - detail::LogFactorial(j) - detail::LogFactorial(n - 2 * j) - j * std::log(2.0);
}

// Half-width of the integration interval: beyond L, φ(z)·|h_K(z)|·(1 + |a z| + |b|) < 1e-18.
double HalfWidth(int max_order, double scale, double shift) {
  double L = 8.0;
  auto log_tail = [&](double z) {
    return -0.5 * z * z - 0.5 * std::log(2 * M_PI) + max_order * std::log(z) -
           0.5 * std::lgamma(max_order + 1.0) + 2 * std::log(1 + scale * z + std::abs(shift));
  };
  while (log_tail(L) > std::log(1e-18)) L += 0.5;
  return L;
}

void Validate(int max_order, double scale, double shift) {
  if (max_order < 0 || max_order > kMaxHermiteOrder) {
    ThrowBadValue("order", std::to_string(max_order),
                  "must be an integer in [0, " + std::to_string(kMaxHermiteOrder) + "]");
  }
  if (!(scale > 0) || !std::isfinite(scale)) {
    std::ostringstream v;
    v << scale;
    ThrowBadValue("scale", v.str(), "must be a finite number > 0");
  }
  if (!std::isfinite(shift)) ThrowBadValue("shift", "non-finite", "must be a finite number");
}

void Finish(HermiteExpansion* e) {
  double sum = 0;
  for (double c : e->coefficients) sum += c * c;
  e->tail = e->second_moment - sum;
  const double tolerance = kInformationExponentTolerance * std::max(1.0, std::sqrt(e->second_moment));
  e->information_exponent = -1;
  for (std::size_t k = 1; k < e->coefficients.size(); ++k) {
    if (std::abs(e->coefficients[k]) > tolerance) {
      e->information_exponent = static_cast<int>(k);
      break;
    }
  }
}

}  // namespace

std::vector<double> Link::HermiteCoefficients(int max_order) const {
  return ExpandHermiteByQuadrature(*this, max_order).coefficients;
}

HermiteExpansion ExpandHermiteByQuadrature(const Link& f, int max_order, double scale, double shift) {
  Validate(max_order, scale, shift);
  const double L = HalfWidth(max_order, scale, shift);
  const double width = kPanelWidth / std::max(1.0, scale);
  std::vector<double> edges;
  const int panels = static_cast<int>(std::ceil(2 * L / width));
  for (int i = 0; i <= panels; ++i) edges.push_back(-L + 2 * L * i / panels);
  for (double kink : f.Kinks()) {
    const double z = (kink - shift) / scale;
    if (z > -L && z < L) edges.push_back(z);
  }
  std::sort(edges.begin(), edges.end());

  HermiteExpansion e;
  e.coefficients.assign(static_cast<std::size_t>(max_order) + 1, 0.0);
  const detail::QuadratureRule& rule = detail::GaussLegendre(kLegendrePoints);
  const std::size_t orders = static_cast<std::size_t>(max_order) + 1;
  std::vector<long double> acc(orders, 0.0L);
  long double second = 0.0L;
  // The recurrence h_(k+1) = (z h_k − √k h_(k−1))/√(k+1), its square roots tabulated once, run
  // for the panel's points together (independent chains: the loop over points vectorises); each
  // panel's sums are formed in double and accumulated in long double.
  std::vector<double> root(orders + 1), inverse_root(orders + 1);
  for (std::size_t k = 0; k < root.size(); ++k) {
    root[k] = std::sqrt(static_cast<double>(k));
    inverse_root[k] = k > 0 ? 1.0 / root[k] : 0.0;
  }
  constexpr int P = kLegendrePoints;
  double z[P], wf[P], previous[P], current[P], next[P];
  for (std::size_t p = 0; p + 1 < edges.size(); ++p) {
    const double lo = edges[p], hi = edges[p + 1];
    if (hi - lo <= 0) continue;
    const double mid = 0.5 * (lo + hi), half = 0.5 * (hi - lo);
    double panel_second = 0.0, panel_zero = 0.0;
    for (int i = 0; i < P; ++i) {
      z[i] = mid + half * rule.x[i];
      const double fz = f.Value(scale * z[i] + shift);
      wf[i] = half * rule.w[i] * std::exp(-0.5 * z[i] * z[i]) / std::sqrt(2 * M_PI) * fz;
      panel_second += wf[i] * fz;
      panel_zero += wf[i];
      previous[i] = 1.0;
      current[i] = z[i];
    }
    second += panel_second;
    acc[0] += panel_zero;
    for (std::size_t k = 1; k < orders; ++k) {
      double sum = 0.0;
      for (int i = 0; i < P; ++i) sum += wf[i] * current[i];
      acc[k] += sum;
      const double a = root[k], b = inverse_root[k + 1];
      for (int i = 0; i < P; ++i) {
        next[i] = (z[i] * current[i] - a * previous[i]) * b;
        previous[i] = current[i];
        current[i] = next[i];
      }
    }
  }
  for (std::size_t k = 0; k < acc.size(); ++k) e.coefficients[k] = static_cast<double>(acc[k]);
  e.second_moment = static_cast<double>(second);
  Finish(&e);
  return e;
}

std::vector<double> ScaleShiftHermiteCoefficients(const std::vector<double>& c, double scale, double shift) {
  if (scale == 1.0 && shift == 0.0) return c;  // the identity map, exactly
  const int degree = static_cast<int>(c.size()) - 1;
  // To the He basis: α_n = c_n / √n!.
  std::vector<double> scaled(c.size(), 0.0);  // He coefficients of p(a u), u = z + b/a
  const double g = scale, g2m1 = scale * scale - 1;
  for (int n = 0; n <= degree; ++n) {
    if (c[n] == 0) continue;
    const double alpha = c[n] * std::exp(-0.5 * detail::LogFactorial(n));
    for (int j = 0; 2 * j <= n; ++j) {
      if (j > 0 && g2m1 == 0) break;
      const double t = std::exp(LogPairings(n, j));
      scaled[n - 2 * j] += alpha * t * std::pow(g, n - 2 * j) * std::pow(g2m1, j);
    }
  }
  std::vector<double> shifted(c.size(), 0.0);  // He coefficients in z
  const double s = shift / scale;
  for (int m = 0; m <= degree; ++m) {
    if (scaled[m] == 0) continue;
    for (int r = 0; r <= m; ++r) {
      const double binomial = std::exp(detail::LogFactorial(m) - detail::LogFactorial(r) - detail::LogFactorial(m - r));
      shifted[r] += scaled[m] * binomial * std::pow(s, m - r);
    }
  }
  for (int r = 0; r <= degree; ++r) shifted[r] *= std::exp(0.5 * detail::LogFactorial(r));
  return shifted;
}

std::vector<double> MonomialToHermite(const std::vector<double>& monomial) {
  // z^n = Σ_j n!/(j!(n−2j)! 2^j) He_(n−2j)(z), He_m = √m! h_m: the scaling formula at γ → ∞
  // is not usable, so expand directly.
  std::vector<double> c(monomial.size(), 0.0);
  for (int n = 0; n < static_cast<int>(monomial.size()); ++n) {
    if (monomial[n] == 0) continue;
    for (int j = 0; 2 * j <= n; ++j) {
      const int m = n - 2 * j;
      c[m] += monomial[n] * std::exp(LogPairings(n, j) + 0.5 * detail::LogFactorial(m));
    }
  }
  return c;
}

std::vector<double> HermiteToMonomial(const std::vector<double>& c) {
  // h_k = He_k/√k!, He_k(z) = Σ_j (−1)^j k!/(j!(k−2j)! 2^j) z^(k−2j).
  std::vector<double> a(c.size(), 0.0);
  for (int k = 0; k < static_cast<int>(c.size()); ++k) {
    if (c[k] == 0.0) continue;
    for (int j = 0; 2 * j <= k; ++j) {
      const double he = std::exp(LogPairings(k, j) - 0.5 * detail::LogFactorial(k));
      a[k - 2 * j] += (j % 2 == 0 ? 1.0 : -1.0) * he * c[k];
    }
  }
  return a;
}

HermiteExpansion ExpandHermite(const Link& f, int max_order, double scale, double shift) {
  Validate(max_order, scale, shift);
  const int degree = f.PolynomialDegree();
  if (degree < 0) return ExpandHermiteByQuadrature(f, max_order, scale, shift);
  HermiteExpansion e;
  const std::vector<double> c = ScaleShiftHermiteCoefficients(f.HermiteCoefficients(degree), scale, shift);
  e.second_moment = 0;
  for (double v : c) e.second_moment += v * v;  // exact: the expansion is finite
  e.coefficients.assign(static_cast<std::size_t>(max_order) + 1, 0.0);
  for (int k = 0; k <= std::min(degree, max_order); ++k) e.coefficients[k] = c[k];
  Finish(&e);
  return e;
}

}  // namespace moeflow
