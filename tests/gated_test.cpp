// Gated units (soft-routed MoE, theory.md §3.3): the derivative towers of gates, the router
// kernels K_pq, the four-point pair expectations of GatedPairKernel against the general
// expectation engine and against the factorised form on the router ⟂ expert manifold, and the
// gated Gram-matrix flow (risk/drift consistency, Stein form vs the first-order form, manifold
// invariance).
#include <gtest/gtest.h>

#include <Eigen/Cholesky>
#include <Eigen/LU>
#include <cmath>
#include <random>

#include "moeflow/gauss/expectation.hpp"
#include "moeflow/gauss/gated_pair.hpp"
#include "moeflow/integrate/integrator.hpp"
#include "moeflow/links/functions.hpp"
#include "moeflow/links/link.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/two_layer.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using V = UnitVariant;

// The j-th derivative of a gate as a link of its own (value from the tower, derivative from
// the next order), so the general engine can take it as a factor.
LinkPtr GateDerivative(const LinkPtr& gate, int j) {
  std::string name = "d";  // (not "d" + std::to_string(j): GCC 12 warns falsely there, -Wrestrict)
  name += std::to_string(j) + "(" + gate->Spec() + ")";
  return std::make_shared<FunctionLink>(
      name,
      [gate, j](double z) {
        double t[32];
        gate->Derivatives(z, j, t);
        return t[j];
      },
      [gate, j](double z) {
        double t[32];
        gate->Derivatives(z, j + 1, t);
        return t[j + 1];
      });
}

LinkPtr ExpertDerivative(const LinkPtr& expert, int j) {
  LinkPtr d = expert;
  for (int i = 0; i < j; ++i) d = DerivativeOf(d);
  return d;
}

// A random correlation matrix of n unit vectors in R^dim.
Eigen::MatrixXd RandomCorrelation(int n, int dim, std::mt19937_64* rng) {
  std::normal_distribution<double> normal;
  Eigen::MatrixXd v(dim, n);
  for (int i = 0; i < dim; ++i) {
    for (int j = 0; j < n; ++j) v(i, j) = normal(*rng);
  }
  v.colwise().normalize();
  return v.transpose() * v;
}

GatedPairKernel::Correlations FromMatrix(const Eigen::Matrix4d& c) {  // order r_u, h_u, r_v, h_v
  return {c(0, 1), c(0, 2), c(0, 3), c(1, 2), c(1, 3), c(2, 3)};
}

TEST(GateDerivatives, TowersMatchFiniteDifferencesOfTheOrderBelow) {
  // Fourth-order central differences, step 1e-3: truncation h⁴/30·|f^(j+4)| ≲ 1e-9 for these
  // links up to order 8 (|f^(12)| ≲ 1e5 for tanh), round-off ~1e-16/h; tolerance 1e-8.
  for (const char* spec : {"sigmoid", "tanh", "he(3)", "hermite(0.3, -0.2, 0.5, 0.1, 0.7)"}) {
    const LinkPtr link = MakeLink(spec);
    for (double z : {-3.1, -0.4, 0.0, 0.9, 2.5}) {
      double t[9], p1[9], m1[9], p2[9], m2[9];
      ASSERT_TRUE(link->Derivatives(z, 8, t)) << spec;
      EXPECT_NEAR(t[0], link->Value(z), 1e-14) << spec;
      EXPECT_NEAR(t[1], link->Derivative(z), 1e-13) << spec;
      const double h = 1e-3;
      link->Derivatives(z + h, 8, p1);
      link->Derivatives(z - h, 8, m1);
      link->Derivatives(z + 2 * h, 8, p2);
      link->Derivatives(z - 2 * h, 8, m2);
      for (int j = 1; j <= 8; ++j) {
        const double fd = (8 * (p1[j - 1] - m1[j - 1]) - (p2[j - 1] - m2[j - 1])) / (12 * h);
        EXPECT_NEAR(t[j], fd, 1e-8 * std::max(1.0, std::abs(t[j]))) << spec << " order " << j << " at z=" << z;
      }
    }
  }
  double t[3];
  EXPECT_FALSE(MakeLink("relu")->Derivatives(0.5, 2, t));  // no closed-form tower
}

// Reference: the Mehler series Σ_k c_k² ρ^k with the sigmoid's Hermite coefficients (K = 100,
// from links/hermite); at |ρ| ≤ 0.9 its truncation is below 1e-15.
TEST(GatedPairKernel, RouterKernelMatchesTheMehlerSeriesAndItsDerivatives) {
  const LinkPtr sigmoid = MakeLink("sigmoid"), he3 = MakeLink("he(3)");
  const GatedPairKernel kernel(sigmoid, he3, sigmoid, he3);
  const std::vector<double> c = sigmoid->HermiteCoefficients(100);
  for (double rho : {-0.9, -0.5, 0.0, 0.3, 0.75, 0.9}) {
    double mehler = 0;
    for (int k = 100; k >= 0; --k) mehler = mehler * rho + c[k] * c[k];
    EXPECT_NEAR(kernel.RouterKernel(0, 0, rho), mehler, 1e-13) << "rho=" << rho;
  }
  // At ρ = 1: E[π(z)²], by the engine's one-dimensional quadrature of the singular pair.
  const double at_one = Expect({sigmoid, sigmoid}, Eigen::Vector2d::Zero(), Eigen::Matrix2d::Ones(),
                               ExpectationBackend::kQuadrature)
                            .value;
  EXPECT_NEAR(kernel.RouterKernel(0, 0, 1.0), at_one, 1e-13);
  EXPECT_NEAR(at_one, 0.2933790359, 1e-9);  // theory.md §2
  // dK_pq/dρ = K_{p+1,q+1} (Price's theorem): central differences, step 1e-4, error ≲ 1e-8.
  for (double rho : {-0.7, 0.2, 0.95}) {
    for (int p = 0; p < 6; ++p) {
      const double fd = (kernel.RouterKernel(p, 1, rho + 1e-4) - kernel.RouterKernel(p, 1, rho - 1e-4)) / 2e-4;
      EXPECT_NEAR(kernel.RouterKernel(p + 1, 2, rho), fd, 1e-7) << "p=" << p << " rho=" << rho;
    }
  }
}

// Reference: the general expectation engine (auto backend: the Hermite diagram series or the
// conditioning quadrature) on the same four factors. Its error estimates are ~1e-12 here.
TEST(GatedPairKernel, EveryVariantPairMatchesTheGeneralEngine) {
  constexpr double kTol = 1e-9;
  std::mt19937_64 rng(11);
  const LinkPtr sigmoid = MakeLink("sigmoid"), tanh_gate = MakeLink("tanh");
  const LinkPtr he3 = MakeLink("he(3)"), poly = MakeLink("hermite(0.2, 0.5, -0.3, 0.4)");
  const GatedPairKernel kernel(sigmoid, he3, tanh_gate, poly);
  const int orders[kUnitVariants][2] = {{0, 0}, {0, 1}, {1, 0}, {0, 2}, {1, 1}, {2, 0}};
  for (int trial = 0; trial < 3; ++trial) {
    const Eigen::Matrix4d c = RandomCorrelation(4, trial == 2 ? 3 : 6, &rng);  // trial 2: singular
    for (int u = 0; u < kUnitVariants; ++u) {
      for (int v = 0; v < kUnitVariants; v += (u == 0 ? 1 : 2)) {
        const std::vector<LinkPtr> factors = {GateDerivative(sigmoid, orders[u][0]), ExpertDerivative(he3, orders[u][1]),
                                              GateDerivative(tanh_gate, orders[v][0]), ExpertDerivative(poly, orders[v][1])};
        const ExpectationResult ref = Expect(factors, Eigen::Vector4d::Zero(), c, ExpectationBackend::kQuadrature);
        ASSERT_LT(ref.error_estimate, 1e-10);
        EXPECT_NEAR(kernel.Value(static_cast<V>(u), static_cast<V>(v), FromMatrix(c)), ref.value, kTol)
            << "trial " << trial << " variants " << u << "," << v << " (" << ToString(ref.backend) << ")";
      }
    }
  }
}

// theory.md §3.3 (derived there, checked here): with routers ⟂ experts,
// E[π(r_a)σ(h_a)π(r_b)σ(h_b)] = 6 Q³ P(R), P(R) = Σ_k c_k² R^k (normalised coefficients).
TEST(GatedPairKernel, FactorisesOnTheRouterOrthogonalToExpertManifold) {
  const LinkPtr sigmoid = MakeLink("sigmoid"), he3 = MakeLink("he(3)");
  const GatedPairKernel kernel(sigmoid, he3, sigmoid, he3);
  const std::vector<double> c = sigmoid->HermiteCoefficients(100);
  for (double q : {-0.8, 0.1, 0.6, 1.0}) {
    for (double r : {-0.5, 0.0, 0.4, 0.85}) {
      GatedPairKernel::Correlations corr;
      corr.hu_hv = q;
      corr.ru_rv = r;
      double p = 0;
      for (int k = 100; k >= 0; --k) p = p * r + c[k] * c[k];
      EXPECT_NEAR(kernel.Value(V::kOutput, V::kOutput, corr), 6 * q * q * q * p, 1e-9) << "Q=" << q << " R=" << r;
    }
  }
}

TwoLayerSpec GatedSpec(int m, int m_star) {
  TwoLayerSpec spec;
  spec.student = testing::Block(m, MakeLink("he(3)"), 1.0, MakeLink("sigmoid"));
  spec.teacher = testing::Block(m_star, MakeLink("he(3)"), 1.0, MakeLink("sigmoid"));
  spec.constraint = VectorConstraint::kNormalised;
  spec.learning_rate = 0.8;
  spec.router_learning_rate = 1.3;
  spec.expert_norm = 1.5;
  spec.router_norm = 0.7;
  spec.noise_variance = 0.1;
  return spec;
}

// dR/dt = −Σ_a Λ_a ‖P_a g_a‖² with g_a the gradient of R in the direction ū_a, Λ_a = lr/‖u_a‖²:
// the drift (derivative variants) against the risk (output variant only) by finite differences
// along the drift (step 1e-5, error ≲ 1e-8 relative).
TEST(GatedFlow, RiskDecreasesAtMinusTheWeightedSquaredGradient) {
  const TwoLayerFlow flow(GatedSpec(3, 2));
  const int p = flow.students();
  for (std::uint64_t seed : {1, 2}) {
    const Eigen::MatrixXd gram = SampleInitialGram(p, flow.teachers(), 12, seed);
    const Eigen::MatrixXd drift = flow.GramDrift(gram);
    const double h = 1e-5;
    const double fd = (flow.Risk(gram + h * drift) - flow.Risk(gram - h * drift)) / (2 * h);
    const Eigen::MatrixXd d = flow.GradientOverlaps(gram);
    const Eigen::MatrixXd inverse = gram.inverse();  // g_a ∈ span(u): ‖g_a‖² = D_a Ω⁻¹ D_aᵀ
    double expected = 0;
    for (int a = 0; a < p; ++a) {
      const bool router = a >= p / 2;
      const double lambda = router ? 1.3 / (0.7 * 0.7) : 0.8 / (1.5 * 1.5);
      expected -= lambda * (d.row(a) * inverse * d.row(a).transpose() - d(a, a) * d(a, a));
    }
    EXPECT_LT(expected, 0);
    EXPECT_NEAR(fd, expected, 1e-7 * std::abs(expected)) << "seed " << seed;
  }
}

// The Stein form D = A Ω used by the flow against the first-order form D_ab = E[F ∂_a F h_b]
// computed directly by the general engine (five factors), on one student and one teacher unit.
TEST(GatedFlow, SteinFormMatchesTheFirstOrderFormOfTheEngine) {
  TwoLayerSpec spec = GatedSpec(1, 1);
  spec.noise_variance = 0;
  const TwoLayerFlow flow(spec);
  std::mt19937_64 rng(5);
  const Eigen::MatrixXd gram = RandomCorrelation(4, 7, &rng);  // w, v, w*, v*
  const Eigen::MatrixXd d = flow.GradientOverlaps(gram);
  const LinkPtr sigmoid = MakeLink("sigmoid"), he3 = MakeLink("he(3)"), id = MakeLink("identity");
  const LinkPtr dsig = GateDerivative(sigmoid, 1), dhe3 = DerivativeOf(he3);
  for (int a = 0; a < 2; ++a) {  // a = 0: expert w, a = 1: router v
    for (int b = 0; b < 4; ++b) {
      double sum = 0;
      for (int unit = 0; unit < 2; ++unit) {  // F = πσ(student) − πσ(teacher)
        const int r = unit == 0 ? 1 : 3, e = unit == 0 ? 0 : 2;
        const std::vector<int> index = {1, 0, r, e, b};
        const std::vector<LinkPtr> factors = {a == 1 ? dsig : sigmoid, a == 1 ? he3 : dhe3, sigmoid, he3, id};
        Eigen::MatrixXd cov(5, 5);
        for (int i = 0; i < 5; ++i) {
          for (int j = 0; j < 5; ++j) cov(i, j) = gram(index[i], index[j]);
        }
        ExpectationOptions o;
        o.validate = false;
        sum += (unit == 0 ? 1.0 : -1.0) * Expect(factors, Eigen::VectorXd::Zero(5), cov, ExpectationBackend::kAuto, o).value;
      }
      EXPECT_NEAR(d(a, b), sum, 1e-8) << "a=" << a << " b=" << b;
    }
  }
}

}  // namespace
}  // namespace moeflow
