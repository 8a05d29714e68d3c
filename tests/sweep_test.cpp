// Sweeps: grid parsing, one run per point, failed points recorded, finished points reused by
// fingerprint (the resume mechanism), and end to end through `moeflow sweep`: a sweep killed with
// SIGKILL or interrupted with SIGINT completes only its missing points when the same command is
// run again, and its file equals that of an uninterrupted sweep.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "moeflow/error.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/io/sweep_output.hpp"
#include "moeflow/sweep/sweep.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::CliPath;
using testing::ModelPath;
using testing::RunCommand;
using testing::TempDir;

std::string InputErrorOf(const std::string& spec) {
  try {
    ParseGridAxis(spec);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(SweepGrid, SplitsValuesAtCommasOutsideParentheses) {
  const GridAxis axis = ParseGridAxis(" student.link = erf, hermite(0,0,1) ,relu");
  EXPECT_EQ(axis.key, "student.link");
  EXPECT_EQ(axis.values, (std::vector<std::string>{"erf", "hermite(0,0,1)", "relu"}));
}

TEST(SweepGrid, RejectsMalformedAxesNamingTheRule) {
  EXPECT_NE(InputErrorOf("d").find("must be KEY=V1,V2"), std::string::npos);
  EXPECT_NE(InputErrorOf("=1,2").find("the key is empty"), std::string::npos);
  EXPECT_NE(InputErrorOf("d=1,,2").find("an empty value"), std::string::npos);
  EXPECT_NE(InputErrorOf("d=1,1").find("must not repeat a value"), std::string::npos);
  EXPECT_THROW(ExpandGrid({}), InputError);
  EXPECT_THROW(ExpandGrid({ParseGridAxis("d=1,2"), ParseGridAxis("d=3")}), InputError);
  EXPECT_THROW(ParseSweepRun("ode"), InputError);
}

TEST(SweepGrid, ExpandsTheProductWithTheFirstAxisSlowest) {
  const std::vector<SweepPoint> points = ExpandGrid({ParseGridAxis("a=1,2"), ParseGridAxis("b=x,y,z")});
  std::vector<std::string> labels;
  for (const SweepPoint& p : points) labels.push_back(p.Label());
  EXPECT_EQ(labels, (std::vector<std::string>{"a=1, b=x", "a=1, b=y", "a=1, b=z", "a=2, b=x", "a=2, b=y",
                                              "a=2, b=z"}));
}

io::ModelFile He3() { return io::ModelFile::Load(ModelPath("single_index_he3.ini")); }

double FlowEscape(const SweepPointResult& p) {
  const io::Dataset* ds = p.group.FindDataset("flow/events/escape");
  return ds != nullptr ? ds->data.at(0) : std::nan("");
}

// Reference: the escape time of the single-index He3 flow depends on d only through m0 = d^(-1/2),
// and grows with d; each point is a complete flow run.
TEST(Sweep, RunsEveryPointAndRecordsAFailedOneWithoutStopping) {
  SweepOptions options;
  options.threads = 2;
  const SweepResult r =
      RunSweep(He3(), {ParseGridAxis("d=100,1e4"), ParseGridAxis("student.m0=auto,minus,0.2")}, options);
  ASSERT_EQ(r.points.size(), 6u);
  EXPECT_FALSE(r.interrupted);
  for (const SweepPointResult& p : r.points) {
    if (p.point.assignments[1].second == "minus") {
      EXPECT_EQ(p.status, PointStatus::kError);
      EXPECT_NE(p.message.find("key 'student.m0': value 'minus'"), std::string::npos) << p.message;
      EXPECT_EQ(p.group.FindGroup("flow"), nullptr);
    } else {
      EXPECT_EQ(p.status, PointStatus::kOk) << p.message;
      EXPECT_TRUE(std::isfinite(FlowEscape(p)));
    }
  }
  EXPECT_LT(FlowEscape(r.points[0]), FlowEscape(r.points[3]));         // m0 = 0.1 escapes before m0 = 0.01
  EXPECT_DOUBLE_EQ(FlowEscape(r.points[2]), FlowEscape(r.points[5]));  // m0 = 0.2 at both d
}

TEST(Sweep, AnAbnormalEndIsRecordedWithItsNumbers) {
  SweepOptions options;
  options.run = SweepRun::kSgd;
  io::ModelFile model = He3();
  model.Set("sgd.max_steps=1000");
  const SweepResult r = RunSweep(model, {ParseGridAxis("d=100")}, options);
  ASSERT_EQ(r.points.size(), 1u);
  EXPECT_EQ(r.points[0].status, PointStatus::kAbnormal);
  EXPECT_NE(r.points[0].message.find("sgd.max_steps = 1000 reached at t = "), std::string::npos) << r.points[0].message;
  ASSERT_NE(r.points[0].group.FindGroup("sgd/seed_1"), nullptr);
}

// The resume mechanism: points finished by an earlier sweep (its parts folder) are taken as they
// are when their fingerprint matches; everything else runs. Reused points equal fresh ones.
TEST(Sweep, RunsOnlyThePointsNotFinishedBefore) {
  SweepOptions options;
  options.parts_dir = TempDir() + "/parts";
  const SweepResult first = RunSweep(He3(), {ParseGridAxis("d=100,1e4")}, options);
  EXPECT_EQ(first.Reused(), 0u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(options.parts_dir),
                          std::filesystem::directory_iterator{}),
            2);

  const SweepResult second = RunSweep(He3(), {ParseGridAxis("d=100,1e3,1e4")}, options);
  ASSERT_EQ(second.points.size(), 3u);
  EXPECT_EQ(second.Reused(), 2u);
  EXPECT_TRUE(second.points[0].reused && !second.points[1].reused && second.points[2].reused);
  EXPECT_EQ(second.points[2].group.name, "point_0002");  // renumbered to its place in the new grid

  SweepOptions fresh;
  const SweepResult reference = RunSweep(He3(), {ParseGridAxis("d=100,1e3,1e4")}, fresh);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(FlowEscape(second.points[i]), FlowEscape(reference.points[i]));

  io::ModelFile changed = He3();
  changed.Set("event.escape.threshold=0.6");  // another model: nothing may be reused
  EXPECT_EQ(RunSweep(changed, {ParseGridAxis("d=100,1e4")}, options).Reused(), 0u);
  options.run = SweepRun::kBoth;  // another run: likewise
  EXPECT_EQ(RunSweep(He3(), {ParseGridAxis("d=100")}, options).Reused(), 0u);
}

std::size_t FileCount(const std::string& dir) {
  return static_cast<std::size_t>(
      std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator{}));
}

// A dry run builds every missing point's model (and checks its [sgd] options when SGD runs) like
// a run, runs nothing and saves nothing; points finished before are reported as such.
TEST(Sweep, ADryRunChecksEveryPointAndRunsNothing) {
  SweepOptions options;
  options.parts_dir = TempDir() + "/parts";
  options.run = SweepRun::kBoth;
  options.dry_run = true;
  const SweepResult r = RunSweep(He3(), {ParseGridAxis("d=100,0")}, options);
  ASSERT_EQ(r.points.size(), 2u);
  EXPECT_EQ(r.points[0].status, PointStatus::kOk) << r.points[0].message;
  EXPECT_TRUE(r.points[0].group.groups.empty());  // nothing run
  EXPECT_EQ(r.points[1].status, PointStatus::kError);
  EXPECT_NE(r.points[1].message.find("key 'd': value '0' must be an integer >= 1"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(options.parts_dir));

  // The [sgd] options are checked only when SGD runs: without sgd.lr a gradient-flow model has none.
  io::ModelFile no_lr = He3();
  no_lr.Set("sgd.lr=");
  const SweepResult sgd = RunSweep(no_lr, {ParseGridAxis("d=100")}, options);
  EXPECT_EQ(sgd.points.at(0).status, PointStatus::kError);
  EXPECT_NE(sgd.points[0].message.find("key 'sgd.lr' is missing"), std::string::npos) << sgd.points[0].message;
  options.run = SweepRun::kFlow;
  EXPECT_EQ(RunSweep(no_lr, {ParseGridAxis("d=100")}, options).points.at(0).status, PointStatus::kOk);

  // After a real sweep of d = 100, that point is done and only d = 1e4 is left to run.
  options.dry_run = false;
  RunSweep(He3(), {ParseGridAxis("d=100")}, options);
  ASSERT_EQ(FileCount(options.parts_dir), 1u);
  options.dry_run = true;
  const SweepResult resumed = RunSweep(He3(), {ParseGridAxis("d=100,1e4")}, options);
  ASSERT_EQ(resumed.points.size(), 2u);
  EXPECT_TRUE(resumed.points[0].reused);
  EXPECT_FALSE(resumed.points[1].reused);
  EXPECT_EQ(resumed.points[1].status, PointStatus::kOk);
  EXPECT_EQ(FileCount(options.parts_dir), 1u);
}

// Shards (machines) each run an interleaved share of the points into their own parts folder;
// copying the folders into one and running unsharded takes every point and runs nothing, and the
// result equals an unsharded sweep's.
TEST(Sweep, ShardsRunInterleavedSharesThatMergeIntoTheWholeSweep) {
  const std::vector<GridAxis> grid = {ParseGridAxis("d=100,1e3,1e4")};
  std::vector<std::string> folders;
  std::vector<std::vector<std::size_t>> ran;
  for (int shard = 0; shard < 2; ++shard) {
    SweepOptions options;
    options.parts_dir = TempDir() + "/shard_" + std::to_string(shard);
    options.shard = shard;
    options.shards = 2;
    const SweepResult r = RunSweep(He3(), grid, options);
    EXPECT_FALSE(r.interrupted);
    EXPECT_EQ(r.points.size() + r.other_shards, 3u);
    ran.emplace_back();
    for (const SweepPointResult& p : r.points) ran.back().push_back(p.index);
    folders.push_back(options.parts_dir);
  }
  EXPECT_EQ(ran[0], (std::vector<std::size_t>{0, 2}));
  EXPECT_EQ(ran[1], (std::vector<std::size_t>{1}));
  for (const auto& entry : std::filesystem::directory_iterator(folders[1])) {
    std::filesystem::copy_file(entry.path(), folders[0] / entry.path().filename());
  }
  SweepOptions merge;
  merge.parts_dir = folders[0];
  const SweepResult merged = RunSweep(He3(), grid, merge);
  ASSERT_EQ(merged.points.size(), 3u);
  EXPECT_EQ(merged.Reused(), 3u);
  EXPECT_EQ(merged.other_shards, 0u);
  const SweepResult reference = RunSweep(He3(), grid, SweepOptions{});
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(FlowEscape(merged.points[i]), FlowEscape(reference.points[i]));
  for (const char* bad : {"0/2", "3/2", "1/0", "2", "a/b", "1.5/2"}) {
    EXPECT_THROW(ParseShard("--shard", bad), InputError) << bad;
  }
  EXPECT_EQ(ParseShard("--shard", "2/4"), (std::pair<int, int>{1, 4}));
}

TEST(Sweep, RejectsAGridKeyAlsoGivenWithSet) {
  io::ModelFile model = He3();
  model.Set("d=100");
  EXPECT_THROW(RunSweep(model, {ParseGridAxis("d=100,1e4")}, SweepOptions{}), InputError);
}

// ---- end to end -----------------------------------------------------------------------------

// Six SGD points of the erf committee (overlap engine, ~0.5-1.5 s each on one core).
std::string SlowSweep(const std::string& out) {
  return CliPath() + " sweep " + ModelPath("committee_erf_k2m2.ini") +
         " --grid d=1000,1500,2000,2500,3000,3500 --run sgd --seeds 2 --threads 2 -o " + out;
}

// Starts `command` in the background, waits until its parts folder holds a finished point, then
// sends `signal`; returns the command's exit status.
int StopAfterTheFirstPoint(const std::string& command, const std::string& out, const std::string& signal,
                           std::string* output) {
  const std::string script = out + ".stop.sh";
  {
    std::ofstream file(script);
    file << command << " > " << out << ".log 2>&1 &\n"
         << "pid=$!\n"
         << "for i in $(seq 1 3000); do\n"
         << "  if ls " << out << ".parts/point_*.h5 >/dev/null 2>&1; then break; fi\n"
         << "  sleep 0.01\n"
         << "done\n"
         << "kill -" << signal << " $pid\n"
         << "wait $pid\n"
         << "status=$?\n"
         << "cat " << out << ".log\n"
         << "exit $status\n";
  }
  return RunCommand("bash " + script, output);
}

int CountParts(const std::string& out) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(out + ".parts")) n += e.path().extension() == ".h5";
  return n;
}

int ReusedPoints(const std::string& report) {
  const std::size_t at = report.find(" of 6 (");
  return at == std::string::npos ? -1 : std::stoi(report.substr(at + 7));
}

TEST(SweepCli, AKilledSweepCompletesOnlyTheMissingPointsWhenRunAgain) {
  const std::string dir = TempDir();
  const std::string out = dir + "/killed.h5";
  std::string output;
  const int killed = StopAfterTheFirstPoint(SlowSweep(out), out, "KILL", &output);
  EXPECT_NE(killed, 0) << output;
  ASSERT_FALSE(std::filesystem::exists(out)) << output;
  const int saved = CountParts(out);
  ASSERT_GE(saved, 1);
  ASSERT_LT(saved, 6) << "every point finished before the kill: the test proves nothing";

  ASSERT_EQ(RunCommand(SlowSweep(out), &output), 0) << output;
  EXPECT_EQ(ReusedPoints(output), saved) << output;
  EXPECT_FALSE(std::filesystem::exists(out + ".parts"));

  // The resumed file equals an uninterrupted sweep's, column by column.
  const std::string reference = dir + "/reference.h5";
  ASSERT_EQ(RunCommand(SlowSweep(reference), &output), 0) << output;
  const std::string script = "import h5py, numpy as np\n"
                             "a, b = h5py.File('" + out + "'), h5py.File('" + reference + "')\n"
                             "assert a.attrs['kind'] == 'sweep' and a.attrs['points'] == 6\n"
                             "assert list(a['table/d'][:]) == [1000, 1500, 2000, 2500, 3000, 3500]\n"
                             "assert set(a['table']) == set(b['table']), (set(a['table']), set(b['table']))\n"
                             "for c in a['table']:\n"
                             "    assert np.array_equal(a['table'][c][:], b['table'][c][:], equal_nan=True), c\n"
                             "assert (a['table/status'][:] == 0).all()\n"
                             "assert np.isfinite(a['table/sgd_event_plateau'][:]).all()\n"
                             "for i in range(6):\n"
                             "    p = a['points/point_%04d' % i]\n"
                             "    assert p.attrs['label'] == 'd=%d' % (1000 + 500 * i)\n"
                             "    seeds = [k for k in p['sgd'] if k.startswith('seed_')]\n"
                             "    assert p['sgd'].attrs['kind'] == 'sgd' and len(seeds) == 2, list(p['sgd'])\n"
                             "    for s in seeds:\n"
                             "        assert np.array_equal(p['sgd'][s]['trajectory/M'][:],\n"
                             "                              b['points/point_%04d/sgd' % i][s]['trajectory/M'][:])\n"
                             "print('ok')\n";
  ASSERT_EQ(testing::RunPython(script, &output), 0) << output;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    EXPECT_NE(e.path().filename().string().front(), '.') << "a temporary file was left: " << e.path();
  }
}

TEST(SweepCli, CtrlCKeepsTheFinishedPointsAndWritesNoFile) {
  const std::string out = TempDir() + "/interrupted.h5";
  std::string output;
  EXPECT_EQ(StopAfterTheFirstPoint(SlowSweep(out), out, "INT", &output), 130) << output;
  EXPECT_NE(output.find("points are saved in " + out + ".parts/: run the same command to resume"), std::string::npos)
      << output;
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_GE(CountParts(out), 1);
}

TEST(SweepCli, WritesTheTableWithTextValuesAndPlotsIt) {
  const std::string dir = TempDir();
  const std::string out = dir + "/links.h5";
  std::string output;
  const int status = RunCommand(CliPath() + " sweep " + ModelPath("single_index_he3.ini") +
                                    " --grid 'teacher.link=h(3),h(4),nonsense' --grid d=100,1e4 -o " + out,
                                &output);
  EXPECT_EQ(status, 3) << output;  // one value fails at both d: recorded, the sweep goes on
  EXPECT_NE(output.find("error at teacher.link=nonsense, d=100: key 'teacher.link'"), std::string::npos) << output;
  const std::string script = "import h5py, numpy as np\n"
                             "f = h5py.File('" + out + "')\n"
                             "t = f['table']\n"
                             "assert t['teacher.link'].attrs['values'] == 'h(3)\\nh(4)\\nnonsense'\n"
                             "assert list(t['teacher.link'][:]) == [0, 0, 1, 1, 2, 2]\n"
                             "assert list(t['status'][:]) == [0, 0, 0, 0, 2, 2]\n"
                             "e = t['flow_event_escape'][:]\n"
                             "assert e[0] < e[1] and np.isnan(e[2:]).all(), e  # an He3 student never escapes an He4 teacher\n"
                             "print('ok')\n";
  ASSERT_EQ(testing::RunPython(script, &output), 0) << output;
  ASSERT_EQ(RunCommand(CliPath() + " plot " + out + " -o " + dir + "/links.png", &output), 0) << output;
  EXPECT_GT(std::filesystem::file_size(dir + "/links.png"), 10000u);
}

TEST(SweepCli, ADryRunListsEveryPointAndWritesNothing) {
  const std::string dir = TempDir();
  const std::string command = CliPath() + " sweep " + ModelPath("single_index_he3.ini") + " -o " + dir + "/s.h5 -n";
  std::string output;
  EXPECT_EQ(RunCommand(command + " --grid d=100,0,1e4", &output), 2) << output;
  EXPECT_NE(output.find("[1/3] d=100: to run\n"), std::string::npos) << output;
  EXPECT_NE(output.find("[2/3] d=0: fails: key 'd': value '0' must be an integer >= 1\n"), std::string::npos) << output;
  EXPECT_NE(output.find("3 points: 2 to run, 0 done earlier, 1 failing. Dry run: nothing run, nothing written."),
            std::string::npos)
      << output;
  EXPECT_EQ(RunCommand(command + " --grid d=100,1e4", &output), 0) << output;
  EXPECT_NE(output.find("2 points: 2 to run, 0 done earlier, 0 failing."), std::string::npos) << output;
  EXPECT_EQ(FileCount(dir), 0u);
}

TEST(SweepCli, EveryPointFailingOnTheSameKeyIsBadInput) {
  std::string output;
  EXPECT_EQ(RunCommand(CliPath() + " sweep " + ModelPath("single_index_he3.ini") + " --grid no_such_key=1,2 -o " +
                           TempDir() + "/bad.h5",
                       &output),
            2)
      << output;
  EXPECT_NE(output.find("no_such_key"), std::string::npos) << output;
}

}  // namespace
}  // namespace moeflow
