// log n! from a table built once: the Hermite expansions and the diagram sums ask for it at every
// expectation (std::lgamma was a quarter of the He3 committee's right-hand side). The table holds
// std::lgamma(n + 1.0) itself, so results are unchanged bit for bit.
#pragma once

#include <array>
#include <cmath>

namespace moeflow::detail {

inline double LogFactorial(int n) {
  constexpr int kSize = 256;
  static const std::array<double, kSize> table = [] {
    std::array<double, kSize> t{};
    for (int k = 0; k < kSize; ++k) t[static_cast<std::size_t>(k)] = std::lgamma(k + 1.0);
    return t;
  }();
  return n >= 0 && n < kSize ? table[static_cast<std::size_t>(n)] : std::lgamma(n + 1.0);
}

}  // namespace moeflow::detail
