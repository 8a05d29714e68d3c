// The SGD simulator: the initial vectors realise the ODE's initial overlaps exactly; the two
// engines (d-dimensional vectors, and the Gram matrix alone) simulate the same law; a seed's
// run is bit-identical whatever the thread count; bad options are rejected by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "moeflow/error.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/protocol.hpp"
#include "moeflow/sgd/compare.hpp"
#include "moeflow/sgd/simulator.hpp"
#include "moeflow/sgd/statistics.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

std::vector<std::uint64_t> Seeds(int count) {
  std::vector<std::uint64_t> s;
  for (int i = 0; i < count; ++i) s.push_back(100 + static_cast<std::uint64_t>(i));
  return s;
}

double Value(const SgdRun& run, const std::string& name, int index, std::size_t row) {
  const std::vector<int> offsets = ObservableOffsets(run.trajectory.observables);
  for (std::size_t i = 0; i < run.trajectory.observables.size(); ++i) {
    if (run.trajectory.observables[i].name == name) return run.trajectory.values.at(row)[offsets[i] + index];
  }
  ADD_FAILURE() << "no observable " << name;
  return 0;
}

TEST(VectorsFromGram, RealiseTheGramMatrixWithTeachersOnTheAxes) {
  const FlowSetup setup = testing::BuildFromFile("committee_erf_k4m4.ini", {"d=40", "seed=7"});
  const Eigen::MatrixXd u = VectorsFromGram(setup.initial_gram, setup.system->students(), 40);
  EXPECT_LE((u * u.transpose() - setup.initial_gram).cwiseAbs().maxCoeff(), 1e-13);
  EXPECT_LE((u.bottomLeftCorner(4, 4) - Eigen::MatrixXd::Identity(4, 4)).cwiseAbs().maxCoeff(), 0.0);
  Eigen::MatrixXd bad = setup.initial_gram;
  bad(0, 1) = bad(1, 0) = 3.0;  // |overlap| > norms: not a Gram matrix
  EXPECT_THROW(VectorsFromGram(bad, setup.system->students(), 40), InputError);
}

// One observable at the last recorded row of every seed.
std::vector<double> Final(const std::vector<SgdRun>& runs, const std::string& name, int index) {
  std::vector<double> v;
  for (const SgdRun& r : runs) v.push_back(Value(r, name, index, r.trajectory.values.size() - 1));
  std::sort(v.begin(), v.end());
  return v;
}

// The two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b| of two sorted samples.
double KolmogorovSmirnov(const std::vector<double>& a, const std::vector<double>& b) {
  std::size_t i = 0, j = 0;
  double sup = 0.0;
  while (i < a.size() && j < b.size()) {
    const double x = std::min(a[i], b[j]);
    while (i < a.size() && a[i] <= x) ++i;
    while (j < b.size() && b[j] <= x) ++j;
    sup = std::max(sup, std::abs(static_cast<double>(i) / a.size() - static_cast<double>(j) / b.size()));
  }
  return sup;
}

// The overlap engine is exact in law: over 400 seeds, the final values of both engines pass a
// two-sample Kolmogorov–Smirnov test at significance 1e-4, for free (committee, with label
// noise and batch 4), spherical (He3) and normalised gated units. (Dropping the Wishart part of
// X Xᵀ in the overlap engine fails all three cases.)
struct LawCase {
  const char* name;
  const char* file;
  std::vector<std::string> overrides;
  std::vector<std::pair<std::string, int>> observables;
};

class EnginesAgree : public ::testing::TestWithParam<LawCase> {};

TEST_P(EnginesAgree, InLaw) {
  const LawCase& c = GetParam();
  std::vector<std::vector<SgdRun>> runs;
  for (const char* engine : {"vectors", "overlaps"}) {
    std::vector<std::string> o = c.overrides;
    o.push_back(std::string("sgd.engine=") + engine);
    const FlowSetup setup = testing::BuildFromFile(c.file, o);
    runs.push_back(SimulateSgdSeeds(
        *setup.system, [&](std::uint64_t s) { return MakeInitialGram(setup.init, s); }, setup.sgd, setup.options,
        {}, Seeds(400), 2));
  }
  // The critical value of the two-sample test at significance 1e-4: sqrt(−ln(1e-4/2)/2)·sqrt(2/n).
  const double n = static_cast<double>(runs[0].size());
  const double critical = std::sqrt(-0.5 * std::log(1e-4 / 2)) * std::sqrt(2.0 / n);
  for (const auto& [name, index] : c.observables) {
    const std::vector<double> v = Final(runs[0], name, index), o = Final(runs[1], name, index);
    const double ks = KolmogorovSmirnov(v, o);
    EXPECT_LE(ks, critical) << c.name << " " << name << "[" << index << "]: vectors median " << v[v.size() / 2]
                            << ", overlaps median " << o[o.size() / 2];
    EXPECT_GT(o.back() - o.front(), 1e-6) << "the observable must vary across seeds for the test to mean anything";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Sgd, EnginesAgree,
    ::testing::Values(
        LawCase{"committee_free_noise_batch4", "committee_erf_k2m2.ini",
                {"d=30", "teacher.noise=0.1", "sgd.batch=4", "integrate.t_end=3", "output.points=5"},
                {{"M", 0}, {"M", 1}, {"Q", 0}, {"Q", 1}, {"risk", 0}}},
        LawCase{"he3_spherical", "single_index_he3.ini",
                {"d=20", "sgd.lr=0.2", "sgd.lr_exponent=1", "integrate.t_end=5", "output.points=5",
                 "event.escape.stop=false"},
                {{"M", 0}, {"risk", 0}}},
        LawCase{"soft_routed_normalised", "soft_routed_moe.ini",
                {"d=30", "student.units=2", "teacher.units=2", "sgd.lr=0.002", "integrate.t_end=0.4", "output.points=5"},
                {{"M", 0}, {"M", 5}, {"Q", 1}, {"norm", 0}, {"norm", 2}}},
        // Cluster inputs x = z + ρ v_c (the overlaps engine shifts the span's coordinates by ρ v_c's row of
        // the factor): the local, global and mean overlaps of the first student.
        LawCase{"cluster_vanilla", "cluster_vanilla.ini",
                {"d=30", "dynamics.kind=online_sgd", "dynamics.lr=0.05", "integrate.t_end=3", "output.points=5"},
                {{"M", 0}, {"M", 2}, {"M", 3}, {"M", 4}, {"Q", 1}, {"risk", 0}}}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

// compare: seeds whose SGD runs start from the same overlaps share one ODE run on the union of
// their recorded times. Reference: each seed's ODE run alone on its own times (what compare did
// before). The single-index model from its uniform start (one start for all seeds), with a stage
// that ends at the escape, so that each SGD run records a row at its own escape and the seeds'
// times differ, must give every seed exactly the rows, events and stages of its own run; from a
// random start (one start per seed) too.
TEST(Compare, SeedsWithOneStartShareAnOdeRunThatGivesEachSeedTheRowsOfItsOwn) {
  for (const char* init : {"uniform", "random"}) {
    io::ModelFile model = io::ModelFile::Load(testing::ModelPath("single_index_he3.ini"));
    model.Set(std::string("student.init=") + init);
    for (const char* key : {"event.escape.stop=false", "integrate.t_end=6", "stage.first.until=escape",
                            "stage.second.lr=0.5"}) {
      model.Set(key);
    }
    if (std::string(init) == "random") {
      for (const char* key : {"student.m0=", "student.q0="}) model.Set(key);  // keys of the uniform start
    }
    CompareOptions options;
    options.dimensions = {128};
    options.seeds = 4;
    options.threads = 2;
    const DimensionComparison c = CompareOdeSgd(model, options).dimensions.front();
    model.Set("d=128");
    const FlowSetup setup = BuildFlow(model);
    ASSERT_EQ(c.sgd.size(), 4u);
    if (std::string(init) == "uniform") {
      EXPECT_NE(c.sgd[0].trajectory.time, c.sgd[1].trajectory.time);  // the union is not one seed's
    }
    for (std::size_t s = 0; s < c.sgd.size(); ++s) {
      IntegratorOptions o = setup.options;
      o.output_times = c.sgd[s].trajectory.time;
      o.t_end = std::max(o.t_end, o.output_times.back());
      Trajectory alone;
      std::vector<StageRecord> stages;
      const RunSummary summary = RunProtocol(*setup.system, setup.system->Pack(c.sgd[s].initial_gram), o,
                                             setup.events, setup.stages, &alone, &stages, IntegrationControl{});
      ASSERT_EQ(c.ode_trajectories[s].time, alone.time) << init << " seed " << s;
      for (std::size_t r = 0; r < alone.values.size(); ++r) {
        EXPECT_TRUE(c.ode_trajectories[s].values[r] == alone.values[r]) << init << " seed " << s << " row " << r;
      }
      ASSERT_EQ(c.ode[s].events.size(), summary.events.size());
      EXPECT_EQ(c.ode[s].events[0].occurred, summary.events[0].occurred) << init << " seed " << s;
      if (summary.events[0].occurred) {
        EXPECT_EQ(c.ode[s].events[0].time, summary.events[0].time) << init << " seed " << s;
      }
      EXPECT_EQ(c.ode[s].termination, summary.termination);
      ASSERT_EQ(c.ode_stages[s].size(), stages.size());
      EXPECT_EQ(c.ode_stages[s].back().t_start, stages.back().t_start);
    }
  }
}

// compare checks every d's model before it runs anything: a d the model rejects (d = 3 < the 4
// vectors of a random start of the erf committee) is reported naming that d, and no SGD run has
// reported progress (a run reports at its end), although d = 1000 comes first.
TEST(Compare, EveryDimensionIsCheckedBeforeAnyRun) {
  const io::ModelFile model = io::ModelFile::Load(testing::ModelPath("committee_erf_k2m2.ini"));
  CompareOptions options;
  options.dimensions = {1000, 3};
  options.seeds = 1;
  int progress_calls = 0;
  options.control.progress = [&](long long) { ++progress_calls; };
  try {
    CompareOdeSgd(model, options);
    ADD_FAILURE() << "accepted d = 3";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("at d = 3: key 'd': value '3' must be >= students + teachers = 4"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(progress_calls, 0);
}

// Acceptance (issue 5, item 4): a seed's run is bit-identical with 1 and with 2 threads, for
// both engines and for a fixed training set.
TEST(SgdSeeds, BitIdenticalWhateverTheThreadCount) {
  for (const char* engine : {"vectors", "overlaps"}) {
    for (const char* samples : {"0", "200"}) {
      if (std::string(engine) == "overlaps" && std::string(samples) != "0") continue;
      const FlowSetup setup =
          testing::BuildFromFile("committee_erf_k2m2.ini",
                                 {"d=50", std::string("sgd.engine=") + engine, std::string("sgd.samples=") + samples,
                                  "sgd.test_samples=64", "integrate.t_end=4", "output.points=20"});
      auto initial = [&](std::uint64_t s) { return MakeInitialGram(setup.init, s); };
      const auto one = SimulateSgdSeeds(*setup.system, initial, setup.sgd, setup.options, setup.events, Seeds(5), 1);
      const auto two = SimulateSgdSeeds(*setup.system, initial, setup.sgd, setup.options, setup.events, Seeds(5), 2);
      ASSERT_EQ(one.size(), two.size());
      for (std::size_t s = 0; s < one.size(); ++s) {
        ASSERT_EQ(one[s].trajectory.values.size(), two[s].trajectory.values.size());
        EXPECT_EQ(one[s].steps, two[s].steps);
        for (std::size_t r = 0; r < one[s].trajectory.values.size(); ++r) {
          EXPECT_TRUE(one[s].trajectory.values[r] == two[s].trajectory.values[r]) << engine << " seed " << s << " row " << r;
        }
      }
      // Different seeds differ (the comparison above is not vacuous).
      EXPECT_FALSE(one[0].trajectory.values.back() == one[1].trajectory.values.back());
    }
  }
}

TEST(SgdOptions, BadValuesAreRejectedByName) {
  struct Case {
    std::vector<std::string> overrides;
    const char* expected;  // a part of the message: the key, or the whole of it
  };
  for (const Case& c : std::vector<Case>{
           {{"sgd.lr=-1"}, "sgd.lr"},
           {{"sgd.batch=0"}, "sgd.batch"},
           {{"sgd.engine=exact"}, "sgd.engine"},
           {{"sgd.samples=100", "sgd.engine=overlaps"}, "sgd.engine"},
           {{"sgd.samples=2", "sgd.batch=4"}, "sgd.samples"},
           {{"sgd.event_resolution=0"}, "sgd.event_resolution"},
           {{"sgd.colour=red"}, "sgd.colour"},
           // Arrays of d values that cannot fit in memory are named before the run: a training
           // set of 1e9 x 1e6 values (7e6 GiB), and the vectors of the vector engine at d = 1e15.
           {{"sgd.samples=1e9", "d=1e6"},
            "key 'sgd.samples': value '1000000000' at d = 1000000 (the training set, n x d values) needs 7.45e+06 GiB"},
           {{"sgd.engine=vectors", "d=1e15"},
            "key 'd': value '1000000000000000' for 6 vectors of d values (the model's and a batch's) needs 4.47e+07 GiB"}}) {
    try {
      const FlowSetup setup = testing::BuildFromFile("committee_erf_k2m2.ini", c.overrides);
      ValidateSgd(setup);
      ADD_FAILURE() << "accepted " << c.overrides.front();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.expected), std::string::npos) << e.what();
    }
  }
  // A gradient-flow model without [sgd] lr has no learning rate for SGD.
  const FlowSetup moe = testing::BuildFromFile("soft_routed_moe.ini", {});
  try {
    ValidateSgd(moe);
    ADD_FAILURE() << "a gradient-flow model without sgd.lr was accepted for SGD";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sgd.lr"), std::string::npos) << e.what();
  }
}

TEST(Statistics, QuantilesCountMissingEventsAsInfinite) {
  const double nan = std::nan("");
  const TimeStatistics s = Summarise({4, 1, 3, 2, nan});
  EXPECT_EQ(s.runs, 5);
  EXPECT_EQ(s.occurred, 4);
  EXPECT_DOUBLE_EQ(s.median, 3.0);
  EXPECT_DOUBLE_EQ(s.q25, 2.0);
  EXPECT_TRUE(std::isnan(s.q75) || s.q75 == 4.0);
  EXPECT_TRUE(std::isnan(Summarise({nan, nan, 1}).median));
  const PowerLawFit fit = FitPowerLaw({1, 10, 100}, {3, 30 * std::sqrt(10.0) / 10 * 10, 300});
  EXPECT_NEAR(FitPowerLaw({1, 10, 100}, {2, 2 * std::sqrt(10.0), 20}).exponent, 0.5, 1e-12);
  EXPECT_EQ(fit.points, 3);
}

}  // namespace
}  // namespace moeflow
