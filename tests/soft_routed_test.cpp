// The shipped soft-routed MoE (models/soft_routed_moe.ini, theory.md §3.3): the risk against the
// factorised closed form on the router ⟂ expert manifold, invariance of the manifold, expert
// before router, the √d escape, and the model-file keys of gated units.
#include <gtest/gtest.h>

#include <Eigen/Eigenvalues>
#include <cmath>
#include <map>

#include "moeflow/error.hpp"
#include "moeflow/integrate/integrator.hpp"
#include "moeflow/links/link.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/protocol.hpp"
#include "moeflow/verify/checks.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

constexpr int kM = 25, kMStar = 5;  // the shipped model's students and teachers

io::ModelFile ShippedModel(const std::vector<std::string>& overrides) {
  io::ModelFile model = io::ModelFile::Load(testing::ModelPath("soft_routed_moe.ini"));
  for (const std::string& s : overrides) model.Set(s);
  return model;
}

// theory.md §3.3 (derived there): on the manifold
//   L = 3 Σ_ij Q_ij³ P(R_ij) − 6 Σ_il γ2_il³ P(γ1_il) + 3 m* P(1),  P(ρ) = Σ_k c_k² ρ^k,
// with the sigmoid's normalised Hermite coefficients (K = 100; truncation < 1e-15 for |ρ| ≤ 0.9
// and the series at ρ = 1 converges to ~1e-14).
double FactorisedLoss(const Eigen::MatrixXd& g) {
  const std::vector<double> c = MakeLink("sigmoid")->HermiteCoefficients(100);
  auto p = [&c](double rho) {
    double v = 0;
    for (int k = 100; k >= 0; --k) v = v * rho + c[k] * c[k];
    return v;
  };
  double loss = 3 * kMStar * p(1.0);
  for (int i = 0; i < kM; ++i) {
    for (int j = 0; j < kM; ++j) loss += 3 * std::pow(g(i, j), 3) * p(g(kM + i, kM + j));
    for (int l = 0; l < kMStar; ++l) {
      loss -= 6 * std::pow(g(i, 2 * kM + l), 3) * p(g(kM + i, 2 * kM + kMStar + l));
    }
  }
  return loss;
}

TEST(SoftRoutedMoe, RoutersOrthogonalInitialGramIsValidAndOnTheManifold) {
  const FlowSetup setup = BuildFlow(ShippedModel({}));
  const Eigen::MatrixXd& g = setup.initial_gram;
  ASSERT_EQ(g.rows(), 2 * kM + 2 * kMStar);
  EXPECT_LT((g.diagonal().array() - 1).abs().maxCoeff(), 1e-14);
  EXPECT_GT(Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(g).eigenvalues().minCoeff(), 0.0);
  for (int i = 0; i < kM + kMStar; ++i) {  // every router (student, teacher) against every expert
    const int r = i < kM ? kM + i : 2 * kM + kMStar + (i - kM);
    for (int j = 0; j < kM + kMStar; ++j) {
      const int e = j < kM ? j : 2 * kM + (j - kM);
      EXPECT_EQ(g(r, e), 0.0) << "router " << r << ", expert " << e;
    }
  }
  // Overlaps with the teachers are O(d^(-1/2)) at d = 1000.
  EXPECT_LT(g.block(0, 2 * kM, 2 * kM, 2 * kMStar).cwiseAbs().maxCoeff(), 5 / std::sqrt(1000.0));
}

// One run of the shipped model at d = 1000 to t = 60 (≈ 8 s): the general pair expectations
// against the factorised loss along the trajectory, the manifold kept, each expert first.
TEST(SoftRoutedMoe, ShippedRunStaysOnTheManifoldAndFindsExpertsBeforeRouters) {
  const FlowSetup setup = BuildFlow(ShippedModel({}));
  Trajectory trajectory;
  const RunSummary summary = Integrate(*setup.system, setup.initial_state, setup.options, setup.events, &trajectory);
  ASSERT_EQ(summary.termination, Termination::kReachedEnd) << summary.message;
  const auto offsets = ObservableOffsets(trajectory.observables);
  std::map<std::string, int> at;
  for (std::size_t i = 0; i < trajectory.observables.size(); ++i) at[trajectory.observables[i].name] = offsets[i];
  double cross = 0, worst = 0;
  for (std::size_t row = 0; row < trajectory.time.size(); ++row) {
    const Eigen::VectorXd& v = trajectory.values[row];
    cross = std::max(cross, v[at["cross"]]);
    if (row % 20 == 0) {  // rebuild the Gram matrix from M and Q and evaluate the closed form
      Eigen::MatrixXd g = Eigen::MatrixXd::Identity(2 * kM + 2 * kMStar, 2 * kM + 2 * kMStar);
      for (int a = 0; a < 2 * kM; ++a) {
        for (int b = 0; b < 2 * kMStar; ++b) g(a, 2 * kM + b) = g(2 * kM + b, a) = v[at["M"] + a * 2 * kMStar + b];
        for (int b = 0; b < 2 * kM; ++b) g(a, b) = v[at["Q"] + a * 2 * kM + b];
      }
      worst = std::max(worst, std::abs(v[at["risk"]] - FactorisedLoss(g)));
    }
  }
  EXPECT_LE(cross, 1e-10);
  EXPECT_LT(worst, 1e-9) << "risk vs the factorised form";
  EXPECT_NEAR(trajectory.values.front()[at["risk"]], 26.4, 0.1);  // theory.md §3.3: ≈ 26.4 at d = 1000
  EXPECT_LT(trajectory.values.back()[at["risk"]], 1e-2);
  std::map<std::string, double> t;
  for (const EventRecord& e : summary.events) t[e.spec.name] = e.occurred ? e.time : INFINITY;
  int recovered = 0;
  for (int l = 0; l < kMStar; ++l) {
    const std::string s = std::to_string(l);
    EXPECT_LT(t["expert_" + s], t["router_" + s]) << "teacher " << l << ": expert found after the router";
    if (std::isfinite(t["recovered_" + s])) ++recovered;
  }
  EXPECT_GE(recovered, 3);
  std::cout << "pairs recovered by t = 60: " << recovered << " of 5; risk vs factorised form: " << worst << "\n";
}

// Issue 6, acceptance 2 (theory.md §3.3: "pruning of redundant experts and fine-tuning converge
// to zero loss"): the shipped model's pruning protocol, taken from its check pruned_zero_loss
// (learn to t = 60, prune with every rule, fine-tune to t = 400; ≈ 15 s). Expected: m* = 5
// units survive, the four experts under one router are merged, every teacher pair is one unit
// (cosines ≥ 0.99), and the risk ends below 1e-8 (measured: ~1e-11, the risk's round-off).
TEST(SoftRoutedMoe, PruningAndFineTuningLeaveMStarExpertsAtZeroLoss) {
  io::ModelFile model = ShippedModel({});
  const FlowSetup file = BuildFlow(model);
  std::vector<std::string> protocol;
  for (const CheckSpec& c : file.checks) {
    if (c.name == "pruned_zero_loss") protocol = c.overrides;
  }
  ASSERT_FALSE(protocol.empty()) << "the shipped model lost its check pruned_zero_loss";
  for (const std::string& o : protocol) model.Set(o);
  const FlowSetup setup = BuildFlow(model);
  Trajectory trajectory;
  std::vector<StageRecord> stages;
  const RunSummary summary = RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events, setup.stages,
                                         &trajectory, &stages);
  ASSERT_TRUE(summary.Ok()) << summary.message;
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_NE(stages[1].pruned.find("merged into"), std::string::npos) << stages[1].pruned;
  const auto offsets = ObservableOffsets(trajectory.observables);
  std::map<std::string, int> at;
  for (std::size_t i = 0; i < trajectory.observables.size(); ++i) at[trajectory.observables[i].name] = offsets[i];
  const Eigen::VectorXd& last = trajectory.values.back();
  EXPECT_EQ(last[at["units"]], kMStar);
  EXPECT_GE(last.segment(at["recovered"], kMStar).minCoeff(), 0.99);
  EXPECT_LT(last[at["risk"]], 1e-8);
  EXPECT_GT(last[at["risk"]], -1e-9);  // round-off only
  std::cout << "pruned: " << stages[1].pruned << "\nrisk at t = " << trajectory.time.back() << ": "
            << last[at["risk"]] << "\n";
}

// The log-log slope in d of the time the shipped model's `event` first happens (same seed, so
// the same normal draws scaled by d^(-1/2)); the run stops at the event.
double EventTimeSlope(const std::string& event, const std::vector<double>& dimensions, const char* rel_tol) {
  std::vector<double> x, y;
  for (double d : dimensions) {
    const FlowSetup setup = BuildFlow(ShippedModel({"d=" + std::to_string(d), "integrate.t_end=3000",
                                                    "event." + event + ".stop=true", rel_tol}));
    Trajectory trajectory;
    const RunSummary summary = Integrate(*setup.system, setup.initial_state, setup.options, setup.events, &trajectory);
    EXPECT_EQ(summary.termination, Termination::kStoppedOnEvent) << summary.message;
    x.push_back(std::log(d));
    y.push_back(std::log(summary.t_final));
  }
  const std::size_t n = x.size();
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < n; ++i) mx += x[i] / n, my += y[i] / n;
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < n; ++i) sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx);
  return sxy / sxx;
}

// theory.md §3.3: the expert escapes at t ≈ |w|²/(4.5 γ2(0)) with γ2(0) ∝ d^(-1/2). The first
// time some expert cosine reaches 0.9, over d = 1e2..1e5: log-log slope 0.5 ± 0.05.
TEST(SoftRoutedMoe, FirstExpertEscapeTimeGrowsLikeSqrtD) {
  const double slope = EventTimeSlope("first_expert", {1e2, 1e3, 1e4, 1e5}, "integrate.rel_tol=1e-6");
  std::cout << "first expert escape: log-log slope in d " << slope << "\n";
  EXPECT_NEAR(slope, 0.5, 0.05);
}

// The first pair recovery is the expert escape (∝ √d) plus a router phase of O(1) time (dγ1/dt
// ∝ P'(γ1) γ2³ with γ2 = O(1): γ1 grows linearly from O(d^(-1/2))): T ≈ a√d + b, so the slope
// tends to 0.5 only at large d. Over d = 1e6..1e8 (≈ 45 s; the default tolerances: at
// rel_tol 1e-6 the d = 1e8 run breaks the Gram matrix's PSD bound): 0.5 ± 0.05 (measured 0.489);
// over 1e2..1e5 it is far below (measured 0.21), which is what the O(1) router phase predicts.
TEST(SoftRoutedMoe, FirstRecoveryTimeGrowsLikeSqrtDAtLargeD) {
  const double large = EventTimeSlope("first_recovery", {1e6, 1e7, 1e8}, "integrate.rel_tol=1e-8");
  const double small = EventTimeSlope("first_recovery", {1e2, 1e3, 1e4, 1e5}, "integrate.rel_tol=1e-8");
  std::cout << "first recovery: log-log slope in d " << large << " over 1e6..1e8, " << small << " over 1e2..1e5\n";
  EXPECT_NEAR(large, 0.5, 0.05);
  EXPECT_LT(small, 0.35);
}

TEST(SoftRoutedMoe, GatedKeysAreCheckedWithClearErrors) {
  auto error_of = [](const std::vector<std::string>& overrides) -> std::string {
    try {
      BuildFlow(ShippedModel(overrides));
    } catch (const InputError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_NE(error_of({"student.gate=relu"}).find("'relu' has no closed-form higher derivatives"), std::string::npos);
  EXPECT_NE(error_of({"student.link=tanh"}).find("must be a polynomial"), std::string::npos);
  EXPECT_NE(error_of({"student.vectors=free"}).find("gated units with free vectors need the sampled backend"), std::string::npos);
  EXPECT_NE(error_of({"student.router_norm=-1"}).find("student.router_norm"), std::string::npos);
  EXPECT_NE(error_of({"student.gate=sigmodi"}).find("unknown link name 'sigmodi'"), std::string::npos);
  EXPECT_NE(error_of({"event.first_recovery.observable=Q[*]"}).find("vector observable"), std::string::npos);
}

}  // namespace
}  // namespace moeflow
