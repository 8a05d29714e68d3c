// Link library and Hermite expansions: published and closed-form coefficients, exact algebra
// against quadrature (two independent methods), derivatives against finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "moeflow/error.hpp"
#include "moeflow/links/hermite.hpp"
#include "moeflow/links/link.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

constexpr double kCoefficientTol = 1e-12;  // quadrature vs closed forms / exact algebra (issue #3: 1e-12)
constexpr double kTheoryTableTol = 5e-11;  // theory.md §2 prints 10 decimals
constexpr double kDerivativeTol = 1e-6;    // central difference, step 1e-5, relative

double SqrtFactorial(int k) { return std::exp(0.5 * std::lgamma(k + 1.0)); }
double Phi(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }
double Pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI); }

TEST(HermiteCoefficients, SigmoidMatchesTheoryTable) {
  // theory.md §2 lists E[π He_k] (the He_k/k! convention) = √k! · c_k(normalised).
  const HermiteExpansion e = ExpandHermite(*MakeLink("sigmoid"), 40);
  const std::vector<std::pair<int, double>> table = {
      {0, 0.5}, {1, 0.2066209641}, {3, -0.0623964840}, {5, 0.0643799732}, {7, -0.1225804363}};
  for (const auto& [k, value] : table) {
    EXPECT_NEAR(e.coefficients[k] * SqrtFactorial(k), value, kTheoryTableTol) << "k=" << k;
  }
  for (int k = 2; k <= 40; k += 2) EXPECT_NEAR(e.coefficients[k], 0.0, kCoefficientTol) << "k=" << k;
  EXPECT_NEAR(e.second_moment, 0.2933790359, kTheoryTableTol);
  EXPECT_EQ(e.information_exponent, 1);
  EXPECT_GE(e.tail, -1e-14);
  EXPECT_LT(e.tail, 1e-6);  // the series converges: 40 terms leave little
}

TEST(HermiteCoefficients, ReluMatchesClosedForms) {
  const HermiteExpansion e = ExpandHermite(*MakeLink("relu"), 60);
  EXPECT_NEAR(e.coefficients[0], 1 / std::sqrt(2 * M_PI), kCoefficientTol);
  EXPECT_NEAR(e.coefficients[1], 0.5, kCoefficientTol);
  EXPECT_NEAR(e.coefficients[2], 1 / (2 * std::sqrt(M_PI)), kCoefficientTol);
  EXPECT_NEAR(e.coefficients[3], 0.0, kCoefficientTol);
  EXPECT_NEAR(e.second_moment, 0.5, kCoefficientTol);
  EXPECT_EQ(e.information_exponent, 1);
  // Shifted and scaled: E[relu(az+b)] = a φ(b/a) + b Φ(b/a), E[relu(az+b) z] = a Φ(b/a).
  const double a = 2.0, b = 0.7;
  const HermiteExpansion s = ExpandHermite(*MakeLink("relu"), 10, a, b);
  EXPECT_NEAR(s.coefficients[0], a * Pdf(b / a) + b * Phi(b / a), kCoefficientTol);
  EXPECT_NEAR(s.coefficients[1], a * Phi(b / a), kCoefficientTol);
}

TEST(HermiteCoefficients, NormalisedHermiteGivesExactlyDelta) {
  for (int j : {0, 1, 3, 7, 60}) {
    const HermiteExpansion e = ExpandHermite(*MakeLink("h(" + std::to_string(j) + ")"), 60);
    for (int k = 0; k <= 60; ++k) EXPECT_EQ(e.coefficients[k], k == j ? 1.0 : 0.0) << "j=" << j << " k=" << k;
    EXPECT_EQ(e.information_exponent, j == 0 ? -1 : j);
  }
}

TEST(HermiteCoefficients, SecondMomentsMatchClosedForms) {
  EXPECT_NEAR(ExpandHermite(*MakeLink("sign"), 20).second_moment, 1.0, kCoefficientTol);
  EXPECT_NEAR(ExpandHermite(*MakeLink("step"), 20).second_moment, 0.5, kCoefficientTol);
  EXPECT_NEAR(ExpandHermite(*MakeLink("abs"), 20).second_moment, 1.0, kCoefficientTol);
  // E[erf(z/√2)²] = (2/π) arcsin(1/2) = 1/3 (theory.md §2 two-point form at Σ = 1).
  EXPECT_NEAR(ExpandHermite(*MakeLink("erf_sqrt2"), 20).second_moment, 1.0 / 3.0, kCoefficientTol);
  // E[erf(z)²] = (2/π) arcsin(2/3).
  EXPECT_NEAR(ExpandHermite(*MakeLink("erf"), 20).second_moment, 2 / M_PI * std::asin(2.0 / 3.0), kCoefficientTol);
  // gelu: c_1 = E[z² Φ(z)] + ... = E[Φ(z)] + E[z φ(z)]·... closed form c_1 = 1/2 + 1/(2√π)·0 → use E[z·zΦ(z)] = 1/2.
  EXPECT_NEAR(ExpandHermite(*MakeLink("gelu"), 4).coefficients[1], 0.5, kCoefficientTol);
}

TEST(HermiteCoefficients, InformationExponentsOfCommonLinks) {
  EXPECT_EQ(ExpandHermite(*MakeLink("abs"), 20).information_exponent, 2);
  EXPECT_EQ(ExpandHermite(*MakeLink("square"), 20).information_exponent, 2);
  EXPECT_EQ(ExpandHermite(*MakeLink("he(4)"), 20).information_exponent, 4);
  EXPECT_EQ(ExpandHermite(*MakeLink("tanh"), 20).information_exponent, 1);
  EXPECT_EQ(ExpandHermite(*MakeLink("hermite(1, 0, 0, 0.5)"), 20).information_exponent, 3);
}

// Exact scaling/Appell algebra against quadrature of the same polynomial: two methods.
TEST(HermiteCoefficients, ExactPolynomialAlgebraMatchesQuadrature) {
  for (const char* spec : {"h(3)", "he(5)", "poly(1, -2, 0.5, 0.25)", "hermite(0.3, 0, -1, 0.2, 0.1)", "square"}) {
    const LinkPtr link = MakeLink(spec);
    for (const auto& [a, b] : std::vector<std::pair<double, double>>{{1, 0}, {0.5, 0}, {1.7, 0.4}, {0.3, -1.2}}) {
      const HermiteExpansion exact = ExpandHermite(*link, 12, a, b);
      const HermiteExpansion quad = ExpandHermiteByQuadrature(*link, 12, a, b);
      const double scale = std::max(1.0, std::sqrt(exact.second_moment));
      for (int k = 0; k <= 12; ++k) {
        EXPECT_NEAR(exact.coefficients[k], quad.coefficients[k], kCoefficientTol * scale)
            << spec << " a=" << a << " b=" << b << " k=" << k;
      }
      EXPECT_NEAR(exact.second_moment, quad.second_moment, kCoefficientTol * scale * scale) << spec;
      EXPECT_NEAR(exact.tail, 0.0, 1e-12 * scale * scale) << spec;
    }
  }
}

TEST(HermiteCoefficients, MonomialPolynomialsEvaluateLikeTheirFormula) {
  const LinkPtr p = MakeLink("poly(1, -2, 0.5, 0.25)");
  for (double z : {-2.0, -0.3, 0.0, 1.1, 2.5}) {
    EXPECT_NEAR(p->Value(z), 1 - 2 * z + 0.5 * z * z + 0.25 * z * z * z, 1e-12);
    EXPECT_NEAR(p->Derivative(z), -2 + z + 0.75 * z * z, 1e-12);
  }
}

// HermiteToMonomial (the polynomial expectations' monomial basis): He_3 = z³ − 3z exactly as the
// formula gives it, the monomial sum evaluates like the link, and MonomialToHermite inverts it
// (degrees 0..8, to 1e-12).
TEST(HermiteCoefficients, HermiteToMonomialInvertsMonomialToHermite) {
  const std::vector<double> he3 = HermiteToMonomial(MakeLink("he(3)")->HermiteCoefficients(3));
  ASSERT_EQ(he3.size(), 4u);
  EXPECT_NEAR(he3[0], 0.0, 1e-15);
  EXPECT_NEAR(he3[1], -3.0, 1e-14);
  EXPECT_NEAR(he3[2], 0.0, 1e-15);
  EXPECT_NEAR(he3[3], 1.0, 1e-14);
  const LinkPtr link = MakeLink("hermite(0.3, -0.2, 0.5, 0.1, -0.4, 0.05, 0.2, -0.1, 0.3)");
  const std::vector<double> c = link->HermiteCoefficients(8), a = HermiteToMonomial(c);
  for (double z : {-2.0, -0.3, 0.0, 1.1, 2.5}) {
    double v = 0.0;
    for (std::size_t n = a.size(); n-- > 0;) v = v * z + a[n];
    EXPECT_NEAR(v, link->Value(z), 1e-11 * std::max(1.0, std::abs(v))) << "z = " << z;
  }
  const std::vector<double> back = MonomialToHermite(a);
  ASSERT_EQ(back.size(), c.size());
  for (std::size_t k = 0; k < c.size(); ++k) EXPECT_NEAR(back[k], c[k], 1e-12) << "k = " << k;
}

TEST(Links, DerivativesMatchCentralDifferences) {
  for (const char* spec : {"identity", "relu", "leaky_relu(0.1)", "abs", "erf", "erf_sqrt2", "tanh", "sigmoid",
                           "softplus", "gelu", "silu", "square", "he(3)", "h(4)", "poly(0, 1, 2)"}) {
    const LinkPtr link = MakeLink(spec);
    for (double z : {-2.3, -0.7, 0.4, 1.9}) {  // away from the kinks
      const double fd = (link->Value(z + 1e-5) - link->Value(z - 1e-5)) / 2e-5;
      EXPECT_NEAR(link->Derivative(z), fd, kDerivativeTol * std::max(1.0, std::abs(fd))) << spec << " z=" << z;
    }
  }
}

TEST(HermiteCoefficients, BadArgumentsAreRejected) {
  const LinkPtr relu = MakeLink("relu");
  EXPECT_THROW(ExpandHermite(*relu, kMaxHermiteOrder + 1), InputError);
  EXPECT_THROW(ExpandHermite(*relu, -1), InputError);
  EXPECT_THROW(ExpandHermite(*relu, 10, 0.0), InputError);
  EXPECT_THROW(ExpandHermite(*relu, 10, -1.0), InputError);
  EXPECT_THROW(ExpandHermite(*relu, 10, 1.0, std::nan("")), InputError);
  EXPECT_THROW(MakeLink("leaky_relu"), InputError);
  EXPECT_THROW(MakeLink("relu(2)"), InputError);
}

}  // namespace
}  // namespace moeflow

namespace moeflow {
namespace {

TEST(HermiteCli, PrintsCoefficientsAsTableAndCsv) {
  std::string output;
  ASSERT_EQ(testing::RunCommand(testing::CliPath() + " hermite --link relu --order 4 --format csv 2>/dev/null", &output), 0);
  EXPECT_EQ(output.rfind("k,c_k\n0,0.398942280401432", 0), 0u) << output;
  ASSERT_EQ(testing::RunCommand(testing::CliPath() + " hermite --link 'h(3)' -K 5", &output), 0);
  EXPECT_NE(output.find("information exponent 3"), std::string::npos) << output;
  // The link as the command's argument, as a user types it first: the same table.
  std::string positional;
  ASSERT_EQ(testing::RunCommand(testing::CliPath() + " hermite 'h(3)' -K 5", &positional), 0) << positional;
  EXPECT_EQ(positional, output);
  EXPECT_EQ(testing::RunCommand(testing::CliPath() + " hermite relu --link relu", &output), 2);  // given twice
  EXPECT_EQ(testing::RunCommand(testing::CliPath() + " hermite", &output), 2);
  EXPECT_NE(output.find("missing LINK: moeflow hermite LINK, e.g. moeflow hermite relu"), std::string::npos) << output;
  EXPECT_EQ(testing::RunCommand(testing::CliPath() + " hermite --link relu --scale 0", &output), 2);
  EXPECT_NE(output.find("'scale': value '0' must be a finite number > 0"), std::string::npos) << output;
  EXPECT_EQ(testing::RunCommand(testing::CliPath() + " hermite --link nosuch", &output), 2);
  EXPECT_EQ(testing::RunCommand(testing::CliPath() + " hermite --link relu -K 101", &output), 2);
  EXPECT_EQ(testing::RunCommand(testing::CliPath() + " hermite --help", &output), 0);
}

}  // namespace
}  // namespace moeflow
