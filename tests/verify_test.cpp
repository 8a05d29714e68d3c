// `moeflow verify`: a model's [check.NAME] claims measured on its ODE. The shipped committee
// and single-index checks pass (exit 0); a model changed so that a claim breaks — a check made
// impossible, or a teacher link with information exponent 1 — prints FAIL with the measured
// numbers and exits 4; the report is an HDF5 file that h5py reads; bad checks are rejected by key.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>

#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/verify/checks.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::CliPath;
using testing::ModelPath;
using testing::RunCommand;
using testing::TempDir;

// A check that m ≥ 0 at the end of the run (under the flow m keeps its sign).
constexpr const char* kMStaysPositive = "[check.positive]\nkind = final\nobservable = m\nop = >=\nthreshold = 0\n";

// A single-index h3 model (d = 100) for the check tests: the student line(s) and t_end given,
// checks appended by the caller.
std::string SingleIndexH3(const std::string& student, const std::string& t_end) {
  return "d = 100\nseed = 1\n[teacher]\nlink = h(3)\n[student]\nlink = h(3)\n" + student + "\n[integrate]\nt_end = " +
         t_end + "\n";
}

TEST(VerifyCli, ShippedChecksPassAndTheReportIsReadable) {
  const std::string out = TempDir() + "/verify.h5";
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " verify " + ModelPath("committee_erf_k2m2.ini") + " -o " + out, &output), 0)
      << output;
  EXPECT_NE(output.find("PASS  plateau_then_specialisation"), std::string::npos) << output;
  EXPECT_NE(output.find("2 passed, 0 failed"), std::string::npos) << output;
  ASSERT_EQ(RunCommand(CliPath() + " verify " + ModelPath("single_index_he3.ini") + " -o " + out, &output), 0) << output;
  EXPECT_NE(output.find("PASS  ode_escape_exponent"), std::string::npos) << output;
  EXPECT_NE(output.find("SKIP  sgd_escape_steps_exponent"), std::string::npos) << output;
  const std::string script = "import h5py\n"
                             "f = h5py.File('" + out + "')\n"
                             "assert f.attrs['kind'] == 'verify' and f.attrs['all_passed'] == 1\n"
                             "c = f['checks/ode_escape_exponent']\n"
                             "assert c[()] == 1 and c.attrs['status'] == 'PASS' and c.attrs['kind'] == 'scaling'\n"
                             "assert abs(c.attrs['values'][-1] - 0.5) < 0.05\n"
                             "assert f['checks/sgd_escape_steps_exponent'][()] == -1\n"
                             "assert 'escape' in f['events']\n"
                             "print('ok')\n";
  ASSERT_EQ(testing::RunPython(script, &output), 0) << output;
}

// Issue 7, acceptance 1 (the vanilla half): Kawata et al.'s vanilla network on two clusters keeps its
// global overlap below 4·d^(-1/2) until a local direction escapes (a bound check whose horizon is an
// event) and to the end of the run, while the local escape time grows like d^0.5. When the global task
// does not cancel (s = (1, 1), allowed by clusters.relax) the bound fails with the measured overlap.
TEST(VerifyCli, VanillaNetworkOnClustersKeepsTheGlobalOverlapSmall) {
  const std::string out = TempDir() + "/verify.h5";
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " verify " + ModelPath("cluster_vanilla.ini") + " -o " + out, &output), 0) << output;
  EXPECT_NE(output.find("PASS  global_stays_small"), std::string::npos) << output;
  EXPECT_NE(output.find("(local_first at t = 99.5"), std::string::npos) << output;
  EXPECT_NE(output.find("3 passed, 0 failed"), std::string::npos) << output;
  EXPECT_EQ(RunCommand(CliPath() + " verify " + ModelPath("cluster_vanilla.ini") +
                           " --set clusters.global_signs=1,1 --set clusters.relax=true -o " + out,
                       &output),
            4)
      << output;
  EXPECT_NE(output.find("FAIL  global_stays_small"), std::string::npos) << output;
  EXPECT_NE(output.find("FAIL  global_small_to_the_end"), std::string::npos) << output;
  EXPECT_NE(output.find("measured: max 0.98"), std::string::npos) << output;
  // Without its horizon event a bound check fails and says so.
  EXPECT_EQ(RunCommand(CliPath() + " verify " + ModelPath("cluster_vanilla.ini") +
                           " --set integrate.t_end=50 --set check.global_small_to_the_end.until=50 -o " + out,
                       &output),
            4)
      << output;
  EXPECT_NE(output.find("over the whole run (local_first did not happen)"), std::string::npos) << output;
}

// Issue 7, acceptance 1 (the MoE half): two experts of two neurons and a softmax router, trained with the
// router frozen until one local direction is found, then jointly, on the converged quadrature
// backend with the projection method (about 10 min alone). What the converged ODE says at d = 1000,
// t = 800 (model file): a local direction found (one_local, t = 156.4), the routing at 0.8 in both
// clusters (routed, 285.18), then the global direction recovered (cosine 0.9, 286.30): `order`
// PASSes, though its last two events come in one burst (the global direction's weak recovery, 0.5,
// is at 284.17, inside it); both local directions and the global one recovered (the second local
// one at t = 667) and both clusters routed (0.983): PASS. Exit status 0.
TEST(VerifyCli, ClusterMoeFindsALocalDirectionThenRoutesTheClustersThenRecoversTheGlobalOne) {
  const std::string out = TempDir() + "/verify.h5";
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " verify " + ModelPath("cluster_moe.ini") + " -o " + out, &output), 0) << output;
  EXPECT_NE(output.find("PASS  order"), std::string::npos) << output;
  EXPECT_NE(output.find("one_local at t = 156.399, routed at t = 285.183, global_recovered at t = 286.303"),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("PASS  global"), std::string::npos) << output;
  EXPECT_NE(output.find("PASS  routing"), std::string::npos) << output;
  EXPECT_NE(output.find("PASS  locals"), std::string::npos) << output;
  EXPECT_NE(output.find("measured: 0.983053 at t = 800"), std::string::npos) << output;  // routing
  EXPECT_NE(output.find("4 passed, 0 failed, 1 skipped"), std::string::npos) << output;
  EXPECT_NE(output.find("SKIP  sgd_weak_recovery"), std::string::npos) << output;  // needs --sgd
}

TEST(VerifyCli, ADryRunListsTheRunsOfEachCheckAndWritesNothing) {
  const std::string dir = TempDir();
  const std::string command = CliPath() + " verify " + ModelPath("single_index_he3.ini") + " -n -o " + dir + "/v.h5";
  std::string output;
  ASSERT_EQ(RunCommand(command, &output), 0) << output;
  EXPECT_NE(output.find("  ode_escape_exponent: 4 runs of its own (d=10000; d=100000; d=1e+06; d=1e+07)\n"),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("  sgd_escape_steps_exponent: skipped (needs --sgd); 5 runs of its own (d=128; d=256; "
                        "d=512; d=1024; ...), SGD over 16 seeds each\n"),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("2 checks: the model and every run's model are valid. Dry run: nothing run, nothing written."),
            std::string::npos)
      << output;
  EXPECT_EQ(RunCommand(command + " --set check.ode_escape_exponent.set=student.q0=2", &output), 2) << output;
  EXPECT_NE(output.find("check 'ode_escape_exponent' (run student.q0=2, d=10000): key 'student.q0'"),
            std::string::npos)
      << output;
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

TEST(VerifyCli, ABrokenClaimFailsWithTheMeasuredNumbers) {
  const std::string out = TempDir() + "/verify.h5";
  std::string output;
  // A tolerance no measurement meets.
  EXPECT_EQ(RunCommand(CliPath() + " verify " + ModelPath("single_index_he3.ini") +
                           " --set check.ode_escape_exponent.exponent=0.7 -o " + out,
                       &output),
            4)
      << output;
  EXPECT_NE(output.find("FAIL  ode_escape_exponent"), std::string::npos) << output;
  EXPECT_NE(output.find("measured: slope 0.50"), std::string::npos) << output;
  // Teacher and student links with information exponent 1 (h1): the escape takes O(1) time,
  // not ∝ √d, and the scaling claim fails with the measured slope.
  EXPECT_EQ(RunCommand(CliPath() + " verify " + ModelPath("single_index_he3.ini") +
                           " --set \"teacher.link=h(1)\" --set \"student.link=h(1)\" -o " + out,
                       &output),
            4)
      << output;
  EXPECT_NE(output.find("FAIL  ode_escape_exponent"), std::string::npos) << output;
  EXPECT_NE(output.find("measured: slope 0.0"), std::string::npos) << output;
}

// kind = argmin on a single-index He3 flow to a fixed time (no stop): the risk at t = 0.5 falls as
// the initial overlap m0 grows (reference: the closed-form flow, dm/dt ∝ m²(1 − m²) > 0), at every
// label-noise level, so the best m0 is always the largest: non-decreasing across the noise (PASS),
// but never interior (FAIL when asked for).
TEST(VerifyChecks, ArgminFindsTheBestValueForEachValueOfAnotherKey) {
  auto verify = [](const std::string& extra) {
    const std::string text = SingleIndexH3("m0 = 0.1", "0.5") + R"(
[check.best_m0]
kind = argmin
observable = risk
key = student.m0
values = 0.05, 0.1, 0.2
across = teacher.noise
across_values = 0, 0.1, 0.2
)" + extra;
    return Verify(io::ModelFile::Parse(text, "argmin test"), VerifyOptions{});
  };
  const Verification pass = verify("");
  ASSERT_EQ(pass.results.size(), 1u);
  EXPECT_EQ(pass.results[0].status, CheckStatus::kPass) << pass.results[0].measured;
  EXPECT_EQ(pass.results[0].measured, "best student.m0 teacher.noise=0: 0.2; teacher.noise=0.1: 0.2; teacher.noise=0.2: 0.2");
  ASSERT_EQ(pass.results[0].values.size(), 3u + 9u);  // the argmins, then the 3 × 3 final risks
  EXPECT_GT(pass.results[0].values[3], pass.results[0].values[5]);  // m0 = 0.05 worse than 0.2
  const Verification fail = verify("interior = 0.1\n");
  EXPECT_EQ(fail.results[0].status, CheckStatus::kFail);
  EXPECT_NE(fail.results[0].expected.find("strictly inside (0.05, 0.2) at teacher.noise = 0.1"), std::string::npos)
      << fail.results[0].expected;
  // `set`: the check's runs stop at t = 0.1 instead of 0.5, so every final risk is higher.
  const Verification shorter = verify("set = integrate.t_end=0.1, output.points=10\n");
  ASSERT_EQ(shorter.results[0].values.size(), 3u + 9u);
  for (std::size_t i = 3; i < 12; ++i) EXPECT_GT(shorter.results[0].values[i], pass.results[0].values[i]) << i;
}

// `set` on a final check: it reads its own run of the changed model. The single-index He3 flow
// to t = 0.5 from m0 = 0.1 (main run) against the same flow to t = 5 (own run): the overlap m
// grows (closed form: dm/dt > 0), so "m <= 0.2 at the end" holds on the main run and fails on
// the longer one, whose end time the report gives; a third check reads the same changed model.
TEST(VerifyChecks, AFinalCheckWithSetReadsItsOwnRun) {
  const std::string text = SingleIndexH3("m0 = 0.1", "0.5") + R"(
[check.short]
kind = final
observable = m
op = <=
threshold = 0.2
[check.long]
kind = final
observable = m
op = <=
threshold = 0.2
set = integrate.t_end=5
[check.long_risk]
kind = final
observable = risk
op = <=
threshold = 10
set = integrate.t_end=5
)";
  const Verification v = Verify(io::ModelFile::Parse(text, "set test"), VerifyOptions{});
  ASSERT_EQ(v.results.size(), 3u);
  EXPECT_EQ(v.results[0].status, CheckStatus::kPass) << v.results[0].measured;
  EXPECT_EQ(v.results[1].status, CheckStatus::kFail) << v.results[1].measured;
  EXPECT_GT(v.results[1].values[0], 0.2);
  EXPECT_NE(v.results[1].measured.find("at t = 5 (own run: integrate.t_end=5)"), std::string::npos)
      << v.results[1].measured;
  EXPECT_EQ(v.results[2].status, CheckStatus::kPass) << v.results[2].measured;
  EXPECT_EQ(v.trajectory.time.back(), 0.5);  // the main run is the file's
}

// A check's run that ends abnormally (here max_steps = 3 accepted steps, long before t_end = 5)
// has no final value: a final check FAILs though its rule holds at every row (risk <= 10; the
// single-index h3 risk 1 − m³ is at most 2), so does a bound check whose window
// (t <= 5) the run did not reach and an argmin check; every one names the run's outcome. The
// same checks on the normal main run PASS with no abnormal run. Reference: the rules themselves
// (PASS on the main run) and the run's termination.
TEST(VerifyChecks, ARunThatEndsAbnormallyFailsTheChecksThatNeedItsEnd) {
  const std::string body = SingleIndexH3("m0 = 0.1", "5");
  const std::string checks = R"(
[check.final]
kind = final
observable = risk
op = <=
threshold = 10
[check.bound]
kind = bound
observable = m
constant = 1000
power = 0
until = 5
[check.argmin]
kind = argmin
observable = risk
key = student.m0
values = 0.05, 0.1, 0.2
across = teacher.noise
across_values = 0, 0.1
)";
  const Verification normal = Verify(io::ModelFile::Parse(body + checks, "normal"), VerifyOptions{});
  ASSERT_EQ(normal.results.size(), 3u);
  for (const CheckResult& r : normal.results) {
    EXPECT_EQ(r.status, CheckStatus::kPass) << r.spec.name << ": " << r.measured;
    EXPECT_TRUE(r.abnormal_runs.empty()) << r.spec.name;
  }
  std::string cut = checks;
  for (std::size_t at = cut.find("[check."); at != std::string::npos; at = cut.find("[check.", at + 1)) {
    const std::size_t next = cut.find("\n", at);
    cut.insert(next + 1, "set = integrate.max_steps=3\n");
  }
  const Verification v = Verify(io::ModelFile::Parse(body + cut, "cut"), VerifyOptions{});
  ASSERT_EQ(v.results.size(), 3u);
  for (const CheckResult& r : v.results) {
    EXPECT_EQ(r.status, CheckStatus::kFail) << r.spec.name << ": " << r.measured;
    ASSERT_FALSE(r.abnormal_runs.empty()) << r.spec.name;
    EXPECT_NE(r.abnormal_runs.front().find("max_steps at t = "), std::string::npos) << r.abnormal_runs.front();
    EXPECT_NE(r.measured.find("ended abnormally: "), std::string::npos) << r.measured;
  }
  EXPECT_EQ(v.results[2].abnormal_runs.size(), 6u);  // every (m0, noise) point of the argmin
  EXPECT_NE(v.results[2].abnormal_runs.front().find("student.m0=0.05, teacher.noise=0"), std::string::npos)
      << v.results[2].abnormal_runs.front();
  EXPECT_LE(v.results[0].values[0], 10.0);  // the rule held at the last row: the end is what failed
}

// `seeds` on a final check: the single-index h3 flow from random initial overlaps (d = 100) keeps
// the sign of m (dm/dt ∝ m²(1 − m²) ≥ 0: a negative m rises only towards 0), so "m >= 0 at t = 1"
// holds for the seeds whose initial overlap is positive. Reference: the same check on one seed at
// a time (seeds = 1, set = seed=S). The check over six seeds must count exactly those, pass with
// at_least half a seed below count/6 and fail half a seed above it.
TEST(VerifyChecks, AClaimOverSeedsCountsTheSeedsWhereItHolds) {
  auto verify = [](const std::string& extra) {
    const std::string text = SingleIndexH3("init = random", "1") + kMStaysPositive + extra;
    return Verify(io::ModelFile::Parse(text, "seeds test"), VerifyOptions{});
  };
  std::vector<double> flags;
  for (int seed = 1; seed <= 6; ++seed) {
    const Verification one = verify("set = seed=" + std::to_string(seed) + "\n");
    flags.push_back(one.results[0].status == CheckStatus::kPass ? 1.0 : 0.0);
  }
  const double holds = std::accumulate(flags.begin(), flags.end(), 0.0);
  ASSERT_GT(holds, 0.0);  // the six seeds must not all agree, or the test shows nothing
  ASSERT_LT(holds, 6.0);
  const Verification pass = verify("seeds = 6\nat_least = " + std::to_string((holds - 0.5) / 6) + "\n");
  ASSERT_EQ(pass.results.size(), 1u);
  const CheckResult& r = pass.results[0];
  EXPECT_EQ(r.status, CheckStatus::kPass) << r.measured;
  ASSERT_EQ(r.values.size(), 2u + 6u);
  EXPECT_EQ(r.values[0], holds);
  EXPECT_EQ(r.values[1], 6.0);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r.values[2 + i], flags[i]) << "seed " << i + 1;
  EXPECT_NE(r.measured.find("holds for " + detail::FormatNumber(holds) + " of 6 seeds"), std::string::npos)
      << r.measured;
  EXPECT_NE(r.expected.find("of 6 seeds (1..6)"), std::string::npos) << r.expected;
  const Verification fail = verify("seeds = 6\nat_least = " + std::to_string((holds + 0.5) / 6) + "\n");
  EXPECT_EQ(fail.results[0].status, CheckStatus::kFail) << fail.results[0].measured;
  // A fraction outside (0, 1] is rejected by key.
  try {
    verify("seeds = 6\nat_least = 1.5\n");
    ADD_FAILURE() << "accepted at_least = 1.5";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("check.positive.at_least"), std::string::npos) << e.what();
  }
}

// The progress of a verification: one status line at a time, naming the phase, how many of its
// runs are done and where the running ones are (each run shows when it starts, then every 250 ms
// of integration). The model: soft_routed_moe.ini up to its events (~0.5 s per run to t = 1),
// with a check over three seeds run on two threads (the model's seed is the main run; seeds 2 and
// 3 are the check's own runs, side by side).
TEST(VerifyChecks, ProgressShowsEachPhaseAndItsRunsOneLineAtATime) {
  std::ifstream in(ModelPath("soft_routed_moe.ini"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text = text.substr(0, text.find("[event.")) + R"(
[check.finite]
kind = final
observable = risk
op = <=
threshold = 100
seeds = 3
)";
  const io::ModelFile model = io::ModelFile::Parse(text, "progress test");
  io::ModelFile short_model = model;
  short_model.Set("integrate.t_end=1");
  VerifyOptions options;
  options.threads = 2;
  std::vector<std::string> lines;
  std::atomic<int> inside{0};
  bool overlapped = false;
  options.progress = [&](const std::string& line) {
    overlapped = overlapped || inside.fetch_add(1) != 0;  // the board calls one at a time
    lines.push_back(line);
    inside.fetch_sub(1);
  };
  const Verification v = Verify(short_model, options);
  ASSERT_EQ(v.results.size(), 1u);
  EXPECT_EQ(v.results[0].status, CheckStatus::kPass) << v.results[0].measured;
  EXPECT_FALSE(overlapped);
  auto has = [&](const std::string& part) {
    return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(part) != std::string::npos; });
  };
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  EXPECT_TRUE(has("the model's run: t=0/1")) << all;
  EXPECT_TRUE(has("own runs: 0/2 done; seed=")) << all;
  EXPECT_TRUE(has("seed=2 t=0/1")) << all;
  EXPECT_TRUE(has("seed=3 t=0/1")) << all;
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "own runs: 2/2 done");
  // Without a progress function nothing is reported, and the result is the same.
  const Verification quiet = Verify(short_model, VerifyOptions{});
  EXPECT_EQ(quiet.results[0].values, v.results[0].values);
}

// The plan of a verification lists each check's own runs as assignments to the model (the
// check's `set` first), and builds every one of them before any runs: a value that only a check's
// run reads is rejected at once, naming the check and the run, before the model's run starts.
TEST(VerifyChecks, EveryRunOfTheChecksIsCheckedBeforeAnyRuns) {
  const std::string text = SingleIndexH3("init = random", "1") + kMStaysPositive + R"(seeds = 3
set = integrate.t_end=2
[check.reads_the_model_run]
kind = final
observable = m
threshold = 1
[check.grows]
kind = scaling
event = escape
exponent = 0.5
dimensions = 100, 1000
[event.escape]
observable = m
threshold = 0.5
)";
  const VerificationPlan plan = PlanVerification(io::ModelFile::Parse(text, "plan test"), VerifyOptions{});
  using Lists = std::vector<std::vector<std::string>>;
  ASSERT_EQ(plan.runs.size(), 3u);
  EXPECT_EQ(plan.runs[0],
            (Lists{{"integrate.t_end=2"}, {"integrate.t_end=2", "seed=2"}, {"integrate.t_end=2", "seed=3"}}));
  EXPECT_EQ(plan.runs[1], Lists{});
  EXPECT_EQ(plan.runs[2], (Lists{{"d=100"}, {"d=1000"}}));

  // A `set` read only by the check's own runs.
  int progress_calls = 0;
  VerifyOptions options;
  options.progress = [&](const std::string&) { ++progress_calls; };
  std::string broken = text;
  broken.replace(broken.find("set = integrate.t_end=2"), 23, "set = integrate.t_end=-2");
  try {
    Verify(io::ModelFile::Parse(broken, "plan test"), options);
    ADD_FAILURE() << "accepted integrate.t_end=-2";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "check 'positive' (run integrate.t_end=-2): key 'integrate.t_end': value '-2'"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(progress_calls, 0);  // no run started
}

TEST(VerifyChecks, BadChecksAreRejectedByKey) {
  struct Case {
    std::vector<std::string> overrides;
    const char* key;
  };
  for (const Case& c : std::vector<Case>{
           {{"check.x.kind=order", "check.x.events=escape, nothing"}, "check.x.events"},
           {{"check.x.kind=scaling", "check.x.event=escape", "check.x.exponent=1", "check.x.dimensions=10"},
            "check.x.dimensions"},
           {{"check.x.kind=final", "check.x.observable=nothing", "check.x.threshold=1"}, "check.x.observable"},
           {{"check.x.kind=guess"}, "check.x.kind"},
           {{"check.x.kind=argmin", "check.x.key=student.m0", "check.x.values=0.1, 0.2, 0.3", "check.x.across=d",
             "check.x.across_values=100", "check.x.set=d"},
            "check.x.set"}}) {
    io::ModelFile model = io::ModelFile::Load(ModelPath("single_index_he3.ini"));
    for (const std::string& s : c.overrides) model.Set(s);
    try {
      BuildFlow(model);
      ADD_FAILURE() << "accepted " << c.overrides.back();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.key), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace moeflow
