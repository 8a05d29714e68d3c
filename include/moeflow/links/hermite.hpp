// moeflow/links/hermite.hpp
// Hermite expansions of links, f(a z + b) = Σ_k c_k h_k(z), z ~ N(0, 1), h_k = He_k/√k!.
//
// Two independent methods:
//  - exact algebra for polynomial links: the scaling formula
//      He_n(γ u) = Σ_j γ^(n−2j) (γ²−1)^j n!/(j!(n−2j)! 2^j) He_(n−2j)(u)
//    and the Appell shift He_n(u + s) = Σ_r C(n,r) s^(n−r) He_r(u) (theory.md §2);
//  - composite Gauss–Legendre quadrature of f(a z + b) h_k(z) φ(z) on [−L, L] with panels
//    split at the link's kinks (mapped to z = (kink − b)/a), for every other link. L grows with
//    K so that the neglected tails are below 1e-16 relative.
#pragma once

#include <vector>

#include "moeflow/links/link.hpp"

namespace moeflow {

// The largest Hermite order any expansion accepts.
inline constexpr int kMaxHermiteOrder = 100;

// |c_k| above this (relative to max(1, sqrt(E[f²]))) counts as non-zero when the information
// exponent is detected.
inline constexpr double kInformationExponentTolerance = 1e-10;

struct HermiteExpansion {
  std::vector<double> coefficients;  // c_0..c_K of f(a z + b)
  double second_moment = 0.0;        // E[f(a z + b)²]
  double tail = 0.0;                 // E[f²] − Σ_{k≤K} c_k² (the part the series misses)
  int information_exponent = -1;     // min{k ≥ 1: |c_k| > tolerance}, −1 if none up to K
};

// Expansion of f(a z + b) to order K. Throws InputError for K outside [0, kMaxHermiteOrder],
// a ≤ 0 or non-finite a, b.
HermiteExpansion ExpandHermite(const Link& f, int max_order, double scale = 1.0, double shift = 0.0);

// The same by quadrature only (no exact polynomial path): the independent cross-check.
HermiteExpansion ExpandHermiteByQuadrature(const Link& f, int max_order, double scale = 1.0,
                                           double shift = 0.0);

// Exact: coefficients of p(a z + b) from the coefficients of p = Σ_k c_k h_k.
std::vector<double> ScaleShiftHermiteCoefficients(const std::vector<double>& c, double scale, double shift);

// Normalised Hermite coefficients of the monomial-basis polynomial Σ_n a_n z^n.
std::vector<double> MonomialToHermite(const std::vector<double>& monomial);
// Its inverse: the monomial coefficients a_n of Σ_k c_k h_k.
std::vector<double> HermiteToMonomial(const std::vector<double>& c);

}  // namespace moeflow
