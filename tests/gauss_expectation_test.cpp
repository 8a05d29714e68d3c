// Gaussian expectations: independent backends against each other (closed forms, Hermite
// diagram series, conditioning quadrature, seeded Monte Carlo), and derivatives against
// central finite differences.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <functional>
#include <random>
#include <span>
#include <sstream>

#include "moeflow/error.hpp"
#include "moeflow/gauss/expectation.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

constexpr double kSmoothAgreeTol = 1e-9;  // polynomial and smooth links (issue #3, acceptance 2)
constexpr double kKinkedAgreeTol = 1e-6;  // kinked links at |ρ| ≤ 0.99
constexpr double kClosedFormTol = 1e-9;   // closed forms vs Hermite/quadrature (acceptance 3)
constexpr double kMonteCarloSigmas = 5;   // Monte Carlo within 5 standard errors
constexpr double kDerivativeRelTol = 1e-6;

std::vector<LinkPtr> Links(const std::vector<std::string>& specs) {
  std::vector<LinkPtr> f;
  for (const std::string& s : specs) f.push_back(MakeLink(s));
  return f;
}

// Random covariances: unit-ish variances, correlations up to `max_rho`; every fifth one
// rank-deficient (one projection a combination of the others) when `allow_singular`.
struct Gaussian {
  Eigen::VectorXd mean;
  Eigen::MatrixXd cov;
};

Gaussian RandomGaussian(int n, std::mt19937_64& rng, double max_rho, bool allow_singular, bool zero_mean, int index) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.4, 1.6);
  Eigen::MatrixXd corr;
  for (;;) {
    Eigen::MatrixXd a(n, n);
    for (int i = 0; i < n; ++i) for (int j = 0; j < n; ++j) a(i, j) = normal(rng);
    if (allow_singular && n > 1 && index % 5 == 0) a.row(n - 1) = 0.6 * a.row(0) - 0.8 * a.row(1 % n);
    // Pull some rows together to reach high correlations.
    if (index % 3 == 1 && n > 1) a.row(1) = a.row(0) + 0.05 * a.row(1);
    Eigen::MatrixXd s = a * a.transpose();
    const Eigen::VectorXd d = s.diagonal().cwiseSqrt();
    corr = d.asDiagonal().inverse() * s * d.asDiagonal().inverse();
    double worst = 0;
    for (int i = 0; i < n; ++i) for (int j = i + 1; j < n; ++j) worst = std::max(worst, std::abs(corr(i, j)));
    if (worst <= max_rho || (allow_singular && index % 5 == 0)) break;
  }
  Eigen::VectorXd scale(n);
  for (int i = 0; i < n; ++i) scale[i] = uniform(rng);
  Gaussian g;
  g.cov = scale.asDiagonal() * corr * scale.asDiagonal();
  g.mean = Eigen::VectorXd::Zero(n);
  if (!zero_mean) for (int i = 0; i < n; ++i) g.mean[i] = 0.5 * normal(rng);
  return g;
}

// Quadrature against the Hermite series wherever the series claims the accuracy.
void ExpectBackendsAgree(const std::vector<std::string>& specs, int count, double max_rho, double tol, std::uint64_t seed,
                         int min_compared) {
  std::mt19937_64 rng(seed);
  const std::vector<LinkPtr> f = Links(specs);
  int compared = 0;
  for (int c = 0; c < count; ++c) {
    const Gaussian g = RandomGaussian(static_cast<int>(f.size()), rng, max_rho, true, false, c);
    const ExpectationResult q = Expect(f, g.mean, g.cov, ExpectationBackend::kQuadrature);
    const ExpectationResult h = Expect(f, g.mean, g.cov, ExpectationBackend::kHermite);
    EXPECT_LT(q.error_estimate, tol) << specs[0] << " case " << c;
    if (h.error_estimate < 0.1 * tol) {
      ++compared;
      EXPECT_NEAR(q.value, h.value, tol) << specs.size() << "-point " << specs[0] << "... case " << c << "\ncov\n" << g.cov;
    }
  }
  std::cout << specs.size() << "-point " << specs[0] << ",...: " << compared << " of " << count
            << " cases with both backends within tolerance\n";
  EXPECT_GE(compared, min_compared);  // the series must be usable on this many of the cases
}

TEST(GaussExpectation, PolynomialBackendsAgreeExactly) {
  ExpectBackendsAgree({"h(3)", "he(2)"}, 200, 0.999, kSmoothAgreeTol, 1, 200);
  ExpectBackendsAgree({"h(3)", "identity", "poly(1, 0.5, -0.3)"}, 200, 0.999, kSmoothAgreeTol, 2, 200);
  ExpectBackendsAgree({"h(3)", "h(2)", "identity", "h(3)"}, 200, 0.999, kSmoothAgreeTol, 3, 200);
}

TEST(GaussExpectation, SmoothBackendsAgree) {
  ExpectBackendsAgree({"sigmoid", "tanh"}, 200, 0.999, kSmoothAgreeTol, 4, 100);
  ExpectBackendsAgree({"erf", "h(3)", "softplus"}, 200, 0.999, kSmoothAgreeTol, 5, 30);
}

TEST(GaussExpectation, FourPointMoePairTermBackendsAgree) {
  // E[π(r_a) He3(h_a) π(r_b) He3(h_b)]: two non-polynomial factors, series to order 100.
  ExpectBackendsAgree({"sigmoid", "he(3)", "sigmoid", "he(3)"}, 200, 0.99, kSmoothAgreeTol, 12, 150);
}

// Four smooth non-polynomial factors at correlations up to 0.999 (every fifth Σ rank-deficient,
// non-zero means): the series is truncated at order 14 and cannot reach 1e-9 there, so the two
// quadratures check each other: the whitened one (eigen-directions of Σ, kAuto's choice) and the
// conditioning one (Cholesky levels, trapezoidal rule, 64 nodes per level; 48 reach only ~1e-8).
// Reference: each other; tolerance kSmoothAgreeTol; and each must stay inside the sum of their
// error estimates (the estimates are honest).
TEST(GaussExpectation, FourPointSmoothBackendsAgreeToTolerance) {
  std::mt19937_64 rng(6);
  const std::vector<LinkPtr> f = Links({"tanh", "sigmoid", "erf", "softplus"});
  ExpectationOptions conditioning;
  conditioning.quadrature_nodes = 64;  // the default for four non-polynomial factors
  double worst = 0, worst_estimate = 0;
  for (int c = 0; c < 200; ++c) {
    const Gaussian g = RandomGaussian(4, rng, 0.999, true, false, c);
    const ExpectationResult w = Expect(f, g.mean, g.cov, ExpectationBackend::kWhitened);
    const ExpectationResult q = Expect(f, g.mean, g.cov, ExpectationBackend::kQuadrature, conditioning);
    EXPECT_EQ(Expect(f, g.mean, g.cov).backend, ExpectationBackend::kWhitened);
    EXPECT_LT(w.error_estimate, kSmoothAgreeTol) << "case " << c;
    EXPECT_NEAR(w.value, q.value, kSmoothAgreeTol) << "case " << c << "\ncov\n" << g.cov;
    EXPECT_LE(std::abs(w.value - q.value), w.error_estimate + q.error_estimate + 1e-12) << "case " << c;  // + round-off
    worst = std::max(worst, std::abs(w.value - q.value));
    worst_estimate = std::max(worst_estimate, w.error_estimate);
  }
  std::cout << "four-point smooth, 200 cases: largest |whitened - conditioning| " << worst
            << ", largest whitened error estimate " << worst_estimate << "\n";
}

// The whitened quadrature against the Hermite series where the series is exact or converged,
// and against the conditioning quadrature, on smooth and polynomial links of every arity.
TEST(GaussExpectation, WhitenedQuadratureAgreesWithTheOtherBackends) {
  std::mt19937_64 rng(15);
  const std::vector<std::vector<std::string>> cases = {
      {"h(3)", "he(2)"}, {"sigmoid", "tanh"}, {"gelu", "silu"}, {"erf", "h(3)", "softplus"},
      {"h(3)", "h(2)", "identity", "h(3)"}, {"sigmoid", "he(3)", "sigmoid", "he(3)"}, {"tanh", "erf_sqrt2", "h(4)", "silu"}};
  for (const auto& specs : cases) {
    const std::vector<LinkPtr> f = Links(specs);
    int series_compared = 0;
    for (int c = 0; c < 40; ++c) {
      const Gaussian g = RandomGaussian(static_cast<int>(f.size()), rng, 0.999, true, false, c);
      const ExpectationResult w = Expect(f, g.mean, g.cov, ExpectationBackend::kWhitened);
      const ExpectationResult q = Expect(f, g.mean, g.cov, ExpectationBackend::kQuadrature);
      const ExpectationResult h = Expect(f, g.mean, g.cov, ExpectationBackend::kHermite);
      EXPECT_LT(w.error_estimate, kSmoothAgreeTol) << specs[0] << " case " << c;
      if (q.error_estimate < 0.1 * kSmoothAgreeTol) {
        EXPECT_NEAR(w.value, q.value, kSmoothAgreeTol) << specs[0] << " " << c;
      }
      if (h.error_estimate < 0.1 * kSmoothAgreeTol) {
        ++series_compared;
        EXPECT_NEAR(w.value, h.value, kSmoothAgreeTol) << specs[0] << " case " << c;
      }
    }
    std::cout << specs.size() << "-point " << specs[0] << ",...: series comparable on " << series_compared << " of 40\n";
  }
  // Kinked links are refused (the kinks are not aligned with the eigen-directions).
  EXPECT_THROW(Expect(Links({"relu", "tanh"}), Eigen::VectorXd::Zero(2), Eigen::MatrixXd::Identity(2, 2),
                      ExpectationBackend::kWhitened),
               InputError);
}

TEST(GaussExpectation, KinkedBackendsAgree) {
  ExpectBackendsAgree({"relu", "abs"}, 200, 0.99, kKinkedAgreeTol, 7, 90);
  ExpectBackendsAgree({"relu", "tanh", "leaky_relu(0.2)"}, 200, 0.99, kKinkedAgreeTol, 8, 30);
}

// Each closed form against every backend that claims 0.1·tol accuracy on the case; the
// quadrature must make that claim on at least `min_quadrature` of the cases.
void ExpectClosedFormAgrees(const std::vector<LinkPtr>& f, int count, int min_quadrature, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  int quadrature_compared = 0;
  for (int c = 0; c < count; ++c) {
    const Gaussian s = RandomGaussian(static_cast<int>(f.size()), rng, 0.99, false, true, c);
    const double closed = Expect(f, s.mean, s.cov, ExpectationBackend::kClosedForm).value;
    const ExpectationResult q = Expect(f, s.mean, s.cov, ExpectationBackend::kQuadrature);
    const ExpectationResult h = Expect(f, s.mean, s.cov, ExpectationBackend::kHermite);
    if (q.error_estimate < 0.1 * kClosedFormTol) {
      ++quadrature_compared;
      EXPECT_NEAR(closed, q.value, kClosedFormTol) << f[0]->Spec() << " case " << c << "\n" << s.cov;
    }
    if (h.error_estimate < 0.1 * kClosedFormTol) {
      EXPECT_NEAR(closed, h.value, kClosedFormTol) << f[0]->Spec() << " case " << c << "\n" << s.cov;
    }
  }
  std::cout << f.size() << "-point closed form " << f[0]->Spec() << ",...: quadrature comparable on "
            << quadrature_compared << " of " << count << "\n";
  EXPECT_GE(quadrature_compared, min_quadrature);
}

TEST(GaussExpectation, ClosedFormsAgreeWithHermiteAndQuadrature) {
  const LinkPtr g = MakeLink("erf_sqrt2"), relu = MakeLink("relu"), identity = MakeLink("identity");
  const LinkPtr dg = DerivativeOf(g);
  ExpectClosedFormAgrees({g, g}, 200, 200, 9);                // E[g(a)g(b)]
  ExpectClosedFormAgrees({dg, dg}, 200, 200, 10);             // E[g'(a)g'(b)]
  ExpectClosedFormAgrees({dg, identity, g}, 200, 200, 11);    // E[g'(a) b g(c)]
  ExpectClosedFormAgrees({dg, dg, g, g}, 100, 70, 12);        // I4 = E[g'(a)g'(b)g(c)g(d)]
  ExpectClosedFormAgrees({relu, relu}, 200, 200, 13);         // E[relu(a)relu(b)]
  ExpectClosedFormAgrees({relu, relu, relu}, 200, 0, 14);     // E[relu(a)relu(b)relu(c)] (Euler + Price)
  EXPECT_EQ(Expect({g, g}, Eigen::VectorXd::Zero(2), Eigen::MatrixXd::Identity(2, 2)).backend,
            ExpectationBackend::kClosedForm);
}

// The closed form a model finds once (FindCentredForm) is the one Expect uses: the same value bit
// for bit at zero means, for every form of the table. The forms' values are checked against the
// Hermite series and the quadrature above.
TEST(GaussExpectation, FoundClosedFormsGiveExpectsValue) {
  const LinkPtr g = MakeLink("erf_sqrt2"), relu = MakeLink("relu"), identity = MakeLink("identity");
  const LinkPtr dg = DerivativeOf(g);
  std::mt19937_64 rng(15);
  for (const std::vector<LinkPtr>& f : std::vector<std::vector<LinkPtr>>{
           {g, g}, {dg, dg}, {dg, identity, g}, {dg, dg, g, g}, {relu, relu}, {relu, relu, relu}}) {
    const CentredForm form = FindCentredForm(f);
    ASSERT_TRUE(form) << f.size() << "-point " << f[0]->Spec();
    EXPECT_EQ(form.PolynomialTerms(), 0u);
    for (int c = 0; c < 5; ++c) {
      const Gaussian s = RandomGaussian(static_cast<int>(f.size()), rng, 0.95, false, true, c);
      double value = 0.0;
      ASSERT_TRUE(form(s.cov, &value));
      EXPECT_EQ(value, Expect(f, s.mean, s.cov, ExpectationBackend::kClosedForm).value) << f[0]->Spec() << " case " << c;
    }
  }
  // Where a closed form does not apply at this covariance it says so (relu: a zero variance).
  double value = 0.0;
  EXPECT_FALSE(FindCentredForm({relu, relu})(Eigen::Matrix2d{{0.0, 0.0}, {0.0, 1.0}}, &value));
  // No form: a non-polynomial link without a closed form, the closed forms' factors in another
  // order or count, a degree above 8, more than 6 factors.
  for (const std::vector<LinkPtr>& f : std::vector<std::vector<LinkPtr>>{
           {g, relu}, Links({"sigmoid", "sigmoid"}), {g, dg}, {dg, dg, g}, {g, identity, dg}, {dg, dg, g, relu}, {g},
           Links({"h(9)", "h(9)"}), std::vector<LinkPtr>(7, identity)}) {
    EXPECT_FALSE(FindCentredForm(f)) << f.size() << "-point " << f[0]->Spec();
  }
}

// CentredForm::AtPairs, a form at many tuples (fixed..., v, w) of one Gram matrix, against the form at
// each tuple's submatrix, over every non-decreasing fixed prefix (none, a, a ≤ b, a ≤ b ≤ c) and every
// pair of last indices (v, w) of 7 vectors (repeated indices, near-parallel and linearly dependent
// vectors included), in runs of equal v and then shuffled (v changing at almost every pair). Both
// compute once what does not depend on the pair (or on w), so they differ from the form by rounding
// only:
//   erf          within 1e-13 absolute (values ≤ 2/π; a few ulps in the asin argument, whose
//                derivative stays below 1/√(1 − x²) ≈ 3 here);
//   polynomials  the same monomials, their products over the fixed entries and then over the
//                entries involving v alone taken first and summed in another order: within 1e-13 times Π_i √E[f_i(h_i)²], the Cauchy–Schwarz scale of
//                the terms (as in PolynomialFormsAgreeWithTheHermiteSeries below).
TEST(GaussExpectation, FormsAtPairsMatchTheFormTupleByTuple) {
  constexpr double kErfTolerance = 1e-13, kPolynomialTolerance = 1e-13;
  const LinkPtr g = MakeLink("erf_sqrt2"), he3 = MakeLink("he(3)"), identity = MakeLink("identity");
  const std::vector<std::vector<LinkPtr>> cases = {{DerivativeOf(g), identity, g},
                                                   {DerivativeOf(g), DerivativeOf(g), g, g},
                                                   {DerivativeOf(he3), identity, he3},
                                                   {DerivativeOf(he3), DerivativeOf(he3), he3, MakeLink("h(1)")},
                                                   {he3, MakeLink("h(4)")},
                                                   Links({"h(2)", "square", "he(3)", "identity", "h(3)"})};
  std::mt19937_64 rng(21);
  const int n = 7;
  for (std::size_t f = 0; f < cases.size(); ++f) {
    const CentredForm form = FindCentredForm(cases[f]);
    ASSERT_TRUE(form);
    const bool erf = f < 2;
    const int m = static_cast<int>(cases[f].size()), fixed_count = m - 2;
    std::vector<CentredForm> squares;  // E[f_i(h)²] at a variance
    for (const LinkPtr& link : cases[f]) squares.push_back(FindCentredForm({link, link}));
    std::vector<std::vector<int>> prefixes = {{}};  // every non-decreasing fixed prefix
    for (int r = 0; r < fixed_count; ++r) {
      std::vector<std::vector<int>> longer;
      for (const std::vector<int>& p : prefixes) {
        for (int i = p.empty() ? 0 : p.back(); i < n; ++i) {
          longer.push_back(p);
          longer.back().push_back(i);
        }
      }
      prefixes = longer;
    }
    std::vector<std::pair<int, int>> pairs;
    for (int v = 0; v < n; ++v) {
      for (int w = 0; w < n; ++w) pairs.emplace_back(v, w);
    }
    std::vector<std::pair<int, int>> shuffled = pairs;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    pairs.insert(pairs.end(), shuffled.begin(), shuffled.end());
    std::vector<double> out(pairs.size());
    for (int c = 0; c < 6; ++c) {
      const Eigen::MatrixXd gram = RandomGaussian(n, rng, 0.95, true, true, c).cov;
      for (const std::vector<int>& fixed : prefixes) {
        ASSERT_TRUE(form.AtPairs(gram, fixed, pairs, out.data()));
        for (std::size_t k = 0; k < pairs.size(); ++k) {
          std::vector<int> i = fixed;
          i.push_back(pairs[k].first);
          i.push_back(pairs[k].second);
          Eigen::MatrixXd cov(m, m);
          for (int r = 0; r < m; ++r) {
            for (int q = 0; q < m; ++q) cov(r, q) = gram(i[r], i[q]);
          }
          double value = 0.0;
          ASSERT_TRUE(form(cov, &value));
          std::ostringstream where;
          where << m << "-point form " << f << ", case " << c << ", tuple";
          for (const int j : i) where << ' ' << j;
          if (erf) {
            EXPECT_NEAR(out[k], value, kErfTolerance) << where.str();
          } else {
            double scale = 1.0;
            for (int r = 0; r < m; ++r) {
              double square = 0.0;
              ASSERT_TRUE(squares[r](Eigen::Matrix2d::Constant(cov(r, r)), &square));
              scale *= std::sqrt(square);
            }
            EXPECT_NEAR(out[k], value, kPolynomialTolerance * std::max(1.0, scale)) << where.str();
          }
        }
      }
    }
  }
  // A prefix that does not leave two factors, and no form, decline.
  const std::pair<int, int> pair{0, 1};
  const std::array<int, 2> fixed{0, 1};
  double value = 0.0;
  EXPECT_FALSE(FindCentredForm({g, g}).AtPairs(Eigen::Matrix2d::Identity(), fixed, {&pair, 1}, &value));
  EXPECT_FALSE(FindCentredForm(cases[0]).AtPairs(Eigen::Matrix2d::Identity(), fixed, {&pair, 1}, &value));
  EXPECT_FALSE(FindCentredForm(cases[2]).AtPairs(Eigen::Matrix2d::Identity(), fixed, {&pair, 1}, &value));
  EXPECT_FALSE(CentredForm().AtPairs(Eigen::Matrix2d::Identity(), fixed, {&pair, 1}, &value));
}

// Polynomial factors: Isserlis' theorem compiled once (FindCentredForm) against the Hermite
// diagram series (Expect's exact backend for polynomials) at random zero-mean covariances with
// unequal variances, including singular ones. Tolerance 1e-12 times Π_i √E[f_i²] (the
// Cauchy–Schwarz scale of the terms: both sums cancel to round-off of that size).
TEST(GaussExpectation, PolynomialFormsAgreeWithTheHermiteSeries) {
  std::mt19937_64 rng(16);
  const std::vector<std::vector<std::string>> cases = {
      {"he(3)", "he(3)"},
      {"d(he(3))", "identity", "he(3)"},
      {"d(he(3))", "d(he(3))", "he(3)", "he(3)"},
      {"d(he(3))", "d(he(3))", "he(3)", "h(1)"},
      {"square", "poly(1, -2, 0.5)", "h(4)"},
      {"identity", "identity", "identity", "identity"},
      {"h(8)", "h(8)"},
      {"h(5)", "h(3)", "h(2)", "square", "square"},
      {"hermite(0.3, 0, 1, 0.5)", "he(2)", "hermite(1, 0.2)", "h(3)", "identity", "poly(0, 0, 0, 1)"}};
  for (const auto& specs : cases) {
    std::vector<LinkPtr> f;
    for (const std::string& spec : specs) {
      f.push_back(spec.rfind("d(", 0) == 0 ? DerivativeOf(MakeLink(spec.substr(2, spec.size() - 3))) : MakeLink(spec));
    }
    const CentredForm form = FindCentredForm(f);
    ASSERT_TRUE(form) << specs[0] << ", ...";
    EXPECT_GT(form.PolynomialTerms(), 0u);
    const int n = static_cast<int>(f.size());
    for (int c = 0; c < 6; ++c) {
      const Gaussian s = RandomGaussian(n, rng, 0.95, c % 3 == 2, true, c);
      double value = 0.0;
      ASSERT_TRUE(form(s.cov, &value));
      double scale = 1.0;
      for (int i = 0; i < n; ++i) {
        scale *= std::sqrt(Expect({f[i], f[i]}, Eigen::VectorXd::Zero(2), Eigen::MatrixXd::Constant(2, 2, s.cov(i, i)),
                                  ExpectationBackend::kHermite)
                               .value);
      }
      const double series = Expect(f, s.mean, s.cov, ExpectationBackend::kHermite).value;
      EXPECT_NEAR(value, series, 1e-12 * std::max(1.0, scale)) << specs[0] << ", ... case " << c << ": " << form.PolynomialTerms() << " monomials";
    }
  }
}

TEST(GaussExpectation, MonteCarloLiesWithinFiveStandardErrors) {
  std::mt19937_64 rng(10);
  const std::vector<std::vector<std::string>> cases = {
      {"sigmoid", "h(3)"}, {"relu", "abs", "tanh"}, {"h(3)", "sigmoid", "h(3)", "sigmoid"}, {"relu", "sign", "gelu", "silu"}};
  ExpectationOptions o;
  o.monte_carlo_samples = 1'000'000;
  for (const auto& specs : cases) {
    const std::vector<LinkPtr> f = Links(specs);
    for (int c = 0; c < 2; ++c) {
      const Gaussian s = RandomGaussian(static_cast<int>(f.size()), rng, 0.99, c == 0, false, c + 1);
      o.monte_carlo_seed = 100 + c;
      const ExpectationResult mc = Expect(f, s.mean, s.cov, ExpectationBackend::kMonteCarlo, o);
      const ExpectationResult q = Expect(f, s.mean, s.cov, ExpectationBackend::kQuadrature);
      EXPECT_LT(std::abs(mc.value - q.value), kMonteCarloSigmas * mc.error_estimate)
          << specs[0] << " MC " << mc.value << " ± " << mc.error_estimate << " vs quadrature " << q.value;
    }
  }
}

TEST(GaussExpectation, GradientsMatchCentralDifferences) {
  std::mt19937_64 rng(11);
  for (const auto& specs : std::vector<std::vector<std::string>>{
           {"sigmoid", "h(3)"}, {"h(3)", "tanh", "identity"}, {"relu", "sigmoid"}, {"relu", "abs", "tanh"},
           {"sigmoid", "he(3)", "sigmoid", "he(3)"}}) {
    const std::vector<LinkPtr> f = Links(specs);
    const int n = static_cast<int>(f.size());
    const Gaussian s = RandomGaussian(n, rng, 0.9, false, false, 2);
    const ExpectationGradient g = ExpectWithGradient(f, s.mean, s.cov, ExpectationBackend::kQuadrature);
    // Fourth-order central differences, step 1e-3: truncation O(h⁴) ~ 1e-12, and the quadrature's
    // round-off (~1e-13 in the value) enters as ~1e-10.
    const double h = 1e-3;
    auto value = [&](const Eigen::VectorXd& m, const Eigen::MatrixXd& c) {
      return Expect(f, m, c, ExpectationBackend::kQuadrature).value;
    };
    auto difference = [&](const std::function<double(double)>& at) {
      return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h);
    };
    for (int i = 0; i < n; ++i) {
      const double fd = difference([&](double e) {
        Eigen::VectorXd m = s.mean;
        m[i] += e;
        return value(m, s.cov);
      });
      EXPECT_NEAR(g.d_mean[i], fd, kDerivativeRelTol * std::max(1e-2, std::abs(fd))) << specs[0] << " m" << i;
      for (int j = i; j < n; ++j) {
        const double fdc = difference([&](double e) {
          Eigen::MatrixXd c = s.cov;
          c(i, j) += e;
          if (i != j) c(j, i) += e;
          return value(s.mean, c);
        });
        EXPECT_NEAR(g.d_cov(i, j), fdc, kDerivativeRelTol * std::max(1e-2, std::abs(fdc))) << specs[0] << " S" << i << j;
      }
    }
  }
}

TEST(GaussExpectation, BadInputIsRejected) {
  const std::vector<LinkPtr> f = Links({"relu", "relu"});
  Eigen::MatrixXd bad(2, 2);
  bad << 1, 2, 2, 1;  // eigenvalue −1
  EXPECT_THROW(Expect(f, Eigen::VectorXd::Zero(2), bad), InputError);
  bad << 1, std::nan(""), std::nan(""), 1;
  EXPECT_THROW(Expect(f, Eigen::VectorXd::Zero(2), bad), InputError);
  EXPECT_THROW(Expect(f, Eigen::VectorXd::Zero(3), Eigen::MatrixXd::Identity(2, 2)), InputError);
  EXPECT_THROW(Expect(Links({"sigmoid", "tanh"}), Eigen::VectorXd::Zero(2), Eigen::MatrixXd::Identity(2, 2),
                      ExpectationBackend::kClosedForm),
               InputError);
  try {
    bad << 1, 2, 2, 1;
    Expect(f, Eigen::VectorXd::Zero(2), bad);
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not positive semi-definite"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moeflow

namespace moeflow {
namespace {

bool Kinked(const std::vector<LinkPtr>& f) {
  for (const LinkPtr& l : f) {
    if (!l->Kinks().empty()) return true;
  }
  return false;
}

// Every combination of the given links (with repetition) on `per_combination` random Gaussians
// (|ρ| ≤ 0.99, non-zero means, every fifth rank-deficient): a quadrature within tolerance
// (whitened for smooth combinations, cross-checked by the conditioning one; conditioning for
// kinked ones), the Hermite series agreeing wherever it claims the accuracy, Monte Carlo (2·10^5 samples) within
// five standard errors on the first Gaussian of each combination.
// With shards > 1 only the combinations whose index is `shard` modulo `shards` run (one test per
// shard, so that ctest runs them in parallel); each combination draws from its own seed.
// `conditioning`: also compare smooth combinations with the conditioning quadrature (costly at
// four factors, where FourPointSmoothBackendsAgreeToTolerance does it on 200 Gaussians).
void ExpectAllCombinationsAgree(const std::vector<std::string>& specs, int arity, int per_combination,
                                std::uint64_t seed, int shard = 0, int shards = 1, bool conditioning = true) {
  std::vector<int> index(arity, 0);
  int combinations = 0, series_compared = 0, conditioning_compared = 0, monte_carlo_compared = 0;
  ExpectationOptions mc;
  mc.monte_carlo_samples = 200'000;
  while (true) {
    std::vector<LinkPtr> f;
    std::string name;
    for (int i : index) {
      f.push_back(MakeLink(specs[i]));
      name += specs[i] + " ";
    }
    const bool kinked = Kinked(f);
    const double tol_abs = kinked ? kKinkedAgreeTol : kSmoothAgreeTol;
    int degree = 0;  // total polynomial degree of the product
    for (const LinkPtr& l : f) degree += std::max(0, l->PolynomialDegree());
    std::mt19937_64 rng(seed * 1'000'003 + static_cast<std::uint64_t>(combinations));
    for (int c = 0; c < per_combination && combinations % shards == shard; ++c) {
      // The index picks the kind of Gaussian: every fifth rank-deficient, every third with a
      // pair pulled together.
      const Gaussian g = RandomGaussian(arity, rng, 0.99, true, false, combinations * per_combination + c);
      // Smooth combinations: the whitened quadrature, checked against the conditioning one
      // wherever that claims the accuracy; kinked ones: the conditioning quadrature.
      const ExpectationResult q =
          Expect(f, g.mean, g.cov, kinked ? ExpectationBackend::kQuadrature : ExpectationBackend::kWhitened);
      const ExpectationResult h = Expect(f, g.mean, g.cov, ExpectationBackend::kHermite);
      // Absolute, relative above 1 (products of polynomials reach 10³, where 1e-9 absolute is
      // below the round-off of the sums).
      const double tol = tol_abs * std::max(1.0, std::abs(q.value));
      EXPECT_LT(q.error_estimate, tol) << name << "case " << c;
      if (h.error_estimate < 0.1 * tol) {
        ++series_compared;
        EXPECT_NEAR(q.value, h.value, tol) << name << "case " << c;
      }
      if (!kinked && conditioning) {
        const ExpectationResult cq = Expect(f, g.mean, g.cov, ExpectationBackend::kQuadrature);
        if (cq.error_estimate < 0.1 * tol) {
          ++conditioning_compared;
          EXPECT_NEAR(q.value, cq.value, tol) << name << "case " << c;
        }
      }
      // Monte Carlo where its standard error means something: not when every sample gave the
      // same product (a rare-event integrand, e.g. step·step on a thin region, that 2·10^5
      // samples miss), nor for products of total degree > 8, whose sample variance converges too
      // slowly to estimate the standard error (there the series is exact algebra and is compared).
      if (c == 0) {
        mc.monte_carlo_seed = seed + combinations;
        const ExpectationResult m = Expect(f, g.mean, g.cov, ExpectationBackend::kMonteCarlo, mc);
        if (m.error_estimate > 0 && degree <= 8) {
          ++monte_carlo_compared;
          EXPECT_LE(std::abs(m.value - q.value), kMonteCarloSigmas * m.error_estimate + q.error_estimate + 1e-12)
              << name << ": Monte Carlo " << m.value << " ± " << m.error_estimate << ", quadrature " << q.value;
        }
      }
    }
    ++combinations;
    // Next non-decreasing index tuple (combinations with repetition).
    int i = arity - 1;
    while (i >= 0 && index[i] == static_cast<int>(specs.size()) - 1) --i;
    if (i < 0) break;
    ++index[i];
    for (int j = i + 1; j < arity; ++j) index[j] = index[i];
  }
  std::cout << combinations << " combinations of " << arity << " links (shard " << shard << " of " << shards
            << "), " << combinations * per_combination / shards << " cases; the series was comparable on " << series_compared
            << ", the conditioning quadrature (smooth cases) on " << conditioning_compared << ", Monte Carlo on "
            << monte_carlo_compared << "\n";
}

TEST(GaussExpectation, EveryPairOfLibraryLinksAgreesAcrossBackends) {
  ExpectAllCombinationsAgree({"identity", "relu", "leaky_relu(0.1)", "abs", "sign", "step", "erf", "erf_sqrt2",
                              "tanh", "sigmoid", "softplus", "gelu", "silu", "square", "he(3)", "h(4)",
                              "poly(1, -2, 0.5)", "hermite(0.3, 0, 1)"},
                             2, 3, 21);
}

TEST(GaussExpectation, EveryTripleOfRepresentativeLinksAgreesAcrossBackends) {
  ExpectAllCombinationsAgree({"relu", "sign", "tanh", "sigmoid", "h(3)", "identity"}, 3, 2, 22);
}

// Every 4-tuple (with repetition: 126) of links standing for each kind: kinked (relu, sign),
// smooth (tanh, sigmoid), polynomial (h(3), identity).
TEST(GaussExpectation, EveryFourTupleOfRepresentativeLinksAgreesAcrossBackends) {
  ExpectAllCombinationsAgree({"relu", "sign", "tanh", "sigmoid", "h(3)", "identity"}, 4, 1, 24);
}

// Every 4-tuple of the library's smooth and polynomial links (1820 combinations, one Gaussian
// each), in four shards: the whitened quadrature against the series and Monte Carlo. (4-tuples
// with kinked links: the representative set above; all 5985 of the library take ~40 CPU minutes
// at full rank.)
class EveryFourTupleOfSmoothLibraryLinks : public ::testing::TestWithParam<int> {};

TEST_P(EveryFourTupleOfSmoothLibraryLinks, AgreesAcrossBackends) {
  ExpectAllCombinationsAgree({"identity", "erf", "erf_sqrt2", "tanh", "sigmoid", "softplus", "gelu", "silu", "square",
                              "he(3)", "h(4)", "poly(1, -2, 0.5)", "hermite(0.3, 0, 1)"},
                             4, 1, 25, GetParam(), 4, false);
}
INSTANTIATE_TEST_SUITE_P(GaussExpectation, EveryFourTupleOfSmoothLibraryLinks, ::testing::Range(0, 4));

// Every triple of the whole library (1140 combinations, one Gaussian each).
TEST(GaussExpectation, EveryTripleOfLibraryLinksAgreesAcrossBackends) {
  ExpectAllCombinationsAgree({"identity", "relu", "leaky_relu(0.1)", "abs", "sign", "step", "erf", "erf_sqrt2",
                              "tanh", "sigmoid", "softplus", "gelu", "silu", "square", "he(3)", "h(4)",
                              "poly(1, -2, 0.5)", "hermite(0.3, 0, 1)"},
                             3, 1, 23);
}

}  // namespace
}  // namespace moeflow
