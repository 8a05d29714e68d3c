// Staged protocols ([stage.NAME] sections) in the ODE and in SGD. References: the single-index
// closed form T(m0 → m1) = [−1/(3m) + atanh(m)/3] (theory.md §3.1) — a stage with multiplier Λ
// runs the same flow Λ times faster, a stage with Λ = 0 holds the state — and the exact
// invariance of frozen blocks.
#include <gtest/gtest.h>

#include <Eigen/Eigenvalues>
#include <cmath>
#include <random>

#include "moeflow/error.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/protocol.hpp"
#include "moeflow/sgd/simulator.hpp"
#include "gauss/rules.hpp"
#include "models/rank_one.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

double T(double m0, double m1) {
  auto primitive = [](double m) { return -1.0 / (3.0 * m) + std::atanh(m) / 3.0; };
  return primitive(m1) - primitive(m0);
}

FlowSetup He3(const std::vector<std::string>& overrides) {
  return testing::BuildFromFile("single_index_he3.ini", overrides);
}

struct ProtocolRun {
  RunSummary summary;
  Trajectory trajectory;
  std::vector<StageRecord> stages;
};

ProtocolRun Flow(const FlowSetup& setup) {
  ProtocolRun r;
  r.summary = RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events, setup.stages, &r.trajectory,
                          &r.stages);
  return r;
}

// Frozen for t ∈ [0, 5], then the flow at double speed until m = 0.3 (an event ends the stage),
// then unit speed to the escape m = 0.5: escape at 5 + T(m0, 0.3)/2 + T(0.3, 0.5), to 1e-8.
TEST(Protocol, StagesScaleTimeByTheirMultiplierAndStopOnDurationOrEvent) {
  const FlowSetup setup = He3({"d=1e4", "stage.hold.duration=5", "stage.hold.lr=0", "stage.fast.until=third",
                               "stage.fast.lr=2", "stage.rest.lr=1", "event.third.observable=m",
                               "event.third.threshold=0.3"});
  ASSERT_EQ(setup.stages.size(), 3u);
  const ProtocolRun r = Flow(setup);
  ASSERT_EQ(r.summary.termination, Termination::kStoppedOnEvent) << r.summary.message;
  const double m0 = 1e-2;
  const double expected_third = 5 + T(m0, 0.3) / 2, expected_escape = expected_third + T(0.3, 0.5);
  double escape = 0, third = 0;
  for (const EventRecord& e : r.summary.events) (e.spec.name == "escape" ? escape : third) = e.time;
  EXPECT_NEAR(third / expected_third, 1.0, 1e-8);
  EXPECT_NEAR(escape / expected_escape, 1.0, 1e-8);
  ASSERT_EQ(r.stages.size(), 3u);
  EXPECT_EQ(r.stages[0].ended_by, "duration");
  EXPECT_DOUBLE_EQ(r.stages[0].t_end, 5.0);
  EXPECT_EQ(r.stages[1].ended_by, "event third");
  EXPECT_NEAR(r.stages[1].t_end, expected_third, 1e-7 * expected_third);
  EXPECT_EQ(r.stages[2].ended_by, "stop event");
  // While frozen, m does not move at all; the time axis runs on across stages.
  const std::vector<int> offsets = ObservableOffsets(r.trajectory.observables);
  for (std::size_t row = 0; row < r.trajectory.time.size(); ++row) {
    if (r.trajectory.time[row] <= 5.0) {
      EXPECT_EQ(r.trajectory.values[row][offsets[1]], m0);
    }
    if (row > 0) {
      EXPECT_GT(r.trajectory.time[row], r.trajectory.time[row - 1]);
    }
  }
}

// The same protocol in SGD (d = 64, η = 0.2): the student does not move during the frozen stage
// (m stays at m0 = 1/8 to round-off), the stages end by duration, by event and by the model's
// stop event, and the stage records say so.
TEST(Protocol, SgdFollowsTheSameStages) {
  const FlowSetup setup = He3({"d=64", "stage.hold.duration=2", "stage.hold.lr=0", "stage.fast.until=third",
                               "stage.fast.lr=2", "stage.rest.lr=1", "event.third.observable=m",
                               "event.third.threshold=0.3", "sgd.lr=0.2"});
  const SgdRun run = SimulateSgd(*setup.system, setup.initial_gram, setup.sgd, setup.options, setup.events, 5);
  ASSERT_EQ(run.stages.size(), 3u);
  EXPECT_EQ(run.stages[0].ended_by, "duration");
  EXPECT_NEAR(run.stages[0].t_end, 2.0, setup.sgd.learning_rate);
  EXPECT_EQ(run.stages[1].ended_by, "event third");
  EXPECT_EQ(run.stages[2].ended_by, "stop event");
  EXPECT_EQ(run.summary.termination, Termination::kStoppedOnEvent) << run.summary.message;
  const std::vector<int> offsets = ObservableOffsets(run.trajectory.observables);
  for (std::size_t row = 0; row < run.trajectory.time.size(); ++row) {
    if (run.trajectory.time[row] < 2.0 - setup.sgd.learning_rate) {
      EXPECT_NEAR(run.trajectory.values[row][offsets[1]], 0.125, 1e-15) << row;
    }
  }
  for (const EventRecord& e : run.summary.events) EXPECT_TRUE(e.occurred) << e.spec.name;
}

// A second-layer stage: the committee's vectors train with the weights frozen (student.weights_lr
// = 0) for t ≤ 5, then only the weights train (stage lr = 0, weights_lr = 1). In the ODE and in
// SGD (d = 500) the weights do not move in the first stage and the overlaps not in the second.
TEST(Protocol, SecondLayerStageTrainsOnlyTheWeights) {
  io::ModelFile model = io::ModelFile::Load(testing::ModelPath("committee_erf_k2m2.ini"));
  for (const char* s : {"d=500", "student.weight=0.4", "student.weights_lr=0", "stage.vectors.duration=5",
                               "stage.second_layer.lr=0", "stage.second_layer.weights_lr=1", "integrate.t_end=10",
                               "output.grid=linear", "output.points=20"}) {
    model.Set(s);
  }
  const FlowSetup setup = BuildFlow(model);
  const ProtocolRun ode = Flow(setup);
  ASSERT_EQ(ode.summary.termination, Termination::kReachedEnd) << ode.summary.message;
  const SgdRun sgd = SimulateSgd(*setup.system, setup.initial_gram, setup.sgd, setup.options, setup.events, 3);
  ASSERT_EQ(sgd.summary.termination, Termination::kReachedEnd) << sgd.summary.message;
  for (const Trajectory* t : {&ode.trajectory, &sgd.trajectory}) {
    const std::vector<int> offsets = ObservableOffsets(t->observables);
    int a = -1, m = -1;
    for (std::size_t i = 0; i < t->observables.size(); ++i) {
      if (t->observables[i].name == "a") a = offsets[i];
      if (t->observables[i].name == "M") m = offsets[i];
    }
    ASSERT_GE(a, 0);
    const Eigen::VectorXd& last = t->values.back();
    const Eigen::VectorXd* at5 = nullptr;
    for (std::size_t row = 0; row < t->time.size(); ++row) {
      if (t->time[row] <= 5.0 - 1e-3) {
        EXPECT_EQ(t->values[row][a], 0.4) << "t = " << t->time[row];
      }
      if (t->time[row] >= 5.0 + 1e-3) {
        if (at5 == nullptr) at5 = &t->values[row];
        EXPECT_NEAR(t->values[row][m], (*at5)[m], 1e-14) << "t = " << t->time[row];
      }
    }
    EXPECT_GT(std::abs(last[a] - 0.4), 0.05) << "the weights moved in the second stage";
  }
  io::ModelFile untrained = io::ModelFile::Load(testing::ModelPath("committee_erf_k2m2.ini"));
  untrained.Set("stage.second_layer.weights_lr=1");
  try {
    BuildFlow(untrained);
    ADD_FAILURE() << "stage weights_lr without trained weights was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("stage.second_layer.weights_lr"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("student.weights_lr"), std::string::npos) << e.what();
  }
}

TEST(Protocol, BadStagesAreRejectedByName) {
  EXPECT_THROW(He3({"stage.a.until=nothing"}), InputError);
  EXPECT_THROW(He3({"stage.a.lr=1", "stage.b.duration=1"}), InputError);  // a has no stop rule
  EXPECT_THROW(He3({"stage.a.duration=-1"}), InputError);
  EXPECT_THROW(He3({"stage.a.duration=1", "stage.a.router_lr=0"}), InputError);  // no routers here
  try {
    He3({"stage.a.until=nothing"});
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("stage.a.until"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("escape"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moeflow

namespace moeflow {
namespace {

TEST(Protocol, FlowFileRecordsTheStages) {
  const std::string out = testing::TempDir() + "/staged.h5";
  std::string output;
  ASSERT_EQ(testing::RunCommand(testing::CliPath() + " flow " + testing::ModelPath("single_index_he3.ini") +
                                    " --set stage.hold.duration=5 --set stage.hold.lr=0 --set stage.go.lr=1 -o " + out,
                                &output),
            0)
      << output;
  EXPECT_NE(output.find("stage hold: t = 0 -> 5 (duration)"), std::string::npos) << output;
  const std::string script = "import h5py\n"
                             "f = h5py.File('" + out + "')\n"
                             "s = f['stages']\n"
                             "assert s['hold'][()] == 0 and s['hold'].attrs['t_end'] == 5, s['hold'].attrs['t_end']\n"
                             "assert s['go'][()] == 5 and s['go'].attrs['ended_by'] == 'stop event'\n"
                             "assert abs(f['events/escape'][()] - 5 - 32.84643527) < 1e-6\n"
                             "print('ok')\n";
  ASSERT_EQ(testing::RunPython(script, &output), 0) << output;
}

}  // namespace
}  // namespace moeflow

namespace moeflow {
namespace {

// Prune's weights, its report in *report (the rules here merge no vectors: no transform).
std::vector<double> PruneReporting(const TwoLayerFlow& flow, const Eigen::MatrixXd& gram, const std::string& rule,
                                   double tolerance, double rms, std::string* report) {
  const Pruning pruning = Prune(flow, gram, rule, tolerance, rms);
  EXPECT_EQ(pruning.transform.size(), 0) << rule;
  *report = pruning.report;
  return pruning.weights;
}

// Pruning on a hand-made state of the soft-routed model (3 students, 1 teacher, orthonormal
// directions a, b, c, e): student 0 is the teacher pair (expert a, router b); students 1 and 2
// share router e with experts c and −c, so for the odd He3 they cancel exactly. The risk is 0;
// `cancelling` removes 1 and 2 and the risk stays 0 (to 1e-12), one unit survives; with student
// 2 made a copy of student 0 instead, `duplicates` merges it into 0 (weight 2 on 0 and 1 on 1
// then reproduce the same function: the risk is unchanged).
TEST(Protocol, PruningRemovesCancellingPairsAndMergesDuplicates) {
  io::ModelFile model = io::ModelFile::Load(testing::ModelPath("soft_routed_moe.ini"));
  for (const char* s : {"student.units=3", "teacher.units=1", "d=100"}) model.Set(s);
  const FlowSetup setup = BuildFlow(model);
  const TwoLayerFlow& flow = *setup.system;
  // Vectors: student experts 0..2, student routers 3..5, teacher expert 6, teacher router 7.
  Eigen::MatrixXd u = Eigen::MatrixXd::Zero(8, 4);  // rows in the basis a, b, c, e
  u(0, 0) = 1, u(3, 1) = 1, u(6, 0) = 1, u(7, 1) = 1;  // student 0 = teacher
  u(1, 2) = 1, u(4, 3) = 1;                            // student 1: expert c, router e
  u(2, 2) = -1, u(5, 3) = 1;                           // student 2: expert −c, router e
  Eigen::MatrixXd gram = u * u.transpose();
  EXPECT_NEAR(flow.Risk(gram), 0.0, 1e-12);
  std::string report;
  const std::vector<double> w = PruneReporting(flow, gram, "cancelling", 0.05, 1e-3, &report);
  EXPECT_EQ(w, (std::vector<double>{1, 0, 0})) << report;
  EXPECT_EQ(report, "cancelling pair (1, 2)");
  const TwoLayerFlow pruned = flow.WithStudentWeights(w);
  EXPECT_NEAR(pruned.Risk(gram), 0.0, 1e-12);
  Eigen::VectorXd values;
  pruned.Observe(pruned.Pack(gram), &values);
  const std::vector<int> offsets = ObservableOffsets(pruned.Observables());
  for (std::size_t i = 0; i < pruned.Observables().size(); ++i) {
    if (pruned.Observables()[i].name == "units") {
      EXPECT_EQ(values[offsets[i]], 1.0);
    }
  }
  // Student 2 a copy of student 0: duplicates merges it; the function (and risk) is unchanged.
  u.row(2) = u.row(0);
  u.row(5) = u.row(3);
  gram = u * u.transpose();
  const double before = flow.Risk(gram);
  EXPECT_GT(before, 0.1);
  const std::vector<double> merged = PruneReporting(flow, gram, "duplicates", 0.05, 1e-3, &report);
  EXPECT_EQ(merged, (std::vector<double>{2, 1, 0})) << report;
  EXPECT_NEAR(flow.WithStudentWeights(merged).Risk(gram), before, 1e-12 * before);
  // SGD applies the same pruning when the stage starts: from the cancelling state, one unit is
  // left, the student computes the teacher exactly, so the residual and every step are 0.
  {
    u.row(2) = -u.row(1);
    u.row(5) = u.row(4);
    const Eigen::MatrixXd cancelling = u * u.transpose();
    io::ModelFile staged = model;
    for (const char* s : {"stage.tidy.prune=cancelling", "stage.tidy.duration=0.5", "sgd.lr=0.01"}) staged.Set(s);
    const FlowSetup sgd_setup = BuildFlow(staged);
    const SgdRun run = SimulateSgd(*sgd_setup.system, cancelling, sgd_setup.sgd, sgd_setup.options, {}, 3);
    ASSERT_FALSE(run.stages.empty());
    EXPECT_EQ(run.stages.front().pruned, "cancelling pair (1, 2)");
    const std::vector<int> o = ObservableOffsets(run.trajectory.observables);
    for (std::size_t i = 0; i < run.trajectory.observables.size(); ++i) {
      const std::string& name = run.trajectory.observables[i].name;
      if (name == "units") {
        EXPECT_EQ(run.trajectory.values.front()[o[i]], 1.0);
      }
      if (name == "risk") {
        EXPECT_NEAR(run.trajectory.values.back()[o[i]], 0.0, 1e-12);
      }
    }
  }
  // Nothing to prune: the report says so.
  EXPECT_EQ(PruneReporting(flow, Eigen::MatrixXd::Identity(8, 8), "redundant", 0.05, 1e-3, &report), (std::vector<double>{1, 1, 1}));
  EXPECT_EQ(report, "nothing");
}

// Three linear experts at 120° under one router output π(v·x)·Σ w_i·x = 0: no pair cancels, the
// negligible rule removes the group (output RMS 0 from the output moments E[φ_i φ_j]),
// the risk is unchanged; a unit of weight 1e-6 alone is removed as a negligible unit.
TEST(Protocol, NegligibleRuleRemovesAGroupWhoseOutputsCancel) {
  io::ModelFile model = io::ModelFile::Load(testing::ModelPath("soft_routed_moe.ini"));
  for (const char* s : {"student.units=4", "teacher.units=1", "d=100", "student.link=identity", "teacher.link=identity"}) {
    model.Set(s);
  }
  const FlowSetup setup = BuildFlow(model);
  const TwoLayerFlow& flow = *setup.system;
  // Vectors: student experts 0..3, student routers 4..7, teacher expert 8, teacher router 9.
  Eigen::MatrixXd u = Eigen::MatrixXd::Zero(10, 5);  // basis a, b, c1, c2, e
  u(0, 0) = 1, u(4, 1) = 1, u(8, 0) = 1, u(9, 1) = 1;  // student 0 = teacher
  for (int i = 0; i < 3; ++i) {
    u(1 + i, 2) = std::cos(2 * M_PI * i / 3), u(1 + i, 3) = std::sin(2 * M_PI * i / 3);
    u(5 + i, 4) = 1;  // one router for the three
  }
  const Eigen::MatrixXd gram = u * u.transpose();
  EXPECT_NEAR(flow.Risk(gram), 0.0, 1e-12);
  std::string report;
  EXPECT_EQ(PruneReporting(flow, gram, "cancelling", 0.05, 1e-3, &report), (std::vector<double>{1, 1, 1, 1}));
  const std::vector<double> w = PruneReporting(flow, gram, "negligible", 0.05, 1e-3, &report);
  EXPECT_EQ(w, (std::vector<double>{1, 0, 0, 0})) << report;
  EXPECT_EQ(report.rfind("negligible group (1, 2, 3): output rms ", 0), 0u) << report;
  EXPECT_NEAR(flow.WithStudentWeights(w).Risk(gram), 0.0, 1e-12);
  const TwoLayerFlow tiny = flow.WithStudentWeights({1, 1e-6, 1, 1});
  EXPECT_EQ(PruneReporting(tiny, gram, "negligible", 0.05, 1e-3, &report), (std::vector<double>{1, 0, 1, 1})) << report;
  EXPECT_EQ(report.rfind("negligible unit (1): output rms ", 0), 0u) << report;
}

// The merge rule on the configuration the soft-routed MoE converges to for its fifth teacher
// (models/soft_routed_moe.ini, seed 1): four He_3 experts at ±36° and ±108° from w* in a plane,
// under the teacher's router. Σ_j u_j^⊗3 = w*^⊗3 (Σ cos³θ_j = 1, Σ cos θ_j sin²θ_j = 0), so the
// four compute the teacher exactly (risk 0) and no pair cancels or duplicates. Reference: the
// exact identity; merge must leave one unit of weight 1 with expert w* and router v*, and the
// risk 0 (to 1e-12, the gated kernels' round-off). Four experts that no single unit reproduces
// (orthonormal experts) are kept, with the measured residual; SGD applies the same merge.
TEST(Protocol, MergeRuleReplacesExpertsWhoseHermiteTensorsSumToOneUnit) {
  io::ModelFile model = io::ModelFile::Load(testing::ModelPath("soft_routed_moe.ini"));
  for (const char* s : {"student.units=4", "teacher.units=1", "d=100"}) model.Set(s);
  const FlowSetup setup = BuildFlow(model);
  const TwoLayerFlow& flow = *setup.system;
  // Vectors: student experts 0..3, student routers 4..7, teacher expert 8, teacher router 9.
  Eigen::MatrixXd u = Eigen::MatrixXd::Zero(10, 6);  // basis a (w*), b (v*), c, e, f, g
  u(8, 0) = 1, u(9, 1) = 1;
  const double degrees[] = {36, -36, 108, -108};
  for (int j = 0; j < 4; ++j) {
    u(j, 0) = std::cos(degrees[j] * M_PI / 180), u(j, 2) = std::sin(degrees[j] * M_PI / 180);
    u(4 + j, 1) = 1;
  }
  const Eigen::MatrixXd gram = u * u.transpose();
  EXPECT_NEAR(flow.Risk(gram), 0.0, 1e-12);
  std::string report;
  EXPECT_EQ(PruneReporting(flow, gram, "redundant", 0.05, 1e-3, &report), (std::vector<double>(4, 1.0))) << report;
  EXPECT_EQ(PruneReporting(flow, gram, "negligible", 0.05, 1e-3, &report), (std::vector<double>(4, 1.0))) << report;
  for (const char* rule : {"merge", "all"}) {
    const Pruning merged = Prune(flow, gram, rule, 0.05, 1e-3);
    ASSERT_EQ(merged.weights.size(), 4u);
    EXPECT_NEAR(merged.weights[0], 1.0, 1e-12) << merged.report;
    EXPECT_EQ(std::vector<double>(merged.weights.begin() + 1, merged.weights.end()), std::vector<double>(3, 0.0));
    EXPECT_EQ(merged.report.rfind("group (0, 1, 2, 3) merged into 0: weight 1 (c = 1), output rms ", 0), 0u)
        << merged.report;
    ASSERT_EQ(merged.transform.rows(), 8);
    const Eigen::MatrixXd after = TransformStudents(gram, merged.transform);
    EXPECT_NEAR(after(0, 8), 1.0, 1e-12);  // expert 0 is w*
    EXPECT_NEAR(after(4, 9), 1.0, 1e-12);  // router 0 is v*
    EXPECT_NEAR(after(0, 0), 1.0, 1e-12);
    EXPECT_NEAR(after(4, 4), 1.0, 1e-12);
    // Only unit 0's vectors (expert 0, router 4) moved.
    Eigen::MatrixXd moved = after - gram;
    for (int a : {0, 4}) {
      moved.row(a).setZero();
      moved.col(a).setZero();
    }
    EXPECT_LT(moved.cwiseAbs().maxCoeff(), 1e-15);
    EXPECT_NEAR(flow.WithStudentWeights(merged.weights).Risk(after), 0.0, 1e-12);
  }
  // Orthonormal experts a, c, e, f under one router: Σ_j u_j^⊗3 has rank 4, no unit reproduces it.
  Eigen::MatrixXd v = u;
  v.topRows(4).setZero();
  v(0, 0) = v(1, 2) = v(2, 3) = v(3, 4) = 1;
  const Pruning kept = Prune(flow, v * v.transpose(), "merge", 0.05, 1e-3);
  EXPECT_EQ(kept.weights, std::vector<double>(4, 1.0));
  EXPECT_EQ(kept.transform.size(), 0);
  EXPECT_EQ(kept.report.rfind("group (0, 1, 2, 3) kept: one unit reproduces it with output rms ", 0), 0u)
      << kept.report;
  // Off the exact configuration (angles jittered by up to 3°, routers tilted by up to 0.1 rad
  // apart): the merge is accepted at rms_tolerance 1 and reports the output RMS of the change,
  // computed by the gated kernels on the model with one more unit. Reference: the routers
  // (span b, e, f) are orthogonal to the experts (span a, c), so with Δ = Σ_j s_j π(r_j) σ(h_j)
  // (the four units, s = 1, and the merged one, s = −1) E[Δ²] = Σ_jk s_j s_k E[π(r_j) π(r_k)] ·
  // 6 (w_j·w_k)³, the router factors by a 401² trapezoidal rule (error ≪ 1e-12 for the sigmoid);
  // the report prints 6 digits, hence the relative 1e-5.
  {
    Eigen::MatrixXd p = u;
    const double jitter[] = {3, 1, -2, 0.5}, tilt[][2] = {{0.1, 0}, {0, 0.05}, {-0.05, 0.02}, {0, 0}};
    for (int j = 0; j < 4; ++j) {
      const double angle = (degrees[j] + jitter[j]) * M_PI / 180;
      p.row(j).setZero();
      p(j, 0) = std::cos(angle), p(j, 2) = std::sin(angle);
      p(4 + j, 3) = tilt[j][0], p(4 + j, 4) = tilt[j][1];
      p.row(4 + j).normalize();
    }
    const Eigen::MatrixXd pg = p * p.transpose();
    const Pruning merged = Prune(flow, pg, "merge", 0.05, 1.0);
    ASSERT_EQ(merged.transform.rows(), 8) << merged.report;
    EXPECT_EQ(merged.weights, (std::vector<double>{1, 0, 0, 0}));
    const std::string marker = "output rms ";
    const double reported = std::stod(merged.report.substr(merged.report.find(marker) + marker.size()));
    const Eigen::MatrixXd moved = merged.transform * p.topRows(8);  // the students' vectors after the merge
    Eigen::MatrixXd experts(5, 6), routers(5, 6);
    experts << p.topRows(4), moved.row(0);
    routers << p.middleRows(4, 4), moved.row(4);
    const detail::QuadratureRule& rule = detail::GaussianTrapezoid(401);
    auto sigmoid = [](double z) { return 1 / (1 + std::exp(-z)); };
    auto gates = [&](double rho) {  // E[π(z1) π(ρ z1 + √(1−ρ²) z2)]
      double e = 0;
      const double c = std::sqrt(std::max(0.0, 1 - rho * rho));
      for (std::size_t i = 0; i < rule.x.size(); ++i) {
        double inner = 0;
        for (std::size_t k = 0; k < rule.x.size(); ++k) inner += rule.w[k] * sigmoid(rho * rule.x[i] + c * rule.x[k]);
        e += rule.w[i] * sigmoid(rule.x[i]) * inner;
      }
      return e;
    };
    const double sign[] = {1, 1, 1, 1, -1};
    double second = 0;
    for (int j = 0; j < 5; ++j) {
      for (int k = 0; k < 5; ++k) {
        second += sign[j] * sign[k] * gates(routers.row(j).dot(routers.row(k))) * 6 *
                  std::pow(experts.row(j).dot(experts.row(k)), 3);
      }
    }
    EXPECT_GT(reported, 0.01) << merged.report;  // a real change, not round-off
    EXPECT_NEAR(reported, std::sqrt(second), 1e-5 * reported) << merged.report;
    EXPECT_EQ(Prune(flow, pg, "merge", 0.05, 0.5 * reported).transform.size(), 0);  // above the tolerance: kept
  }
  // SGD from the exact configuration (both engines): the stage's merge leaves one unit that
  // computes the teacher, so the residual and every step are 0 and the risk stays 0.
  for (const char* engine : {"overlaps", "vectors"}) {
    io::ModelFile staged = model;
    for (const char* s : {"stage.tidy.prune=merge", "stage.tidy.duration=0.5", "sgd.lr=0.01"}) staged.Set(s);
    staged.Set(std::string("sgd.engine=") + engine);
    const FlowSetup sgd_setup = BuildFlow(staged);
    const SgdRun run = SimulateSgd(*sgd_setup.system, gram, sgd_setup.sgd, sgd_setup.options, {}, 3);
    ASSERT_FALSE(run.stages.empty());
    EXPECT_EQ(run.stages.front().pruned.rfind("group (0, 1, 2, 3) merged into 0", 0), 0u) << run.stages.front().pruned;
    const std::vector<int> o = ObservableOffsets(run.trajectory.observables);
    for (std::size_t i = 0; i < run.trajectory.observables.size(); ++i) {
      const std::string& name = run.trajectory.observables[i].name;
      const double last = run.trajectory.values.back()[o[i]];
      if (name == "units") {
        EXPECT_EQ(last, 1.0) << engine;
      } else if (name == "risk") {
        EXPECT_NEAR(last, 0.0, 1e-12) << engine;
      } else if (name == "recovered") {
        EXPECT_NEAR(last, 1.0, 1e-12) << engine;
      }
    }
  }
}

// RankOnePart against independent references: for k = 2 the eigenvector of Σ_j a_j y_j y_jᵀ
// with the largest |eigenvalue| (Eigen's solver; 1e-10); for k = 3 in a plane, four unit
// vectors near the exact configuration above (angles jittered by up to 3°), a grid of 200000
// angles (its maximum is within 1e-8 of the true one; the iteration must match it and beat the
// start Σ_j y_j, which is not the answer off the exact configuration); for k = 4, 5 in three
// dimensions with random weights, 100000 random unit vectors (the iteration must do at least as
// well as every one of them).
TEST(Protocol, RankOnePartMatchesEigenvectorsAndSearches) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal;
  {
    Eigen::MatrixXd y(3, 5);
    Eigen::VectorXd a(5);
    for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = normal(rng);
    for (Eigen::Index j = 0; j < 5; ++j) a[j] = normal(rng);
    const Eigen::MatrixXd m = y * a.asDiagonal() * y.transpose();
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(m);
    Eigen::Index top = 0;
    eigen.eigenvalues().cwiseAbs().maxCoeff(&top);
    const auto [c, u] = RankOnePart(y, a, 2);
    EXPECT_NEAR(c, eigen.eigenvalues()[top], 1e-10 * std::abs(c));
    EXPECT_NEAR(std::abs(u.dot(eigen.eigenvectors().col(top))), 1.0, 1e-10);
  }
  {
    const double degrees[] = {36 + 3, -36 + 1, 108 - 2, -108 + 0.5};
    Eigen::MatrixXd y(2, 4);
    for (int j = 0; j < 4; ++j) y.col(j) << std::cos(degrees[j] * M_PI / 180), std::sin(degrees[j] * M_PI / 180);
    const Eigen::VectorXd a = Eigen::VectorXd::Ones(4);
    auto value = [&](const Eigen::Vector2d& u) { return (y.transpose() * u).array().pow(3).sum(); };
    double grid = 0.0;
    for (int i = 0; i < 200000; ++i) {
      const double angle = 2 * M_PI * i / 200000;
      grid = std::max(grid, value(Eigen::Vector2d(std::cos(angle), std::sin(angle))));
    }
    const auto [c, u] = RankOnePart(y, a, 3);
    EXPECT_NEAR(u.norm(), 1.0, 1e-14);
    EXPECT_NEAR(c, value(u), 1e-14);
    EXPECT_GE(c, grid - 1e-14);
    EXPECT_LT(c, grid + 1e-8);
    const Eigen::Vector2d start = (y * a).normalized();
    EXPECT_GT(c - value(start), 1e-6) << "the start is the answer: the iteration is not exercised";
  }
  for (int k : {4, 5}) {
    Eigen::MatrixXd y(3, 4);
    Eigen::VectorXd a(4);
    for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = normal(rng);
    for (Eigen::Index j = 0; j < 4; ++j) a[j] = normal(rng);
    auto value = [&](const Eigen::Vector3d& u) { return (a.array() * (y.transpose() * u).array().pow(k)).sum(); };
    double search = 0.0;
    for (int i = 0; i < 100000; ++i) {
      const Eigen::Vector3d u = Eigen::Vector3d(normal(rng), normal(rng), normal(rng)).normalized();
      search = std::max(search, std::abs(value(u)));
    }
    const auto [c, u] = RankOnePart(y, a, k);
    EXPECT_NEAR(std::abs(c), std::abs(value(u)), 1e-12 * std::abs(c)) << k;
    EXPECT_GE(std::abs(c), search * (1 - 1e-12)) << k;
    EXPECT_LT(std::abs(c), search * (1 + 1e-3)) << k;
    if (k % 2 == 1) {
      EXPECT_GE(c, 0.0);
    }
  }
}

}  // namespace
}  // namespace moeflow
