// The SGD simulator's random numbers: the ziggurat normals and the Marsaglia–Tsang chi-squared
// draws have the right distribution (moments and CDF against closed forms, with tolerances of
// five standard errors of 10^6 or 2·10^5 draws), and a seed always gives the same stream.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/random.hpp"

namespace moeflow::rng {
namespace {

TEST(Ziggurat, MomentsAndCdfOfTheStandardNormal) {
  Xoshiro256 rng(42);
  const ZigguratNormal& normal = StandardNormal();
  constexpr int kDraws = 1'000'000;
  const std::vector<double> cuts = {-3.6, -3.0, -2.0, -1.0, -0.3, 0.0, 0.5, 1.5, 2.5, 3.44, 4.0};
  std::vector<int> below(cuts.size(), 0);
  double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
  for (int k = 0; k < kDraws; ++k) {
    const double z = normal(rng);
    m1 += z, m2 += z * z, m3 += z * z * z, m4 += z * z * z * z;
    for (std::size_t c = 0; c < cuts.size(); ++c) below[c] += z < cuts[c];
  }
  const double n = kDraws;
  EXPECT_NEAR(m1 / n, 0.0, 5 * std::sqrt(1.0 / n));
  EXPECT_NEAR(m2 / n, 1.0, 5 * std::sqrt(2.0 / n));
  EXPECT_NEAR(m3 / n, 0.0, 5 * std::sqrt(15.0 / n));
  EXPECT_NEAR(m4 / n, 3.0, 5 * std::sqrt(96.0 / n));
  for (std::size_t c = 0; c < cuts.size(); ++c) {
    const double p = 0.5 * std::erfc(-cuts[c] / std::sqrt(2.0));
    EXPECT_NEAR(below[c] / n, p, 5 * std::sqrt(p * (1 - p) / n) + 1e-7) << "P(z < " << cuts[c] << ")";
  }
}

TEST(ChiSquared, MeanAndVarianceForSmallAndLargeDegreesOfFreedom) {
  Xoshiro256 rng(7);
  constexpr int kDraws = 200'000;
  for (double dof : {0.5, 1.0, 3.0, 30.0, 1000.0}) {
    double s1 = 0, s2 = 0;
    for (int k = 0; k < kDraws; ++k) {
      const double x = ChiSquared(rng, dof);
      s1 += x, s2 += x * x;
    }
    const double mean = s1 / kDraws, var = s2 / kDraws - mean * mean;
    EXPECT_NEAR(mean, dof, 5 * std::sqrt(2 * dof / kDraws)) << "dof " << dof;
    // Var of the sample variance ≈ (μ4 − σ⁴)/n with μ4 = 12 dof (dof + 4) for chi-squared.
    EXPECT_NEAR(var, 2 * dof, 5 * std::sqrt((12 * dof * (dof + 4) - 4 * dof * dof) / kDraws)) << "dof " << dof;
  }
}

TEST(Xoshiro256, SameSeedSameStreamDifferentSeedDifferentStream) {
  Xoshiro256 a(3), b(3), c(4);
  bool differs = false;
  for (int k = 0; k < 1000; ++k) {
    const auto x = a(), y = b(), z = c();
    ASSERT_EQ(x, y);
    differs = differs || x != z;
  }
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace moeflow::rng
