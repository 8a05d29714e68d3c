// Cluster-structured inputs (theory.md §3.4, Kawata et al.): x ~ N(ρ v_c, I) with c uniform, and a
// teacher whose weights depend on the cluster. References, by test:
//   - the exact cancellation of the global task (Σ_c s_c = 0, a neuron orthogonal to every v_c),
//     checked against the same computation with the signs reversed (identical code path, so any
//     surviving global term shows as a difference), on every backend and at every Hermite order;
//   - the Mehler path with shifted coefficients against the general Gaussian expectations with
//     means (a different formula: first-order form E[g_a h_b], no series in Ω);
//   - G = ½∂R/∂Ω, including the mean entries G(a, v_c), against central finite differences;
//   - the sampled backend within 5 standard errors of the exact one;
//   - model-file errors naming the key, the value and the rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "moeflow/error.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/links/link.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/two_layer.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

// A cluster teacher as in theory.md §3.4: units 0..C-1 local (weight 1 in their own cluster), unit C
// global with weight s_c in cluster c.
TwoLayerSpec ClusterSpec(const std::string& student_link, int students, const std::string& teacher_link,
                         const std::vector<double>& signs, double rho) {
  const int c = static_cast<int>(signs.size());
  TwoLayerSpec spec;
  spec.student.units = students;
  spec.student.link = MakeLink(student_link);
  spec.student.weight = 0.8;
  spec.teacher.units = c + 1;
  spec.teacher.link = MakeLink(teacher_link);
  spec.clusters.count = c;
  spec.clusters.scale = rho;
  spec.clusters.teacher_weights = Eigen::MatrixXd::Zero(c + 1, c);
  for (int i = 0; i < c; ++i) {
    spec.clusters.teacher_weights(i, i) = 1.0;
    spec.clusters.teacher_weights(c, i) = signs[static_cast<std::size_t>(i)];
  }
  return spec;
}

// The Gram matrix of unit vectors in R^12: students 0..p-1, teachers e_0..e_(k-1), means
// e_k..e_(k+C-1). Student 0 is orthogonal to every mean; the others are not.
Eigen::MatrixXd ClusterGram(int p, int k, int c, unsigned seed) {
  std::srand(seed);
  Eigen::MatrixXd u = Eigen::MatrixXd::Zero(p + k + c, 12);
  for (int i = 0; i < p; ++i) {
    u.row(i) = Eigen::RowVectorXd::Random(12);
    u(i, k - 1) += 1.5;  // a large overlap with the last teacher (the global one), for the controls
    if (i == 0) u.block(0, k, 1, c).setZero();
    u.row(i).normalize();
  }
  for (int j = 0; j < k + c; ++j) u(p + j, j) = 1.0;
  return u * u.transpose();
}

using testing::Tangent;

// Acceptance (issue 7, item 3): with Σ_c s_c = 0 the global task's contribution to the gradient of
// a neuron orthogonal to every v_c along w*_g vanishes: reversing every s_c changes nothing, to
// machine precision (1e-14 relative), at every Hermite order (teachers h_k, k = 1..6, and a student
// with all orders up to 7), for C = 2 (s = 1, −1) and C = 3 (s = 1, 1, −2), on the exact Mehler path
// and the general expectations (free vectors). The sampled backend cancels to O(1/N): its
// shrinkage D̂(Ω + εI)⁻¹Ω (ε = 1/N) mixes in the gradient along Σ_c s_c v_c, which the global task
// does produce (measured ≤ 5e-8 at N = 2048; tolerance 1e-6). Controls that make the test able to
// fail: a neuron with w·v_c ≠ 0, and signs that do not sum to zero, give differences > 1e-4.
TEST(ClusterInputs, GlobalTaskCancelsExactlyForNeuronsOrthogonalToTheMeans) {
  const std::string student = "hermite(0.1, 0.5, -0.3, 1, 0.4, -0.2, 0.3, 0.2)";
  for (const std::vector<double>& signs : {std::vector<double>{1, -1}, std::vector<double>{1, 1, -2}}) {
    for (int k = 1; k <= 6; ++k) {
      for (const char* backend : {"mehler", "free", "sampled"}) {
        const std::string b = backend;
        const std::string teacher = "h(" + std::to_string(k) + ")";
        auto build = [&](const std::vector<double>& s) {
          TwoLayerSpec spec = ClusterSpec(student, 2, teacher, s, 1.5);
          if (b == "free") spec.constraint = VectorConstraint::kFree;
          if (b == "sampled") spec.sampled = true, spec.population_samples = 2048;
          return TwoLayerFlow(spec);
        };
        std::vector<double> reversed;
        for (double s : signs) reversed.push_back(-s);
        std::vector<double> unbalanced = signs;
        unbalanced[0] += 0.5;
        std::vector<double> unbalanced_reversed;
        for (double s : unbalanced) unbalanced_reversed.push_back(-s);
        const int c = static_cast<int>(signs.size());
        const TwoLayerFlow flow = build(signs), flipped = build(reversed);
        const Eigen::MatrixXd gram = ClusterGram(2, c + 1, c, 7 + k);
        const int global = 2 + c;  // the global teacher's vector
        const Eigen::MatrixXd t = Tangent(flow, gram), tf = Tangent(flipped, gram);
        const double scale = std::max(1.0, t.cwiseAbs().maxCoeff());
        const std::string where = b + " C=" + std::to_string(c) + " k=" + std::to_string(k);
        const double tolerance = (b == "sampled" ? 1e-6 : 1e-14) * scale;
        EXPECT_LE(std::abs(t(0, global) - tf(0, global)), tolerance) << where << ": neuron ⟂ v_c";
        if (k >= 2) {  // at k = 1 the shifted h1 has no h1-coefficient change: no control signal
          EXPECT_GT(std::abs(t(1, global) - tf(1, global)), 1e-4) << where << ": neuron with w·v_c ≠ 0";
        }
        const TwoLayerFlow a = build(unbalanced), a_flipped = build(unbalanced_reversed);
        EXPECT_GT(std::abs(Tangent(a, gram)(0, global) - Tangent(a_flipped, gram)(0, global)), 1e-4)
            << where << ": Σ s_c ≠ 0";
      }
    }
  }
}

// The Mehler path (spherical: shifted Hermite coefficients, series in Ω) against the general
// Gaussian expectations with means (free vectors: E[σ'(h_a) h_b σ_v(h_v)] with h ~ N(μ_c, Ω)) at the
// same unit-norm state: equal risks and tangent gradients. Polynomial links: both exact (1e-12);
// tanh student and erf teacher: the Mehler series truncated at order 60 against quadrature (1e-9).
TEST(ClusterInputs, MehlerPathAgreesWithTheGeneralExpectations) {
  struct Case {
    const char* student;
    const char* teacher;
    double tolerance;
  };
  for (const Case& k : {Case{"hermite(0.1, 0.5, -0.3, 1, 0.4)", "hermite(0, 0, 0.3, 1)", 1e-12},
                        Case{"tanh", "erf", 1e-9}}) {
    TwoLayerSpec spec = ClusterSpec(k.student, 3, k.teacher, {1, 1, -2}, 1.2);
    spec.teacher.weight = 1.0;
    const TwoLayerFlow mehler(spec);
    spec.constraint = VectorConstraint::kFree;
    const TwoLayerFlow general(spec);
    const Eigen::MatrixXd gram = ClusterGram(3, 4, 3, 11);
    EXPECT_NEAR(mehler.Risk(gram), general.Risk(gram), k.tolerance) << k.student;
    const Eigen::MatrixXd a = Tangent(mehler, gram), b = Tangent(general, gram);
    EXPECT_LE((a - b).topRows(3).cwiseAbs().maxCoeff(), k.tolerance) << k.student << "\n" << a << "\n" << b;
    EXPECT_GT(a.topRows(3).cwiseAbs().maxCoeff(), 1e-2);
  }
}

// G = ½ ∂R/∂Ω against fourth-order central differences (step 1e-3, truncation ~1e-12), for every
// off-diagonal entry, including the student-mean entries through which the means μ_a = ρ Ω(a, v_c)
// enter. Polynomial links (exact shifted coefficients).
TEST(ClusterInputs, RiskGradientIncludesTheMeansAndMatchesFiniteDifferences) {
  const TwoLayerSpec spec = ClusterSpec("hermite(0.1, 0.5, -0.3, 1, 0.4)", 2, "hermite(0, 0, 0.3, 1)", {1, -1}, 1.3);
  const TwoLayerFlow flow(spec);
  const Eigen::MatrixXd gram = ClusterGram(2, 3, 2, 5);
  const Eigen::MatrixXd g = flow.RiskGradient(gram);
  const int n = flow.vectors();
  ASSERT_EQ(n, 7);
  const double h = 1e-3;
  double largest_mean_entry = 0;
  for (int a = 0; a < 2; ++a) {
    for (int b = a + 1; b < n; ++b) {
      auto risk = [&](double step) {
        Eigen::MatrixXd moved = gram;
        moved(a, b) += step;
        moved(b, a) += step;
        return flow.Risk(moved);
      };
      const double fd = (-risk(2 * h) + 8 * risk(h) - 8 * risk(-h) + risk(-2 * h)) / (12 * h);
      EXPECT_NEAR(2 * g(a, b), fd, 1e-9) << "a=" << a << " b=" << b;
      if (b >= 5) largest_mean_entry = std::max(largest_mean_entry, std::abs(g(a, b)));
    }
  }
  EXPECT_GT(largest_mean_entry, 1e-2);  // the means matter at this state
}

// Under spherical gradient flow dR/dt = −Λ Σ_a ‖P_a ∇_a R‖² with ∇_a R = 2 Σ_e G_ae u_e over every
// vector, cluster means included: ‖P_a ∇_a R‖² = 4 (G Ω G)_aa − D_aa².
TEST(ClusterInputs, RiskDecreasesAtMinusTheSquaredProjectedGradient) {
  TwoLayerSpec spec = ClusterSpec("hermite(0.1, 0.5, -0.3, 1, 0.4)", 3, "h(3)", {1, -1}, 1.0);
  spec.learning_rate = 0.7;
  const TwoLayerFlow flow(spec);
  const Eigen::MatrixXd gram = ClusterGram(3, 3, 2, 9);
  const Eigen::MatrixXd drift = flow.GramDrift(gram);
  const double h = 1e-3;
  auto risk = [&](double s) { return flow.Risk(gram + s * drift); };
  const double fd = (-risk(2 * h) + 8 * risk(h) - 8 * risk(-h) + risk(-2 * h)) / (12 * h);
  const Eigen::MatrixXd g = flow.RiskGradient(gram);
  const Eigen::MatrixXd d = 2 * g * gram, gog = g * gram * g;
  double squared = 0;
  for (int a = 0; a < 3; ++a) squared += 4 * gog(a, a) - d(a, a) * d(a, a);
  EXPECT_GT(squared, 1e-3);
  EXPECT_NEAR(fd, -0.7 * squared, 1e-9);
}

// The sampled backend (the same points shifted by each cluster's means) against the exact Mehler
// path: the mean of 16 independent point sets within 5 standard errors, for the risk and every
// entry of the tangent D, at a random start (d = 40) of a model like the shipped vanilla one.
TEST(ClusterInputs, SampledBackendAgreesWithTheExactPathWithinFiveStandardErrors) {
  const FlowSetup exact = testing::BuildFromText(
      "d = 40\nseed = 2\n[clusters]\ncount = 2\nscale = 1.5\nglobal_signs = 1, -1\n"
      "[teacher]\nunits = 3\nlinks = h(3), hermite(0, 0, 0.5, 1), h(3)\n"
      "[student]\nunits = 3\nlink = hermite(0, 0.3, 0.2, 1, 0.4)\ninit = random\n");
  ASSERT_FALSE(exact.system->PointBackend());
  const Eigen::MatrixXd& gram = exact.initial_gram;
  ASSERT_EQ(gram.rows(), 8);
  const double risk = exact.system->Risk(gram);
  const Eigen::MatrixXd d = Tangent(*exact.system, gram);
  testing::ExpectWithinFiveStandardErrors("exact", risk, d.topRows(3), 16, [&](int s) {
    TwoLayerSpec spec = exact.system->spec();
    spec.sampled = true;
    spec.population_samples = 8192;
    spec.population_seed = 300 + s;
    const TwoLayerFlow sampled(spec);
    const TwoLayerFlow::SampledTerms t = sampled.SampleTerms(gram, true, false);
    return testing::PointEstimate{t.risk, Tangent(t.gradient_overlaps, gram).topRows(3)};
  });
}

// The `routing` observable (per cluster, the largest share of its inputs whose top-1 router logit is
// one expert) against a direct seeded Monte Carlo of the inputs: explicit unit vectors in R^14, the
// routers partly aligned with the cluster means, x = ρ v_c + z with 400 000 z per cluster, the
// logits v_e·x counted. Tolerance 5 binomial standard errors of the reference (plus, for M = 3, of
// the sampled backend's 16 384 points). M = 2 on both point backends (the exact normal-CDF share),
// M = 3 on the sampled backend (its points).
TEST(ClusterInputs, RoutingAccuracyAgreesWithADirectMonteCarloOfTheInputs) {
  for (int m : {2, 3}) {
    const std::string text = testing::SoftmaxClusterMoeText(m);
    std::vector<std::string> backends = {"sampled"};
    if (m == 2) backends.push_back("quadrature");
    for (const std::string& backend : backends) {
      const FlowSetup setup = testing::BuildFromText(text, {"population.backend=" + backend});
      const TwoLayerFlow& flow = *setup.system;
      const int p = flow.students(), k = 3, c = 2, experts = 2 * m;
      ASSERT_EQ(flow.vectors(), p + k + c);
      // Unit vectors: students random, router e partly along ±(v_1 − v_2) (expert 0 for cluster 1,
      // expert 1 for cluster 2, expert 2 neither), teachers and means the first axes.
      std::mt19937_64 rng(11);
      std::normal_distribution<double> normal;
      const int dim = 14;
      Eigen::MatrixXd u = Eigen::MatrixXd::Zero(p + k + c, dim);
      for (int j = 0; j < k + c; ++j) u(p + j, j) = 1.0;
      for (int i = 0; i < p; ++i) {
        for (int q = 0; q < dim; ++q) u(i, q) = normal(rng);
        if (i >= experts) {
          const int e = i - experts;
          const double along = e == 0 ? 1.0 : e == 1 ? -0.7 : 0.0;
          u(i, k) += along * 6.0;
          u(i, k + 1) -= along * 6.0;
        }
        u.row(i).normalize();
      }
      const Eigen::MatrixXd gram = u * u.transpose();
      const Eigen::VectorXd routing = flow.RoutingAccuracy(gram);
      ASSERT_EQ(routing.size(), c);
      constexpr int kSamples = 400000;
      for (int cluster = 0; cluster < c; ++cluster) {
        std::vector<double> shares(static_cast<std::size_t>(m), 0.0);
        Eigen::VectorXd x(dim);
        for (int s = 0; s < kSamples; ++s) {
          for (int q = 0; q < dim; ++q) x[q] = normal(rng);
          x[k + cluster] += 3.0;  // ρ v_c
          int top = 0;
          for (int e = 1; e < m; ++e) {
            if (u.row(experts + e).dot(x) > u.row(experts + top).dot(x)) top = e;
          }
          shares[static_cast<std::size_t>(top)] += 1.0 / kSamples;
        }
        const double reference = *std::max_element(shares.begin(), shares.end());
        double se = std::sqrt(reference * (1 - reference) / kSamples);
        if (m > 2) se = std::hypot(se, std::sqrt(reference * (1 - reference) / 16384));
        EXPECT_GT(reference, 0.7) << "the routers should route (control)";
        EXPECT_NEAR(routing[cluster], reference, 5 * se) << "M = " << m << ", " << backend << ", cluster " << cluster;
      }
    }
  }
}

// The means are state: the drift moves the student-mean overlaps and leaves the fixed block
// (teachers and means) alone; a student on the sphere stays there.
TEST(ClusterInputs, DriftMovesStudentMeanOverlapsAndKeepsTheFixedBlock) {
  const TwoLayerSpec spec = ClusterSpec("hermite(0.1, 0.5, -0.3, 1, 0.4)", 2, "h(3)", {1, -1}, 1.0);
  const TwoLayerFlow flow(spec);
  const Eigen::MatrixXd gram = ClusterGram(2, 3, 2, 3);
  EXPECT_LT((flow.Unpack(flow.Pack(gram)) - gram).cwiseAbs().maxCoeff(), 1e-15);
  const Eigen::MatrixXd drift = flow.GramDrift(gram);
  EXPECT_EQ(drift.bottomRightCorner(5, 5).cwiseAbs().maxCoeff(), 0.0);
  EXPECT_GT(drift.block(0, 5, 2, 2).cwiseAbs().maxCoeff(), 1e-3);
  for (int a = 0; a < 2; ++a) EXPECT_EQ(drift(a, a), 0.0);
}

TEST(ClusterInputs, BadClusterKeysAreRejectedByName) {
  const std::string base =
      "d = 100\n[clusters]\ncount = 2\nglobal_signs = 1, -1\n[teacher]\nunits = 3\n[student]\nunits = 2\n";
  struct Case {
    std::vector<std::string> overrides;
    const char* key;
    const char* rule;
  };
  for (const Case& c : std::vector<Case>{
           {{"clusters.global_signs=1,1"}, "clusters.global_signs", "must sum to 0"},
           {{"clusters.global_signs=1,-1,0"}, "clusters.global_signs", "one sign s_c per cluster"},
           {{"teacher.units=2"}, "teacher.units", "clusters.count + 1"},
           {{"clusters.teacher_overlaps=0,0,0.2,0,0,0"}, "clusters.teacher_overlaps", "must be zero"},
           {{"clusters.scale=-1"}, "clusters.scale", ">= 0"},
           {{"teacher.links=h(3),h(3)"}, "teacher.links", "one link per unit"},
           {{"teacher.links=h(3),h(3),nope"}, "teacher.links", "not a list of valid links"},
           {{"teacher.links=h(3),h(3),h(3)", "teacher.link=h(3)"}, "teacher.link", "give one of them"},
           {{"clusters.teacher_weights=1,0,0,1,1,-1"}, "clusters.teacher_weights", "give one of them"},
       }) {
    io::ModelFile model = io::ModelFile::Parse(base, "test");
    for (const std::string& o : c.overrides) model.Set(o);
    try {
      BuildFlow(model);
      ADD_FAILURE() << c.key << ": accepted";
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(c.key), std::string::npos) << what;
      EXPECT_NE(what.find(c.rule), std::string::npos) << what;
    }
  }
  // On purpose: clusters.relax = true lets both through.
  io::ModelFile relaxed = io::ModelFile::Parse(base, "test");
  relaxed.Set("clusters.global_signs=1,1");
  relaxed.Set("clusters.teacher_overlaps=0,0,0.2,0,0,0");
  relaxed.Set("clusters.relax=true");
  EXPECT_NO_THROW(BuildFlow(relaxed));
}

}  // namespace
}  // namespace moeflow
