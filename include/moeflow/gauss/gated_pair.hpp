// moeflow/gauss/gated_pair.hpp
// The four-point expectation of a pair of gated units (soft routing, theory.md §3.3):
//   T = E[π_u^(i)(r_u) σ_u^(j)(h_u) π_v^(k)(r_v) σ_v^(l)(h_v)]
// for (r_u, h_u, r_v, h_v) jointly Gaussian with unit variances (router and expert projections
// on unit vectors, any correlations, singular allowed), polynomial experts σ and gates π whose
// derivatives are known in closed form (Link::Derivatives: sigmoid, tanh, polynomials).
//
// Method: the Hermite diagram formula (Wick's theorem for Hermite polynomials),
//   E[Π_i f_i(z_i)] = Σ_{n_ab ≥ 0, a<b} Π_{a<b} ρ_ab^{n_ab}/n_ab! · Π_i E[f_i^(deg_i)],
// deg_i = Σ_b n_ib. Every edge touching an expert has finite multiplicity (σ is a polynomial),
// so the sum is finite except along the router-router edge, whose series is summed in closed
// form: Σ_n ρ^n/n! E[π_u^(p+n)] E[π_v^(q+n)] = K_pq(ρ) = E[π_u^(p)(z) π_v^(q)(z')], corr(z,z') = ρ.
// K_pq is smooth on [−1, 1]; it is tabulated once per pair of gates as a Chebyshev series in ρ
// from a 2-D Gauss–Hermite quadrature (about 1e-13 absolute for sigmoid up to p = q = 8).
// An ungated unit (gate nullptr) has π ≡ 1 and router correlations 0.
#pragma once

#include <Eigen/Core>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "moeflow/links/link.hpp"

namespace moeflow {

// The derivative orders (gate, expert) of one factor pair π^(i) σ^(j) of a unit: the output πσ
// and the first and second derivatives of the output with respect to the projections.
enum class UnitVariant { kOutput, kExpert, kRouter, kExpertExpert, kRouterExpert, kRouterRouter };
inline constexpr int kUnitVariants = 6;

class GatedPairKernel {
 public:
  // Correlations of (r_u, h_u, r_v, h_v); set those of a missing router to 0.
  struct Correlations {
    double ru_hu = 0, ru_rv = 0, ru_hv = 0, hu_rv = 0, hu_hv = 0, rv_hv = 0;
  };
  // Per-pair scratch: the router-router kernels K_pq(ρ) and the powers of the other correlations.
  struct Prepared {
    Eigen::VectorXd kernels;                  // the K_pq the terms read, at Term::kernel
    std::array<std::array<double, 16>, 5> powers;
  };

  // Empty if the pair (gate, expert) is supported; otherwise the reason.
  static std::string Unsupported(const Link* gate, const Link& expert);
  // Throws InputError if a unit is unsupported.
  GatedPairKernel(LinkPtr gate_u, LinkPtr expert_u, LinkPtr gate_v, LinkPtr expert_v);

  void Prepare(const Correlations& c, Prepared* prepared) const;
  double Value(UnitVariant u, UnitVariant v, const Prepared& prepared) const;
  // One-off evaluation (tests): Prepare + Value.
  double Value(UnitVariant u, UnitVariant v, const Correlations& c) const;
  // The raw router kernel K_pq(ρ) (tests).
  double RouterKernel(int p, int q, double rho) const;

 private:
  struct Term {
    double coefficient;
    std::array<int, 5> n;  // multiplicities of ru_hu, ru_hv, hu_rv, hu_hv, rv_hv
    int kernel;            // index of K_pq among those the terms read (rows of used_chebyshev_)
  };
  int max_p_ = 0;  // K_pq tabulated for p, q ≤ max_p_
  std::shared_ptr<const Eigen::MatrixXd> chebyshev_;  // ((P+1)², N): coefficients of each K_pq, at p·(P+1) + q
  Eigen::MatrixXd used_chebyshev_;                    // its rows of the K_pq some term reads
  std::array<std::array<std::vector<Term>, kUnitVariants>, kUnitVariants> terms_;
};

}  // namespace moeflow
