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

// n equally spaced nodes on [−9, 9] with weights h φ(x_i), h = 18/(n − 1): the trapezoidal rule
// for E[g(z)], z standard normal (cached). For g analytic in the strip |Im z| < a its error falls
// like exp(−2πa/h), geometrically in n, where Gauss–Hermite's falls like exp(−a√(2n)): the rule
// for smooth non-polynomial links (sigmoid, tanh, erf at large scales) whose poles or growth lie
// close to the real axis.
const QuadratureRule& GaussianTrapezoid(int n);

}  // namespace moeflow::detail
