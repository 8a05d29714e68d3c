// Internal: one-dimensional quadrature rules shared by the Hermite expansions and the
// Gaussian expectations.
#pragma once

#include <vector>

namespace moeflow::detail {

struct QuadratureRule {
  std::vector<double> x, w;
};

// n-point Gauss–Legendre rule on [-1, 1] (Newton on the Legendre recurrence; cached).
const QuadratureRule& GaussLegendre(int n);

// n-point Gauss–Hermite rule for the standard normal density: Σ w_i g(x_i) ≈ E[g(z)],
// exact for polynomials of degree ≤ 2n − 1 (Golub–Welsch; cached).
const QuadratureRule& GaussHermite(int n);

}  // namespace moeflow::detail
