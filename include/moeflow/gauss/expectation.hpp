// moeflow/gauss/expectation.hpp
// Gaussian expectations of products of single-projection functions (theory.md §2):
//   E[Π_{i=1..n} f_i(h_i)],   h ~ N(m, Σ),
// for any n (the linear factor h_j is the link `identity`), through one interface that picks
// the most exact backend available and reports an error estimate:
//   closed_form  zero means: E[g(a)g(b)], E[g'(a)g'(b)], E[g'(a) b g(c)], E[g'(a)g'(b)g(c)g(d)]
//                for g = erf_sqrt2 (Saad & Solla; g' = DerivativeOf(g)), and E[relu(a)relu(b)];
//   hermite      the diagram formula: exact and finite for polynomial links, a truncated
//                series with a truncation estimate otherwise;
//   quadrature   recursive Gaussian conditioning h = m + L z (L lower-triangular, pivoted for
//                rank-deficient Σ): level i integrates z_i with Gauss–Hermite nodes (polynomial
//                levels, exactly), the trapezoidal rule on [−9, 9] (smooth links: geometric
//                convergence even with poles near the real axis), or composite Gauss–Legendre
//                panels split exactly at the kinks of f_i mapped to z_i;
//   whitened     tensor quadrature over the eigen-directions of Σ (h = m + UΛ^(1/2)z), smooth and
//                polynomial links only: per direction Gauss–Hermite or the trapezoidal rule with
//                a step set by how fast the direction moves the projections; the cross-check of
//                the conditioning quadrature where the series cannot reach 1e-9 (four smooth
//                factors at high correlation), and kAuto's choice when every link is smooth and
//                non-polynomial (10–100× fewer nodes than the conditioning quadrature at the same
//                accuracy; with polynomial factors the conditioning one is faster);
//   monte_carlo  seeded sampling, value ± standard error (the test oracle).
// Derivatives by Price's theorem: ∂E/∂m_i = E[f_i' Π_{j≠i} f_j], ∂E/∂Σ_ij = E[f_i' f_j' Π_{k≠i,j} f_k]
// for i ≠ j (Σ_ij and Σ_ji moving together), and on the diagonal the Stein form
// ∂E/∂Σ_ii = ½ Σ_k (Σ⁻¹)_ik E[(h_k − m_k) f_i' Π_{j≠i} f_j], which needs only first derivatives
// (kinked links included) and an invertible Σ.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "moeflow/links/link.hpp"

namespace moeflow {

enum class ExpectationBackend { kAuto, kClosedForm, kHermite, kQuadrature, kMonteCarlo, kWhitened };

const char* ToString(ExpectationBackend backend);

struct ExpectationResult {
  double value = 0.0;
  double error_estimate = 0.0;  // absolute; the standard error for Monte Carlo
  ExpectationBackend backend = ExpectationBackend::kAuto;
};

struct ExpectationOptions {
  // Truncation order of the Hermite series of non-polynomial factors; 0: by the number r of
  // non-polynomial factors (r ≤ 2: 100, r = 3: 30, r = 4: 14, more: 8), which bounds the
  // diagram enumeration (polynomial factors cap their rows at their degree).
  int hermite_max_order = 0;
  // Trapezoidal nodes per level for smooth non-polynomial factors; 0: by the number r of
  // non-polynomial factors (r ≤ 2: 200, r = 3: 128, r = 4: 64, more: 24). Non-polynomial
  // factors are integrated at the outer levels; the polynomial ones inside, exactly.
  int quadrature_nodes = 0;
  // Kinked links: Gauss–Legendre panels with edges ±{0, .75, 1.5, 2.5, 3.75, 5.25, 7, 9}·scale
  // plus the kinks (and where later factors' kinks fall); width 1 covers |z| ≤ 9.
  double kinked_panel_width = 1.0;
  int kinked_panel_nodes = 10;
  // Whitened backend: the trapezoidal step of a direction is whitened_step / s, s the largest
  // rate at which the direction moves a projection (error ~ exp(−π²/whitened_step) for links
  // analytic in the strip |Im z| < π/2); its error estimate reruns at a 15% longer step.
  double whitened_step = 0.27;
  // Check (m, Σ) with ValidateGaussian first. Models that build Σ from their own (checked)
  // state turn this off: it costs an eigen-decomposition per call, and integration round-off
  // may leave eigenvalues at −1e-12.
  bool validate = true;
  long long monte_carlo_samples = 1'000'000;
  std::uint64_t monte_carlo_seed = 1;
};

// Validates (m, Σ) for n factors: sizes, finiteness, symmetry and positive semi-definiteness
// (smallest eigenvalue ≥ −1e-12·max(1, max|Σ|)). Throws InputError naming the rule.
void ValidateGaussian(const Eigen::VectorXd& mean, const Eigen::MatrixXd& cov, std::size_t factors);

// E[Π f_i(h_i)] with the requested backend (kAuto: closed form, else exact Hermite for
// polynomial links, else the whitened quadrature if every link is smooth and non-polynomial,
// else the conditioning quadrature, which splits at kinks). Closed forms, zero means: erf_sqrt2 two-, three- and
// four-point (Saad–Solla), relu two-point (arc-cosine) and three-point (positive definite Σ). Throws InputError for bad input or a backend that does
// not apply (closed_form for links without one).
ExpectationResult Expect(const std::vector<LinkPtr>& factors, const Eigen::VectorXd& mean,
                         const Eigen::MatrixXd& cov,
                         ExpectationBackend backend = ExpectationBackend::kAuto,
                         const ExpectationOptions& options = {});

namespace detail {
class PolynomialMoments;
}

// E[Π f_i(h_i)] for zero means, h ~ N(0, S), prepared once for a list of factors as a function of
// S alone, for a caller that evaluates the same factors at many covariances (a model's right-hand
// side: it skips Expect's dispatch by link names, its allocations and, for polynomials, the
// Hermite re-expansion at every call). Two kinds:
//   closed forms  those Expect uses (erf_sqrt2, relu; the list above): Expect's value bit for bit;
//   polynomials   every factor a polynomial of degree ≤ 8, at most 6 factors: Isserlis' theorem
//                 enumerated once into a polynomial in the entries of S (at most 4096 monomials),
//                 equal to the Hermite series up to round-off.
// Empty (false) for other factors; the caller then asks Expect.
class CentredForm {
 public:
  CentredForm() = default;
  explicit operator bool() const { return closed_ != nullptr || polynomial_ != nullptr; }
  // The expectation at covariance `cov` (n×n); false, leaving *value, where the form does not
  // apply at this cov (relu: a zero variance, a singular triple) or is empty.
  bool operator()(const Eigen::Ref<const Eigen::MatrixXd>& cov, double* value) const;
  // The form at the index tuples (i_1, ..., i_m, v_k, w_k) of one covariance matrix `gram`, the
  // first m = factors − 2 indices `fixed`, the last two the pairs vw[k] = (v_k, w_k):
  // out[k] = E[f_1(h_i_1) ... f_m(h_i_m) f_(m+1)(h_v_k) f_(m+2)(h_w_k)], h ~ N(0, gram). The same
  // values as the form at each tuple's submatrix, up to rounding. Each form computes once for all
  // pairs what depends on the fixed indices alone, or on them and one of v, w: erf its
  // normalisations and square roots; a polynomial the products of its monomials over the entries
  // among the fixed indices, summed into the (fewer) monomials of the entries that involve v or w
  // (the He3 four-point term: 48 per pair instead of 86). false, with out unspecified, where the
  // form does not apply at some tuple, is empty, or `fixed` does not leave it two factors.
  bool AtPairs(const Eigen::MatrixXd& gram, std::span<const int> fixed, std::span<const std::pair<int, int>> vw,
               double* out) const;
  // The number of monomials of a polynomial form (0 for a closed form).
  std::size_t PolynomialTerms() const;

 private:
  friend CentredForm FindCentredForm(const std::vector<LinkPtr>& factors);
  bool (*closed_)(const Eigen::Ref<const Eigen::MatrixXd>&, double*) = nullptr;
  bool (*at_pairs_)(const Eigen::MatrixXd&, std::span<const int>, std::span<const std::pair<int, int>>, double*) = nullptr;
  int factors_ = 0;
  std::shared_ptr<const detail::PolynomialMoments> polynomial_;
};

CentredForm FindCentredForm(const std::vector<LinkPtr>& factors);

struct ExpectationGradient {
  ExpectationResult value;
  Eigen::VectorXd d_mean;  // ∂E/∂m_i
  Eigen::MatrixXd d_cov;   // symmetric: off-diagonal ∂E/∂Σ_ij with Σ_ij = Σ_ji moving together
};

// Value and derivatives (requires Σ invertible for the diagonal derivatives).
ExpectationGradient ExpectWithGradient(const std::vector<LinkPtr>& factors, const Eigen::VectorXd& mean,
                                       const Eigen::MatrixXd& cov,
                                       ExpectationBackend backend = ExpectationBackend::kAuto,
                                       const ExpectationOptions& options = {});

// A link's derivative as a link (for Price's theorem and the closed forms E[g'...]).
LinkPtr DerivativeOf(const LinkPtr& link);
// f(h)·(h − center) as a link (the Stein factor).
LinkPtr TimesShiftedIdentity(const LinkPtr& link, double center);

}  // namespace moeflow
