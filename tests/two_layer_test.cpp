// The Gram-matrix drift of TwoLayerFlow: internal consistency of risk, gradient and drift
// (finite differences), and the exact sampler of initial overlaps.
#include <gtest/gtest.h>

#include <Eigen/Eigenvalues>
#include <Eigen/LU>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "moeflow/gauss/expectation.hpp"
#include "moeflow/links/link.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/two_layer.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

// Central differences with step 1e-5 on O(1) polynomials: truncation ~1e-10, round-off ~1e-11.
constexpr double kFiniteDifferenceTol = 1e-7;
constexpr double kStep = 1e-5;

TwoLayerFlow MakeFlow(int p, int k, const std::string& student_link, const std::string& teacher_link) {
  TwoLayerSpec spec;
  spec.student = testing::Block(p, MakeLink(student_link), 0.7, nullptr);
  spec.teacher = testing::Block(k, MakeLink(teacher_link), 1.3, nullptr);
  spec.learning_rate = 0.8;
  return TwoLayerFlow(spec);
}

TEST(TwoLayerFlow, PackAndUnpackRoundTrip) {
  const TwoLayerFlow flow = MakeFlow(3, 2, "h(2)", "h(3)");
  const Eigen::MatrixXd gram = SampleInitialGram(3, 2, 50, 7);
  EXPECT_LT((flow.Unpack(flow.Pack(gram)) - gram).cwiseAbs().maxCoeff(), 1e-15);
}

TEST(TwoLayerFlow, RiskGradientMatchesFiniteDifferences) {
  const TwoLayerFlow flow = MakeFlow(3, 2, "hermite(0.1, 0.5, 0.3, 0.4)", "hermite(0, 1, 0.2, -0.6)");
  const Eigen::MatrixXd gram = SampleInitialGram(3, 2, 20, 3);
  const Eigen::MatrixXd g = flow.RiskGradient(gram);
  for (int a = 0; a < 5; ++a) {
    for (int b = a + 1; b < 5; ++b) {
      Eigen::MatrixXd plus = gram, minus = gram;
      plus(a, b) += kStep, plus(b, a) += kStep, minus(a, b) -= kStep, minus(b, a) -= kStep;
      // Moving Ω_ab and Ω_ba together changes R by 2 G_ab per unit.
      const double fd = (flow.Risk(plus) - flow.Risk(minus)) / (2 * kStep);
      EXPECT_NEAR(2 * g(a, b), fd, kFiniteDifferenceTol) << "a=" << a << " b=" << b;
    }
  }
}

// Under spherical gradient flow dR/dt = -Λ Σ_a ‖P_a ∇_a R‖², with ∇_a R = 2 Σ_b G_ab u_b and
// P_a the projection orthogonal to u_a: ‖P_a ∇_a R‖² = 4 (G Ω G)_aa - D_aa².
TEST(TwoLayerFlow, RiskDecreasesAtMinusTheSquaredProjectedGradient) {
  const TwoLayerFlow flow = MakeFlow(3, 2, "hermite(0.1, 0.5, 0.3, 0.4)", "hermite(0, 1, 0.2, -0.6)");
  const Eigen::MatrixXd gram = SampleInitialGram(3, 2, 20, 5);
  const Eigen::MatrixXd drift = flow.GramDrift(gram);
  const double fd = (flow.Risk(gram + kStep * drift) - flow.Risk(gram - kStep * drift)) / (2 * kStep);
  const Eigen::MatrixXd g = flow.RiskGradient(gram);
  const Eigen::MatrixXd d = 2 * g * gram;
  const Eigen::MatrixXd gog = g * gram * g;
  double squared = 0;
  for (int a = 0; a < 3; ++a) squared += 4 * gog(a, a) - d(a, a) * d(a, a);
  EXPECT_GT(squared, 0.0);
  EXPECT_NEAR(fd, -0.8 * squared, kFiniteDifferenceTol);
}

// Trained second-layer weights: the state carries them, and along the full drift dR/dt gains
// exactly −Λ_a ‖∂R/∂a‖² over the drift with the weights frozen (the weights descend R). ∂R/∂a is
// checked against central differences of R in each weight (step 1e-5): ungated and gated (exact
// expectations), ungated with two input clusters (spherical: Mehler series of the shifted links;
// free: the expectation engine), and with the sampled backend ungated and with a top-2-of-3 softmax router, whose
// weight gradient is E[(f − y) ∂f/∂a_i] over the points (one pass) while the reference differences
// the sampled risk itself (the same points: R is still exactly quadratic in the weights).
TEST(TwoLayerFlow, TrainedWeightsDescendTheRisk) {
  for (const char* kind : {"ungated", "gated", "clusters spherical", "clusters free", "sampled", "sampled top-k"}) {
    const std::string k = kind;
    const bool gated = k == "gated";
    TwoLayerSpec spec;
    spec.student = testing::Block(3, MakeLink("hermite(0.1, 0.5, 0.3, 0.4)"), 0.7, gated ? MakeLink("sigmoid") : nullptr);
    spec.teacher = testing::Block(2, MakeLink("hermite(0, 1, 0.2, -0.6)"), 1.3, gated ? MakeLink("sigmoid") : nullptr);
    if (k == "sampled top-k") spec.student.top_k = 2;
    spec.sampled = k.rfind("sampled", 0) == 0;
    spec.population_samples = 4096;
    spec.learning_rate = 0.8;
    spec.student_weights = {0.7, -0.4, 1.1};
    spec.trained_weights = true;
    spec.weight_learning_rate = 0.6;
    if (gated) spec.constraint = VectorConstraint::kNormalised;
    if (k.rfind("clusters", 0) == 0) {
      spec.clusters.count = 2;
      spec.clusters.scale = 0.8;
      spec.clusters.teacher_weights = Eigen::MatrixXd{{1.3, -1.3}, {1.3, 0.9}};
      if (k == "clusters free") spec.constraint = VectorConstraint::kFree;
    }
    const TwoLayerFlow flow(spec);
    const int n = flow.vectors();
    const Eigen::MatrixXd gram = SampleInitialGram(flow.students(), n - flow.students(), 20, 5);
    const Eigen::VectorXd x = flow.Pack(gram);
    ASSERT_EQ(x.size(), flow.StateSize());
    EXPECT_EQ(flow.WeightsIn(x), spec.student_weights);
    // The weights' drift is −Λ_a ∂R/∂a, ∂R/∂a by finite differences.
    Eigen::VectorXd dx;
    flow.Drift(x, dx);
    for (int i = 0; i < 3; ++i) {
      std::vector<double> up = spec.student_weights, down = spec.student_weights;
      up[i] += kStep;
      down[i] -= kStep;
      const double fd = (flow.WithStudentWeights(up).Risk(gram) - flow.WithStudentWeights(down).Risk(gram)) / (2 * kStep);
      EXPECT_NEAR(dx[x.size() - 3 + i], -0.6 * fd, kFiniteDifferenceTol) << kind << " unit " << i;
    }
    // dR/dt along the drift, with and without the weights' part.
    auto risk = [&](const Eigen::VectorXd& y) { return flow.AtState(y).Risk(flow.Unpack(y)); };
    Eigen::VectorXd frozen = dx;
    frozen.tail(3).setZero();
    const double full = (risk(x + kStep * dx) - risk(x - kStep * dx)) / (2 * kStep);
    const double without = (risk(x + kStep * frozen) - risk(x - kStep * frozen)) / (2 * kStep);
    const Eigen::VectorXd grad = flow.WeightGradient(gram);
    EXPECT_GT(grad.squaredNorm(), 1e-3);
    EXPECT_NEAR(full - without, -0.6 * grad.squaredNorm(), kFiniteDifferenceTol) << kind;
    EXPECT_LT(without, 0.0);
  }
}

TEST(TwoLayerFlow, SphericalDriftKeepsNormsAndTeacherBlockFixed) {
  const TwoLayerFlow flow = MakeFlow(3, 2, "h(3)", "h(3)");
  const Eigen::MatrixXd drift = flow.GramDrift(SampleInitialGram(3, 2, 20, 11));
  for (int a = 0; a < 3; ++a) EXPECT_NEAR(drift(a, a), 0.0, 1e-15);
  EXPECT_EQ(drift.bottomRightCorner(2, 2).cwiseAbs().maxCoeff(), 0.0);
}

TEST(TwoLayerFlow, SingleIndexDriftIsTheClosedForm) {
  // dm/dt = (1 - m²) Σ_k k c_k c*_k m^{k-1} (theory.md §3.1); here c = c* = e_3.
  const TwoLayerFlow flow = MakeFlow(1, 1, "h(3)", "h(3)");
  Eigen::MatrixXd gram(2, 2);
  gram << 1, 0.3, 0.3, 1;
  const double weights = 0.7 * 1.3, lr = 0.8;
  EXPECT_NEAR(flow.GramDrift(gram)(0, 1), lr * weights * (1 - 0.09) * 3 * 0.09, 1e-15);
}

TEST(SampleInitialGram, OverlapsHaveVarianceOneOverDAndUnitNorms) {
  // Over 2000 seeds, d·E[(w·w*)²] = 1 - O(1/d) and d·E[(w_i·w_j)²] = 1 - O(1/d).
  const int seeds = 2000, p = 2, k = 1;
  const long long d = 400;
  double sum_m = 0, sum_m2 = 0, sum_q2 = 0;
  for (int s = 0; s < seeds; ++s) {
    const Eigen::MatrixXd gram = SampleInitialGram(p, k, d, static_cast<std::uint64_t>(s));
    EXPECT_NEAR(gram(0, 0), 1.0, 1e-14);
    sum_m += gram(0, 2);
    sum_m2 += d * gram(0, 2) * gram(0, 2);
    sum_q2 += d * gram(0, 1) * gram(0, 1);
  }
  // (Var of d·m² is 2 for a Gaussian m: standard error sqrt(2/2000) = 0.032; 5 SE bands.)
  EXPECT_NEAR(sum_m2 / seeds, 1.0, 5 * 0.032);
  EXPECT_NEAR(sum_q2 / seeds, 1.0, 5 * 0.032);
  EXPECT_NEAR(sum_m / seeds, 0.0, 5 * std::sqrt(1.0 / d / seeds));
}

}  // namespace
}  // namespace moeflow

namespace moeflow {
namespace {

// Free vectors under gradient flow: dR/dt = −Λ Σ_a ‖∇_a R‖², with ∇_a R = Σ_b (D Ω⁻¹)_ab u_b, so
// ‖∇_a R‖² = (D Ω⁻¹ Dᵀ)_aa (Ω invertible).
TEST(TwoLayerFlow, FreeVectorGradientFlowDecreasesRiskAtMinusTheSquaredGradient) {
  for (const char* link : {"erf_sqrt2", "tanh"}) {
    TwoLayerSpec spec;
    spec.student = testing::Block(3, MakeLink(link), 0.9, nullptr);
    spec.teacher = testing::Block(2, MakeLink(link), 1.1, nullptr);
    spec.constraint = VectorConstraint::kFree;
    spec.learning_rate = 0.7;
    const TwoLayerFlow flow(spec);
    Eigen::MatrixXd gram = SampleInitialGram(3, 2, 30, 9);
    gram.topRows(3) *= 0.8;
    gram.leftCols(3) *= 0.8;
    const Eigen::MatrixXd drift = flow.GramDrift(gram);
    const double fd = (flow.Risk(gram + kStep * drift) - flow.Risk(gram - kStep * drift)) / (2 * kStep);
    const Eigen::MatrixXd d = flow.GradientOverlaps(gram);
    const Eigen::MatrixXd gg = d * gram.inverse() * d.transpose();
    const double squared = gg.topLeftCorner(3, 3).trace();
    EXPECT_GT(squared, 0.0) << link;
    // tanh goes through the quadrature backend (error ~1e-10 per expectation).
    EXPECT_NEAR(fd, -0.7 * squared, 1e-6 * std::max(1.0, squared)) << link;
  }
}

// The model's prepared terms (FindCentredForm, found once at construction) against the formula
// summed term by term with Expect's exact backends (the Hermite diagram series for polynomial
// links, the closed forms for erf): the gradient overlaps D_ab = a Σ_v s_v E[σ'(h_a) h_b σ_v(h_v)]
// and the online-SGD covariance E[g_a g_b] = a² Σ_(v,w) s_v s_w E[σ'σ' σ_v σ_w] + a² σ² E[σ'σ'],
// free vectors with unequal norms, label noise, mixed student and teacher links. Tolerance 1e-11
// relative to the largest entry (the two sums differ by round-off only).
TEST(TwoLayerFlow, PreparedTermsMatchTheEngineTermByTerm) {
  for (const auto& [student_link, teacher_link] : std::vector<std::pair<std::string, std::string>>{
           {"he(3)", "he(3)"}, {"hermite(0.1, 0.5, 0.3, 0.4)", "hermite(0, 1, 0.2, -0.6)"}, {"erf_sqrt2", "erf_sqrt2"}}) {
    TwoLayerSpec spec;
    const double a = 0.9, a_star = 1.1, noise = 0.3;
    spec.student = testing::Block(3, MakeLink(student_link), a, nullptr);
    spec.teacher = testing::Block(2, MakeLink(teacher_link), a_star, nullptr);
    spec.constraint = VectorConstraint::kFree;
    spec.noise_variance = noise;
    const TwoLayerFlow flow(spec);
    Eigen::MatrixXd gram = SampleInitialGram(3, 2, 30, 11);
    gram.topRows(3) *= 0.8;
    gram.leftCols(3) *= 0.8;
    const std::vector<LinkPtr> sigma = {spec.student.link, spec.student.link, spec.student.link, spec.teacher.link,
                                        spec.teacher.link};
    const double sign[5] = {a, a, a, -a_star, -a_star};
    const LinkPtr derivative = DerivativeOf(spec.student.link), identity = MakeLink("identity");
    auto expect = [&](const std::vector<LinkPtr>& f, const std::vector<int>& index) {
      const int n = static_cast<int>(index.size());
      Eigen::MatrixXd cov(n, n);
      for (int r = 0; r < n; ++r) {
        for (int q = 0; q < n; ++q) cov(r, q) = gram(index[r], index[q]);
      }
      return Expect(f, Eigen::VectorXd::Zero(n), cov).value;
    };
    Eigen::MatrixXd d = Eigen::MatrixXd::Zero(5, 5), e = Eigen::MatrixXd::Zero(3, 3);
    for (int i = 0; i < 3; ++i) {
      for (int b = 0; b < 5; ++b) {
        for (int v = 0; v < 5; ++v) d(i, b) += a * sign[v] * expect({derivative, identity, sigma[v]}, {i, b, v});
      }
      for (int j = 0; j < 3; ++j) {
        for (int v = 0; v < 5; ++v) {
          for (int w = 0; w < 5; ++w) {
            e(i, j) += a * a * sign[v] * sign[w] * expect({derivative, derivative, sigma[v], sigma[w]}, {i, j, v, w});
          }
        }
        e(i, j) += a * a * noise * expect({derivative, derivative}, {i, j});
      }
    }
    const Eigen::MatrixXd model_d = flow.GradientOverlaps(gram), model_e = flow.GradientCovariance(gram);
    EXPECT_LT((model_d - d).cwiseAbs().maxCoeff(), 1e-11 * d.cwiseAbs().maxCoeff()) << student_link << "\n" << model_d - d;
    EXPECT_LT((model_e - e).cwiseAbs().maxCoeff(), 1e-11 * e.cwiseAbs().maxCoeff()) << student_link << "\n" << model_e - e;
    EXPECT_GT(e.cwiseAbs().maxCoeff(), 1e-2) << student_link;
  }
}

// TwoLayerFlow::Project (the projection step of integrate.project) on a cluster model with trained
// weights: student 0 put on teacher 0 with an overlap 1 + 5e-5 (what integration error does near a
// converged student) makes the Gram matrix indefinite; the projection must return it to the PSD
// cone (smallest eigenvalue ≥ −1e-13), with unit student norms (1e-14), the teacher and mean block
// and the weights unchanged, the overlap back at 1 (1e-9), and report a change of the violation's
// size. A PSD state, or one violating by less than the tolerance, is left bit for bit.
TEST(TwoLayerFlow, ProjectionReturnsAnIndefiniteGramToThePsdConeAndKeepsTheRest) {
  const FlowSetup setup = testing::BuildFromText(
      "d = 40\nseed = 2\n[clusters]\ncount = 2\nscale = 1.5\nglobal_signs = 1, -1\n"
      "[teacher]\nunits = 3\nlinks = h(3), h(3), h(3)\n[student]\nunits = 3\nlink = h(3)\ninit = random\n"
      "weights_lr = 1\n");
  const TwoLayerFlow& flow = *setup.system;
  const int p = flow.students(), n = flow.vectors();
  Eigen::VectorXd untouched = setup.initial_state;
  EXPECT_EQ(flow.Project(&untouched, 1e-12), 0.0);
  EXPECT_EQ(untouched, setup.initial_state);

  // Student 0 := teacher 0 (row p of the Gram matrix), then its overlap with teacher 0 raised.
  Eigen::MatrixXd gram = setup.initial_gram;
  for (int b = 0; b < n; ++b) {
    if (b != 0) gram(0, b) = gram(b, 0) = gram(p, b);
  }
  gram(0, 0) = 1;
  gram(0, p) = gram(p, 0) = 1 + 5e-5;
  Eigen::VectorXd x = flow.Pack(gram);
  x.tail(3) << 0.7, -0.2, 1.3;  // trained weights
  auto smallest = [](const Eigen::MatrixXd& g) {
    return Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(g, Eigen::EigenvaluesOnly).eigenvalues().minCoeff();
  };
  ASSERT_LT(smallest(flow.Unpack(x)), -1e-5);
  Eigen::VectorXd below = x;
  EXPECT_EQ(flow.Project(&below, 1.0), 0.0);  // tolerance above the violation: left alone
  EXPECT_EQ(below, x);

  Eigen::VectorXd y = x;
  const double moved = flow.Project(&y, 1e-8);
  EXPECT_GT(moved, 1e-5);
  EXPECT_LT(moved, 1e-3);
  const Eigen::MatrixXd projected = flow.Unpack(y);
  EXPECT_GE(smallest(projected), -1e-13);
  for (int i = 0; i < p; ++i) EXPECT_NEAR(projected(i, i), 1.0, 1e-14);
  EXPECT_LT((projected.bottomRightCorner(n - p, n - p) - gram.bottomRightCorner(n - p, n - p)).cwiseAbs().maxCoeff(),
            1e-15);
  EXPECT_NEAR(projected(0, p), 1.0, 1e-9);
  EXPECT_EQ(y.tail(3), x.tail(3));
  EXPECT_LT((projected - flow.Unpack(x)).cwiseAbs().maxCoeff(), 1e-3);  // a small move
}

}  // namespace
}  // namespace moeflow
