// Polynomial links: the Hermite recurrence against the explicit He_k, and the registry.
#include <gtest/gtest.h>

#include <cmath>

#include "moeflow/error.hpp"
#include "moeflow/links/link.hpp"
#include "moeflow/links/polynomial.hpp"

namespace moeflow {
namespace {

constexpr double kTol = 1e-12;  // exact polynomial identities evaluated in double precision

TEST(PolynomialLink, He3MatchesExplicitPolynomial) {
  const LinkPtr he3 = MakeLink("he(3)");
  for (double z : {-2.5, -1.0, 0.0, 0.3, 1.7}) {
    EXPECT_NEAR(he3->Value(z), z * z * z - 3 * z, kTol);
    EXPECT_NEAR(he3->Derivative(z), 3 * z * z - 3, kTol);
  }
}

// ValueAndDerivative (one recurrence for both) against Value and Derivative (one each), for
// every polynomial kind, degrees 0..7; the base class's version (two calls) for a non-polynomial.
TEST(PolynomialLink, ValueAndDerivativeTogetherAsApart) {
  for (const char* spec : {"h(0)", "h(1)", "h(3)", "he(4)", "h(7)", "hermite(0.5, -1, 0.25, 2)", "poly(1, 0, -2, 0.5)",
                           "identity", "square", "tanh"}) {
    const LinkPtr link = MakeLink(spec);
    for (double z : {-3.1, -1.0, 0.0, 0.4, 2.2}) {
      double value = 0.0, derivative = 0.0;
      link->ValueAndDerivative(z, &value, &derivative);
      EXPECT_NEAR(value, link->Value(z), kTol * (1 + std::abs(value))) << spec << " z = " << z;
      EXPECT_NEAR(derivative, link->Derivative(z), kTol * (1 + std::abs(derivative))) << spec << " z = " << z;
    }
  }
}

TEST(PolynomialLink, NormalisedH3IsHe3OverSqrt6) {
  const LinkPtr h3 = MakeLink("h(3)");
  for (double z : {-2.0, 0.5, 3.0}) EXPECT_NEAR(h3->Value(z), (z * z * z - 3 * z) / std::sqrt(6.0), kTol);
  const std::vector<double> c = h3->HermiteCoefficients(6);
  for (int k = 0; k <= 6; ++k) EXPECT_EQ(c[k], k == 3 ? 1.0 : 0.0) << "k=" << k;
  EXPECT_EQ(h3->PolynomialDegree(), 3);
}

TEST(PolynomialLink, SpecRoundTrips) {
  for (const char* spec : {"identity", "h(4)", "he(2)", "hermite(0, 0.5, 0, -0.25)"}) {
    const LinkPtr link = MakeLink(spec);
    EXPECT_EQ(MakeLink(link->Spec())->Spec(), link->Spec());
    EXPECT_NEAR(MakeLink(link->Spec())->Value(0.7), link->Value(0.7), kTol);
  }
}

TEST(PolynomialLink, BadSpecsAreRejectedWithTheRule) {
  EXPECT_THROW(MakeLink("nosuchlink"), InputError);
  EXPECT_THROW(MakeLink("h(2.5)"), InputError);
  EXPECT_THROW(MakeLink("h(61)"), InputError);
  EXPECT_THROW(MakeLink("h(3"), InputError);
  EXPECT_THROW(MakeLink("hermite(1, x)"), InputError);
  try {
    MakeLink("nosuchlink");
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown link name 'nosuchlink'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moeflow
