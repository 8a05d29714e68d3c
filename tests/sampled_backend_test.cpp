// The sampled population backend (fixed antithetic Gaussian points over the projections, the
// backend of top-k routers that couple all units) against independent references:
//   - the exact gated pair kernels of the soft-routed MoE (risk and gradient overlaps; reference:
//     the exact backend, tolerance 5 standard errors estimated from 16 independent point sets);
//   - exact zeros at the teacher (the teacher's projections are the points themselves);
//   - top-1 of one expert, which is the plain single-index model (exact Mehler risk);
//   - the committee ODE with the exact erf expectations, whose distance to the sampled ODE
//     shrinks like N^(-1/2) in the number of points.
#include <gtest/gtest.h>

#include <cmath>

#include "moeflow/error.hpp"
#include "moeflow/integrate/integrator.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/links/link.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/two_layer.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::BuildFromText;

const char* kSoftRouted = R"(
d = 40
seed = 3
[teacher]
units = 2
link = he(3)
gate = sigmoid
[student]
units = 3
link = he(3)
gate = sigmoid
vectors = normalised
init = random
)";

TEST(SampledBackend, AgreesWithTheExactGatedKernelsWithinFiveStandardErrors) {
  const FlowSetup exact = BuildFromText(kSoftRouted);
  ASSERT_FALSE(exact.system->PointBackend());
  const Eigen::MatrixXd& gram = exact.initial_gram;
  const int p = exact.system->students();
  const double risk = exact.system->Risk(gram);
  const Eigen::MatrixXd d = exact.system->GradientOverlaps(gram).topRows(p);

  constexpr int kSets = 16;
  Eigen::VectorXd reported(kSets);
  const double se = testing::ExpectWithinFiveStandardErrors("exact", risk, d, kSets, [&](int s) {
    const FlowSetup sampled = BuildFromText(kSoftRouted, {"population.backend=sampled", "population.samples=16384",
                                                          "population.seed=" + std::to_string(100 + s)});
    EXPECT_TRUE(sampled.system->PointBackend());
    const TwoLayerFlow::SampledTerms t = sampled.system->SampleTerms(gram, true, false);
    reported[s] = t.risk_error;
    return testing::PointEstimate{t.risk, t.gradient_overlaps};
  });
  // The reported error of one set is that set's standard error: √16 times the mean's.
  EXPECT_NEAR(reported.mean() / (se * std::sqrt(kSets)), 1.0, 0.5);
}

TwoLayerSpec TopK(int units, int k) {
  TwoLayerSpec spec;
  spec.student.units = spec.teacher.units = units;
  spec.student.link = spec.teacher.link = MakeLink("he(3)");
  spec.student.top_k = spec.teacher.top_k = k;
  spec.constraint = VectorConstraint::kSpherical;
  spec.population_samples = 4096;
  return spec;
}

TEST(SampledBackend, RiskAndGradientVanishExactlyAtTheTeacher) {
  TwoLayerSpec spec = TopK(4, 2);
  spec.noise_variance = 0.25;
  const TwoLayerFlow flow(spec);
  ASSERT_TRUE(flow.PointBackend());
  const int p = flow.students();  // 8: experts and routers
  Eigen::MatrixXd gram = Eigen::MatrixXd::Identity(2 * p, 2 * p);
  gram.topRightCorner(p, p) = Eigen::MatrixXd::Identity(p, p);
  gram.bottomLeftCorner(p, p) = Eigen::MatrixXd::Identity(p, p);
  const TwoLayerFlow::SampledTerms t = flow.SampleTerms(gram, true, false);
  EXPECT_EQ(t.risk, 0.125);  // σ²/2 exactly
  EXPECT_EQ(t.gradient_overlaps.cwiseAbs().maxCoeff(), 0.0);
}

// One expert routed to itself: f = σ(w·x) whatever the router, so the risk is the plain
// single-index risk (exact Mehler series) and the router receives no gradient.
TEST(SampledBackend, TopOneOfOneExpertIsThePlainSingleIndexModel) {
  TwoLayerSpec routed = TopK(1, 1);
  routed.teacher.top_k = 0;
  routed.population_samples = 1 << 16;
  TwoLayerSpec plain = routed;
  plain.student.top_k = 0;
  const TwoLayerFlow a(routed), b(plain);
  ASSERT_EQ(a.students(), 2);
  Eigen::MatrixXd gram = Eigen::MatrixXd::Identity(3, 3);  // expert, router, teacher
  gram(0, 2) = gram(2, 0) = 0.6;
  gram(0, 1) = gram(1, 0) = 0.3;
  gram(1, 2) = gram(2, 1) = -0.2;
  Eigen::MatrixXd plain_gram(2, 2);
  plain_gram << 1, 0.6, 0.6, 1;
  const TwoLayerFlow::SampledTerms t = a.SampleTerms(gram, true, false);
  const double exact = b.Risk(plain_gram);
  EXPECT_LE(std::abs(t.risk - exact), 5 * t.risk_error) << t.risk << " ± " << t.risk_error << " vs " << exact;
  EXPECT_EQ(t.gradient_overlaps.row(1).cwiseAbs().maxCoeff(), 0.0);
}

// A frozen block gets no online-SGD noise term: with the routers frozen (multiplier 0) their overlaps
// with each other and with the teachers stay put exactly (those with the moving experts do not); the term scales like Λ_a Λ_b (halving
// the expert multiplier quarters the expert-expert noise part, measured on the difference from η̃ = 0).
TEST(SampledBackend, OnlineTermFollowsTheBlockMultipliers) {
  TwoLayerSpec spec = TopK(3, 2);
  spec.online_sgd_rate = 0.5;
  spec.router_learning_rate = 0.0;
  spec.population_samples = 2048;
  const int p = 6, n = 12;
  const Eigen::MatrixXd gram = SampleInitialGram(p, n - p, 30, 4);
  const TwoLayerFlow frozen(spec);
  const Eigen::MatrixXd drift = frozen.GramDrift(gram);
  EXPECT_EQ(drift.block(3, 3, 3, n - 3).cwiseAbs().maxCoeff(), 0.0) << drift;  // routers with routers, teachers
  EXPECT_GT(drift.block(3, 0, 3, 3).cwiseAbs().maxCoeff(), 1e-3);               // routers with the moving experts
  auto noise = [&](double lr) -> Eigen::MatrixXd {
    TwoLayerSpec s = spec;
    s.learning_rate = lr;
    TwoLayerSpec quiet = s;
    quiet.online_sgd_rate = 0.0;
    const Eigen::MatrixXd difference = TwoLayerFlow(s).GramDrift(gram) - TwoLayerFlow(quiet).GramDrift(gram);
    return difference.topLeftCorner(3, 3);
  };
  const Eigen::MatrixXd full = noise(1.0), half = noise(0.5);
  EXPECT_GT(full.cwiseAbs().maxCoeff(), 1e-3);
  EXPECT_LT((half - 0.25 * full).cwiseAbs().maxCoeff(), 1e-12 * full.cwiseAbs().maxCoeff());
}

TEST(SampledBackend, RejectsImpossibleRouters) {
  TwoLayerSpec spec = TopK(3, 4);
  EXPECT_THROW(TwoLayerFlow{spec}, InputError);
  spec = TopK(3, 2);
  spec.student.gate = MakeLink("sigmoid");
  EXPECT_THROW(TwoLayerFlow{spec}, InputError);
  spec = TopK(3, 2);
  spec.student.temperature = 0;
  EXPECT_THROW(TwoLayerFlow{spec}, InputError);
  EXPECT_THROW(BuildFromText(kSoftRouted, {"student.top_k=2", "student.gate=none", "population.backend=exact"}), InputError);
}

// Saad-Solla erf committee (free vectors, online-SGD limit, closed-form expectations) integrated with the exact and
// the sampled backend: the sup over t of |R_sampled − R_exact| shrinks as the points grow 16×
// (N^(-1/2): 4×; required: at least 2.5×), and is below 5e-3 (relative) at N = 2^17.
TEST(SampledBackend, CommitteeOdeConvergesToTheExactOneAsThePointsGrow) {
  const std::string model = testing::ModelPath("committee_erf_k2m2.ini");
  auto run = [&](const std::vector<std::string>& overrides) {
    io::ModelFile m = io::ModelFile::Load(model);
    m.Set("integrate.t_end=20");
    for (const std::string& o : overrides) m.Set(o);
    const FlowSetup setup = BuildFlow(m);
    Trajectory trajectory;
    const RunSummary summary = Integrate(*setup.system, setup.initial_state, setup.options, {}, &trajectory);
    EXPECT_TRUE(summary.Ok()) << summary.message;
    std::vector<double> risk;
    for (const Eigen::VectorXd& v : trajectory.values) risk.push_back(v[0]);
    return risk;
  };
  const std::vector<double> exact = run({});
  auto distance = [&](int samples) {
    const std::vector<double> r = run({"population.backend=sampled", "population.samples=" + std::to_string(samples)});
    EXPECT_EQ(r.size(), exact.size());
    double sup = 0;
    for (std::size_t i = 0; i < std::min(r.size(), exact.size()); ++i) {
      sup = std::max(sup, std::abs(r[i] - exact[i]) / exact[i]);
    }
    return sup;
  };
  const double coarse = distance(1 << 13), fine = distance(1 << 17);
  std::cout << "sup relative risk distance to the exact ODE: " << coarse << " (N = 2^13), " << fine
            << " (N = 2^17)\n";
  EXPECT_GT(coarse / fine, 2.5);
  EXPECT_LT(fine, 5e-3);
}

// ObserveSome (what the integrator asks for between recorded rows) on the point backends: what is
// wanted is exactly Observe()'s (reference: Observe at the same state, compared bit for bit), and
// the costly observables not wanted — the risk with its standard error, the routing of M = 3
// experts over the points — are skipped (written 0). M = 2's routing is a closed form and always
// written. Cluster inputs with a softmax router, sampled and quadrature backends.
TEST(SampledBackend, ObserveSomeSkipsOnlyTheCostlyObservablesNotWanted) {
  for (int m : {2, 3}) {
    const std::string text = testing::SoftmaxClusterMoeText(m);
    for (const std::string backend : {"sampled", "quadrature"}) {
      if (m == 3 && backend == "quadrature") continue;  // the quadrature backend routes two experts
      const FlowSetup setup = BuildFromText(text, {"population.backend=" + backend});
      const TwoLayerFlow& flow = *setup.system;
      const std::vector<ObservableInfo>& observables = flow.Observables();
      const std::vector<int> offsets = ObservableOffsets(observables);
      const Eigen::VectorXd x = flow.Pack(setup.initial_gram);
      Eigen::VectorXd all;
      flow.Observe(x, &all);
      ASSERT_GT(all[0], 0.0);
      auto costly = [&](const std::string& name) {
        return name == "risk" || name == "risk_error" || (name == "routing" && m > 2);
      };
      for (std::size_t only = 0; only <= observables.size(); ++only) {  // one observable wanted, or none
        std::vector<bool> wanted(observables.size(), false);
        if (only < observables.size()) wanted[only] = true;
        Eigen::VectorXd some;
        flow.ObserveSome(x, wanted, &some);
        ASSERT_EQ(some.size(), all.size());
        for (std::size_t o = 0; o < observables.size(); ++o) {
          const bool risk_pair = observables[o].name.rfind("risk", 0) == 0 && only < observables.size() &&
                                 observables[only].name.rfind("risk", 0) == 0;  // one pass gives both
          const bool written = wanted[o] || risk_pair || !costly(observables[o].name);
          for (int v = offsets[o]; v < offsets[o] + observables[o].size(); ++v) {
            if (written) {
              EXPECT_EQ(some[v], all[v]) << observables[o].name << ", M = " << m << ", " << backend;
            } else {
              EXPECT_EQ(some[v], 0.0) << observables[o].name << " computed though not wanted, M = " << m << ", "
                                      << backend;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace moeflow
