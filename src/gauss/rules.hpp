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

// A rule for E[g(z)], z ~ N(0, I_m): Σ_i w[i] g(x_i) with x_i = x[i·m .. i·m + m).
struct CubatureRule {
  int dimension = 0;
  std::vector<double> x, w;
  int size() const { return static_cast<int>(w.size()); }
};

// The Smolyak sparse grid of level k on `dimension` coordinates (Novak & Ritter 1999): the
// combination Σ (−1)^(k−e) C(m−1, k−e) U^(i_1) ⊗ … ⊗ U^(i_m) over the multi-indices with
// e = Σ (i_j − 1) ≤ k, U^i the i-point Gauss–Hermite rule, coinciding nodes merged. Exact for
// every polynomial of total degree ≤ 2k + 1; some weights are negative. O(m^k) nodes (m = 7,
// k = 3: 495). dimension 0: the single node of weight 1.
CubatureRule SparseGaussHermite(int dimension, int k);

}  // namespace moeflow::detail
