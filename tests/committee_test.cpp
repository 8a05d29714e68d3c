// Saad & Solla's soft committee machine (erf, K = M = 2) in the online-SGD limit: the general
// Gram-matrix engine against an independent implementation (the closed forms of theory.md §2
// written out here, integrated by a fixed-step RK4 at a small step).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "moeflow/integrate/integrator.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

// Independent reference: overlaps C of the 4 vectors (students 0,1; teachers 2,3), signs s.
double I2(const Eigen::Matrix4d& C, int a, int b) {
  return 2 / M_PI * std::asin(C(a, b) / std::sqrt((1 + C(a, a)) * (1 + C(b, b))));
}
double I3(const Eigen::Matrix4d& C, int a, int b, int c) {  // E[g'(a) b g(c)]
  const double l3 = (1 + C(a, a)) * (1 + C(c, c)) - C(a, c) * C(a, c);
  return 2 / M_PI * (C(b, c) * (1 + C(a, a)) - C(a, b) * C(a, c)) / ((1 + C(a, a)) * std::sqrt(l3));
}
double I4(const Eigen::Matrix4d& C, int a, int b, int c, int d) {  // E[g'(a) g'(b) g(c) g(d)]
  const double l4 = (1 + C(a, a)) * (1 + C(b, b)) - C(a, b) * C(a, b);
  const double l0 = l4 * C(c, d) - C(b, c) * C(b, d) * (1 + C(a, a)) - C(a, c) * C(a, d) * (1 + C(b, b)) +
                    C(a, b) * C(a, c) * C(b, d) + C(a, b) * C(a, d) * C(b, c);
  const double l1 = l4 * (1 + C(c, c)) - C(b, c) * C(b, c) * (1 + C(a, a)) - C(a, c) * C(a, c) * (1 + C(b, b)) +
                    2 * C(a, b) * C(a, c) * C(b, c);
  const double l2 = l4 * (1 + C(d, d)) - C(b, d) * C(b, d) * (1 + C(a, a)) - C(a, d) * C(a, d) * (1 + C(b, b)) +
                    2 * C(a, b) * C(a, d) * C(b, d);
  return 4 / (M_PI * M_PI) / std::sqrt(l4) * std::asin(l0 / std::sqrt(l1 * l2));
}
// The reference ODE with student second-layer weights v (teacher weights 1), Goldt et al.'s form of
// Saad & Solla's equations (fixed v = 1 and Λ_v = 0: Saad & Solla's): with s = (v_0, v_1, −1, −1), D_ab = v_a Σ_c s_c I3(a, b, c), the online-SGD term
// v_a v_b Σ_{c,e} s_c s_e I4(a, b, c, e), and dv_a/dt = −Λ_v ∂R/∂v_a = −Λ_v Σ_c s_c I2(a, c).
struct WeightedState {
  Eigen::Matrix4d C;
  Eigen::Vector2d v;
  WeightedState operator+(const WeightedState& o) const { return {C + o.C, v + o.v}; }
  WeightedState operator*(double f) const { return {C * f, v * f}; }
};

WeightedState ReferenceWeightedDrift(const WeightedState& x, double lr, double weights_lr) {
  const Eigen::Matrix4d& C = x.C;
  const double s[4] = {x.v[0], x.v[1], -1, -1};
  Eigen::Matrix4d D = Eigen::Matrix4d::Zero();
  WeightedState out{Eigen::Matrix4d::Zero(), Eigen::Vector2d::Zero()};
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 4; ++b) {
      for (int c = 0; c < 4; ++c) D(a, b) += s[a] * s[c] * I3(C, a, b, c);
    }
    for (int c = 0; c < 4; ++c) out.v[a] -= weights_lr * s[c] * I2(C, a, c);
  }
  for (int a = 0; a < 2; ++a) {
    for (int n = 2; n < 4; ++n) out.C(a, n) = out.C(n, a) = -D(a, n);
    for (int b = 0; b < 2; ++b) {
      double noise = 0;
      for (int c = 0; c < 4; ++c) {
        for (int e = 0; e < 4; ++e) noise += s[a] * s[b] * s[c] * s[e] * I4(C, a, b, c, e);
      }
      out.C(a, b) = -D(a, b) - D(b, a) + lr * noise;
    }
  }
  return out;
}

double ReferenceWeightedRisk(const WeightedState& x) {
  const double s[4] = {x.v[0], x.v[1], -1, -1};
  double r = 0;
  for (int a = 0; a < 4; ++a) {
    for (int b = 0; b < 4; ++b) r += 0.5 * s[a] * s[b] * I2(x.C, a, b);
  }
  return r;
}

struct EngineRun {
  FlowSetup setup;
  Trajectory trajectory;
  RunSummary summary;
};

EngineRun RunEngine(const std::vector<std::string>& overrides) {
  io::ModelFile model = io::ModelFile::Load(testing::ModelPath("committee_erf_k2m2.ini"));
  for (const std::string& s : overrides) model.Set(s);
  EngineRun run{BuildFlow(model), {}, {}};
  run.summary = Integrate(*run.setup.system, run.setup.initial_state, run.setup.options, run.setup.events, &run.trajectory);
  return run;
}

int OffsetOf(const std::vector<ObservableInfo>& observables, const std::string& name) {
  const std::vector<int> offsets = ObservableOffsets(observables);
  for (std::size_t i = 0; i < observables.size(); ++i) {
    if (observables[i].name == name) return offsets[i];
  }
  ADD_FAILURE() << "no observable " << name;
  return 0;
}

// |engine − reference| ≤ 1e-6 (|reference| + 1e-3): relative, with a floor for values near 0.
constexpr double kRelTol = 1e-6;
constexpr double kFloor = 1e-3;

// Integrates the reference from x by RK4 at dt between the engine's rows (every row one step
// count apart on the linear grid) and checks the risk, M, Q and, if the engine trains them, the
// weights a against it within kRelTol; returns the largest relative difference and leaves x at
// the last row.
double CompareWithRk4(const EngineRun& run, WeightedState* x, double lr, double weights_lr, double dt) {
  const int m_offset = OffsetOf(run.trajectory.observables, "M"), q_offset = OffsetOf(run.trajectory.observables, "Q");
  const bool trained = std::any_of(run.trajectory.observables.begin(), run.trajectory.observables.end(),
                                   [](const ObservableInfo& o) { return o.name == "a"; });
  const int a_offset = trained ? OffsetOf(run.trajectory.observables, "a") : -1;
  const std::vector<double>& time = run.trajectory.time;
  const int steps_per_row = static_cast<int>(std::lround((time[1] - time[0]) / dt));
  double worst = 0;
  for (std::size_t row = 0; row < time.size(); ++row) {
    if (row > 0) {
      for (int s = 0; s < steps_per_row; ++s) {  // classic RK4
        const WeightedState k1 = ReferenceWeightedDrift(*x, lr, weights_lr);
        const WeightedState k2 = ReferenceWeightedDrift(*x + k1 * (0.5 * dt), lr, weights_lr);
        const WeightedState k3 = ReferenceWeightedDrift(*x + k2 * (0.5 * dt), lr, weights_lr);
        const WeightedState k4 = ReferenceWeightedDrift(*x + k3 * dt, lr, weights_lr);
        *x = *x + (k1 + k2 * 2 + k3 * 2 + k4) * (dt / 6);
      }
    }
    const Eigen::VectorXd& v = run.trajectory.values[row];
    auto check = [&](double engine, double reference, const char* what) {
      const double err = std::abs(engine - reference) / (std::abs(reference) + kFloor);
      worst = std::max(worst, err);
      EXPECT_LT(err, kRelTol) << what << " at t = " << time[row] << ": " << engine << " vs " << reference;
    };
    check(v[0], ReferenceWeightedRisk(*x), "risk");
    for (int i = 0; i < 2; ++i) {
      if (a_offset >= 0) check(v[a_offset + i], x->v[i], "a");
      for (int n = 0; n < 2; ++n) check(v[m_offset + 2 * i + n], x->C(i, 2 + n), "M");
      for (int j = 0; j < 2; ++j) check(v[q_offset + 2 * i + j], x->C(i, j), "Q");
    }
  }
  return worst;
}

TEST(SaadSollaCommittee, EngineMatchesAnIndependentRk4OfTheClosedForms) {
  EngineRun run = RunEngine({"dynamics.lr=0.5", "integrate.t_end=150", "output.grid=linear", "output.points=75",
                             "integrate.rel_tol=1e-12", "integrate.abs_tol=1e-14"});
  ASSERT_EQ(run.summary.termination, Termination::kReachedEnd) << run.summary.message;
  WeightedState x{run.setup.initial_gram, Eigen::Vector2d(1, 1)};  // fixed weights 1: Λ_v = 0
  const double worst = CompareWithRk4(run, &x, 0.5, 0.0, 2e-3);
  std::cout << "largest relative difference engine vs RK4 reference: " << worst << "\n";
}

TEST(SaadSollaCommittee, TrainedSecondLayerMatchesAnIndependentRk4) {
  EngineRun run = RunEngine({"dynamics.lr=0.5", "integrate.t_end=100", "output.grid=linear", "output.points=50",
                             "integrate.rel_tol=1e-12", "integrate.abs_tol=1e-14", "student.weight=0.4",
                             "student.weights_lr=0.7"});
  ASSERT_EQ(run.summary.termination, Termination::kReachedEnd) << run.summary.message;
  WeightedState x{run.setup.initial_gram, Eigen::Vector2d(0.4, 0.4)};
  const double worst = CompareWithRk4(run, &x, 0.5, 0.7, 2e-3);
  std::cout << "trained second layer: largest relative difference engine vs RK4 reference: " << worst
            << "; weights at t = 100: " << x.v.transpose() << ", risk " << ReferenceWeightedRisk(x) << "\n";
  EXPECT_GT(std::abs(x.v[0] - 0.4), 0.1);  // the weights did move
}

TEST(SaadSollaCommittee, PlateauThenSpecialisation) {
  EngineRun run = RunEngine({"dynamics.lr=0.5"});
  const int m_offset = OffsetOf(run.trajectory.observables, "M");
  const auto& t = run.trajectory.time;
  const auto& values = run.trajectory.values;
  ASSERT_TRUE(run.summary.events[0].occurred && run.summary.events[1].occurred);
  // On the plateau (t = 20): risk ≈ 0.015 and every student equally aligned with both teachers.
  std::size_t mid = 0;
  while (t[mid] < 20) ++mid;
  EXPECT_NEAR(values[mid][0], 0.0152, 0.001);
  const Eigen::VectorXd M = values[mid].segment(m_offset, 4);
  EXPECT_LT(M.maxCoeff() - M.minCoeff(), 0.05) << M.transpose();
  // Specialised at the end: each student aligned with one teacher only.
  const Eigen::VectorXd end = values.back().segment(m_offset, 4);
  EXPECT_GT(std::max(end[0], end[1]), 0.99);
  EXPECT_LT(std::min(std::abs(end[0]), std::abs(end[1])), 0.01);
  EXPECT_LT(values.back()[0], 1e-8);
  EXPECT_GT(run.summary.events[1].time, 3 * run.summary.events[0].time);  // a long plateau
}

TEST(SaadSollaCommittee, AsymptoticRiskWithNoiseGrowsLinearlyInLrTimesNoise) {
  // R_∞ − σ²/2 ∝ η̃ σ² for small η̃ σ²: doubling η̃ doubles the excess risk.
  const double sigma2 = 0.01;
  std::vector<double> excess;
  for (double lr : {0.05, 0.1, 0.2}) {
    EngineRun run = RunEngine({"dynamics.lr=" + std::to_string(lr), "teacher.noise=" + std::to_string(sigma2),
                               "integrate.t_end=3000"});
    excess.push_back(run.trajectory.values.back()[0] - 0.5 * sigma2);
    std::cout << "lr " << lr << ": asymptotic excess risk " << excess.back() << "\n";
  }
  EXPECT_GT(excess[0], 0);
  EXPECT_NEAR(excess[1] / excess[0], 2.0, 0.1);
  EXPECT_NEAR(excess[2] / excess[0], 4.0, 0.3);
}

}  // namespace
}  // namespace moeflow
