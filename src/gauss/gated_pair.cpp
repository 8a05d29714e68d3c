#include "moeflow/gauss/gated_pair.hpp"

#include <cmath>
#include <map>
#include <mutex>

#include "gauss/rules.hpp"
#include "moeflow/error.hpp"

namespace moeflow {
namespace {

constexpr int kChebyshevNodes = 64;    // Chebyshev series length of each K_pq(ρ) on [−1, 1]
constexpr int kQuadratureNodes = 160;  // Gauss–Hermite nodes per dimension when tabulating
constexpr int kMaxExpertDegree = 8;

// (gate order, expert order) of each variant.
constexpr std::array<std::array<int, 2>, kUnitVariants> kOrders = {
    {{0, 0}, {0, 1}, {1, 0}, {0, 2}, {1, 1}, {2, 0}}};

// π, π', ..., π^(n) at z; π ≡ 1 for an ungated unit.
void GateTower(const Link* gate, double z, int n, double* out) {
  if (gate == nullptr) {
    out[0] = 1.0;
    for (int j = 1; j <= n; ++j) out[j] = 0.0;
    return;
  }
  gate->Derivatives(z, n, out);
}

// Chebyshev coefficients of K_pq(ρ) = E[π_u^(p)(z) π_v^(q)(ρ z + √(1−ρ²) ξ)], p, q ≤ max_p.
Eigen::MatrixXd TabulateRouterKernels(const Link* gate_u, const Link* gate_v, int max_p) {
  const int kernels = (max_p + 1) * (max_p + 1);
  const detail::QuadratureRule& gh = detail::GaussHermite(kQuadratureNodes);
  const int nq = static_cast<int>(gh.x.size());
  // π_u tower at the nodes, once.
  Eigen::MatrixXd tower_u(max_p + 1, nq);
  for (int i = 0; i < nq; ++i) GateTower(gate_u, gh.x[i], max_p, tower_u.col(i).data());
  Eigen::MatrixXd values(kernels, kChebyshevNodes);
  Eigen::VectorXd tower(max_p + 1), inner(max_p + 1);
  for (int m = 0; m < kChebyshevNodes; ++m) {
    const double rho = std::cos(M_PI * (m + 0.5) / kChebyshevNodes);
    const double s = std::sqrt(std::max(0.0, 1.0 - rho * rho));
    Eigen::MatrixXd k = Eigen::MatrixXd::Zero(max_p + 1, max_p + 1);
    for (int i = 0; i < nq; ++i) {
      inner.setZero();
      for (int j = 0; j < nq; ++j) {
        GateTower(gate_v, rho * gh.x[i] + s * gh.x[j], max_p, tower.data());
        inner += gh.w[j] * tower;
      }
      k += gh.w[i] * tower_u.col(i) * inner.transpose();
    }
    for (int p = 0; p <= max_p; ++p) {
      for (int q = 0; q <= max_p; ++q) values(p * (max_p + 1) + q, m) = k(p, q);
    }
  }
  Eigen::MatrixXd coefficients(kernels, kChebyshevNodes);
  for (int n = 0; n < kChebyshevNodes; ++n) {
    Eigen::VectorXd c = Eigen::VectorXd::Zero(kernels);
    for (int m = 0; m < kChebyshevNodes; ++m) c += values.col(m) * std::cos(M_PI * n * (m + 0.5) / kChebyshevNodes);
    coefficients.col(n) = c * ((n == 0 ? 1.0 : 2.0) / kChebyshevNodes);
  }
  return coefficients;
}

// Tables are shared by every kernel with the same gates (tabulating costs ~0.1 s).
std::shared_ptr<const Eigen::MatrixXd> RouterKernels(const Link* gate_u, const Link* gate_v, int max_p) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const Eigen::MatrixXd>> cache;
  const std::string key = (gate_u ? gate_u->Spec() : std::string("1")) + "|" +
                          (gate_v ? gate_v->Spec() : std::string("1")) + "|" + std::to_string(max_p);
  const std::lock_guard<std::mutex> lock(mutex);
  auto& entry = cache[key];
  if (!entry) entry = std::make_shared<const Eigen::MatrixXd>(TabulateRouterKernels(gate_u, gate_v, max_p));
  return entry;
}

// E[σ^(m)] = √(m!) c_m, m = 0..degree.
std::vector<double> DerivativeMeans(const Link& expert) {
  const int degree = expert.PolynomialDegree();
  const std::vector<double> c = expert.HermiteCoefficients(degree);
  std::vector<double> means(static_cast<std::size_t>(degree) + 1);
  for (int m = 0; m <= degree; ++m) means[m] = std::exp(0.5 * std::lgamma(m + 1.0)) * c[m];
  return means;
}

double Factorial(int n) { return std::tgamma(n + 1.0); }

// T_0(ρ), ..., T_(N−1)(ρ), on the stack.
Eigen::Matrix<double, kChebyshevNodes, 1> ChebyshevBasis(double rho) {
  Eigen::Matrix<double, kChebyshevNodes, 1> t;
  t[0] = 1.0;
  t[1] = rho;
  for (int n = 1; n + 1 < kChebyshevNodes; ++n) t[n + 1] = 2 * rho * t[n] - t[n - 1];
  return t;
}

}  // namespace

std::string GatedPairKernel::Unsupported(const Link* gate, const Link& expert) {
  const int degree = expert.PolynomialDegree();
  if (degree < 0 || degree > kMaxExpertDegree) {
    return "the expert link '" + expert.Spec() + "' must be a polynomial of degree at most " +
           std::to_string(kMaxExpertDegree) + " (gated units use the exact diagram formula)";
  }
  double tower[3];
  if (gate != nullptr && !gate->Derivatives(0.0, 2, tower)) {
    return "the gate link '" + gate->Spec() +
           "' has no closed-form higher derivatives (supported gates: sigmoid, tanh, polynomials)";
  }
  return {};
}

GatedPairKernel::GatedPairKernel(LinkPtr gate_u, LinkPtr expert_u, LinkPtr gate_v, LinkPtr expert_v) {
  for (const auto& [gate, expert] : {std::pair{gate_u.get(), expert_u.get()}, std::pair{gate_v.get(), expert_v.get()}}) {
    const std::string why = Unsupported(gate, *expert);
    if (!why.empty()) throw InputError(why);
  }
  const std::vector<double> mu = DerivativeMeans(*expert_u), mv = DerivativeMeans(*expert_v);
  const int du = static_cast<int>(mu.size()) - 1, dv = static_cast<int>(mv.size()) - 1;
  max_p_ = 2 + du + dv;
  chebyshev_ = RouterKernels(gate_u.get(), gate_v.get(), max_p_);
  for (int vu = 0; vu < kUnitVariants; ++vu) {
    for (int vv = 0; vv < kUnitVariants; ++vv) {
      const auto [i, j] = kOrders[vu];
      const auto [k, l] = kOrders[vv];
      std::vector<Term>& terms = terms_[vu][vv];
      if ((!gate_u && i > 0) || (!gate_v && k > 0)) continue;  // π ≡ 1 has no derivatives
      // Edges: 0 ru_hu, 1 ru_hv, 2 hu_rv, 3 hu_hv, 4 rv_hv; deg h_u = n0+n2+n3, deg h_v = n1+n3+n4.
      std::array<int, 5> n{};
      for (n[3] = 0; n[3] <= std::min(du, dv); ++n[3]) {
        for (n[0] = 0; n[3] + n[0] <= du; ++n[0]) {
          for (n[2] = 0; n[3] + n[0] + n[2] <= du; ++n[2]) {
            for (n[1] = 0; n[3] + n[1] <= dv; ++n[1]) {
              for (n[4] = 0; n[3] + n[1] + n[4] <= dv; ++n[4]) {
                const int a = j + n[0] + n[2] + n[3], b = l + n[1] + n[3] + n[4];
                if (a > du || b > dv) continue;
                const int p = i + n[0] + n[1], q = k + n[2] + n[4];
                if ((!gate_u && p > 0) || (!gate_v && q > 0)) continue;
                double coefficient = mu[a] * mv[b];
                if (coefficient == 0.0) continue;
                for (int e : n) coefficient /= Factorial(e);
                terms.push_back({coefficient, n, p * (max_p_ + 1) + q});
              }
            }
          }
        }
      }
    }
  }
  // Only the kernels some term reads (He3 experts: 60 of the 81 K_pq), renumbered in order.
  std::vector<int> row((max_p_ + 1) * (max_p_ + 1), -1);
  for (const auto& by_v : terms_) {
    for (const std::vector<Term>& terms : by_v) {
      for (const Term& term : terms) row[term.kernel] = 0;
    }
  }
  std::vector<int> used;
  for (int k = 0; k < static_cast<int>(row.size()); ++k) {
    if (row[k] == 0) {
      row[k] = static_cast<int>(used.size());
      used.push_back(k);
    }
  }
  used_chebyshev_.resize(static_cast<Eigen::Index>(used.size()), chebyshev_->cols());
  for (std::size_t k = 0; k < used.size(); ++k) used_chebyshev_.row(static_cast<Eigen::Index>(k)) = chebyshev_->row(used[k]);
  for (auto& by_v : terms_) {
    for (std::vector<Term>& terms : by_v) {
      for (Term& term : terms) term.kernel = row[term.kernel];
    }
  }
}

void GatedPairKernel::Prepare(const Correlations& c, Prepared* prepared) const {
  prepared->kernels.noalias() = used_chebyshev_ * ChebyshevBasis(std::clamp(c.ru_rv, -1.0, 1.0));
  const double edges[5] = {c.ru_hu, c.ru_hv, c.hu_rv, c.hu_hv, c.rv_hv};
  for (int e = 0; e < 5; ++e) {
    double power = 1.0;
    for (double& slot : prepared->powers[e]) {
      slot = power;
      power *= edges[e];
    }
  }
}

double GatedPairKernel::Value(UnitVariant u, UnitVariant v, const Prepared& prepared) const {
  double sum = 0.0;
  for (const Term& term : terms_[static_cast<int>(u)][static_cast<int>(v)]) {
    double product = term.coefficient * prepared.kernels[term.kernel];
    for (int e = 0; e < 5; ++e) product *= prepared.powers[e][term.n[e]];
    sum += product;
  }
  return sum;
}

double GatedPairKernel::Value(UnitVariant u, UnitVariant v, const Correlations& c) const {
  Prepared prepared;
  Prepare(c, &prepared);
  return Value(u, v, prepared);
}

double GatedPairKernel::RouterKernel(int p, int q, double rho) const {
  return chebyshev_->row(p * (max_p_ + 1) + q).dot(ChebyshevBasis(std::clamp(rho, -1.0, 1.0)));
}

}  // namespace moeflow
