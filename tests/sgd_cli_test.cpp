// End to end through the moeflow executable: `moeflow sgd` and `moeflow compare` write files
// that h5py reads (one group per seed, the event statistics, the comparison table); bad input
// exits 2 with a message naming the key and writes nothing.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::CliPath;
using testing::ModelPath;
using testing::RunCommand;
using testing::TempDir;

TEST(SgdCli, WritesOneGroupPerSeedThatH5pyReads) {
  const std::string out = TempDir() + "/committee_sgd.h5";
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " sgd " + ModelPath("committee_erf_k2m2.ini") +
                           " --set d=200 --set integrate.t_end=20 --seeds 3 --threads 2 -o " + out,
                       &output),
            0)
      << output;
  EXPECT_NE(output.find("event plateau: median t = "), std::string::npos) << output;
  EXPECT_NE(output.find("seed 3: reached_end"), std::string::npos) << output;
  const std::string script = "import h5py, numpy as np\n"
                             "f = h5py.File('" + out + "')\n"
                             "assert f.attrs['kind'] == 'sgd', f.attrs['kind']\n"
                             "assert abs(f.attrs['learning_rate'] - 0.5 / 200) < 1e-15\n"
                             "assert list(f.attrs['seeds']) == [3, 4, 5]\n"
                             "assert 'd = 200' in f.attrs['model'] or 'd=200' in f.attrs['overrides']\n"
                             "for s in (3, 4, 5):\n"
                             "    g = f['seed_%d' % s]\n"
                             "    t, steps = g['trajectory/time'][:], g['trajectory/steps'][:]\n"
                             "    assert np.allclose(t, steps * 0.5 / 200)\n"
                             "    assert g['trajectory/M'].shape == (len(t), 2, 2)\n"
                             "    assert g['trajectory/norm'].shape == (len(t), 2)\n"
                             "    assert g['initial_gram'].shape == (4, 4)\n"
                             "    assert g.attrs['termination'] == 'reached_end'\n"
                             "    assert np.isfinite(g['events/plateau'][()])\n"
                             "e = f['event_statistics/plateau']\n"
                             "assert e.attrs['runs'] == 3 and e.attrs['q25'] <= e[()] <= e.attrs['q75']\n"
                             "print('ok')\n";
  ASSERT_EQ(testing::RunPython(script, &output), 0) << output;
}

TEST(SgdCli, CompareWritesTheTableAndTheExponents) {
  const std::string out = TempDir() + "/compare.h5";
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " compare " + ModelPath("committee_erf_k2m2.ini") +
                           " --d 100,400 --seeds 2 --set integrate.t_end=10 -o " + out,
                       &output),
            0)
      << output;
  EXPECT_NE(output.find("log-log exponents against d"), std::string::npos) << output;
  const std::string script = "import h5py, numpy as np\n"
                             "f = h5py.File('" + out + "')\n"
                             "assert f.attrs['kind'] == 'compare'\n"
                             "t = f['table']\n"
                             "assert list(t['d'][:]) == [100, 100, 400, 400]\n"
                             "assert f.attrs['event_names'].split('\\n') == ['plateau', 'specialised']\n"
                             "assert np.isfinite(t['ode_median'][0]) and np.isfinite(t['sgd_median'][0])\n"
                             "assert t['overlap_distance'].shape == (2,)\n"
                             "assert 'sgd_steps' in f['scaling/plateau'].attrs\n"
                             "assert f['d_400/sgd/seed_3/trajectory/M'].shape[1:] == (2, 2)\n"
                             "assert f['d_400/ode/seed_3/trajectory/time'][-1] >= 10\n"
                             "o = f['d_400/ode/seed_3'].attrs\n"
                             "assert o['termination'] == 'reached_end' and o['t_final'] == 10\n"
                             "assert o['accepted_steps'] > 0 and o['drift_evaluations'] >= o['accepted_steps']\n"
                             "assert o['projections'] >= 0 and o['wall_seconds'] > 0\n"
                             "print('ok')\n";
  ASSERT_EQ(testing::RunPython(script, &output), 0) << output;
}

TEST(SgdCli, BadInputNamesTheKeyAndWritesNothing) {
  struct Case {
    std::string args;
    const char* expected;
  };
  const std::string dir = TempDir();
  const std::string out = dir + "/never.h5";
  for (const Case& c : std::vector<Case>{
           {" sgd " + ModelPath("committee_erf_k2m2.ini") + " --set sgd.lr=-1", "sgd.lr"},
           {" sgd " + ModelPath("committee_erf_k2m2.ini") + " --seeds 0", "--seeds"},
           {" sgd " + ModelPath("committee_erf_k2m2.ini") + " --set sgd.engine=fast", "sgd.engine"},
           {" sgd " + ModelPath("soft_routed_moe.ini"), "sgd.lr"},
           {" sgd " + ModelPath("committee_erf_k2m2.ini") + " --set d=3", "'d'"},
           {" compare " + ModelPath("committee_erf_k2m2.ini") + " --d 100,-5", "--d"},
           {" compare " + ModelPath("committee_erf_k2m2.ini"), "--d"}}) {
    std::string output;
    EXPECT_EQ(RunCommand(CliPath() + c.args + " -o " + out, &output), 2) << c.args << "\n" << output;
    EXPECT_NE(output.find(c.expected), std::string::npos) << c.args << "\n" << output;
    EXPECT_FALSE(std::filesystem::exists(out)) << c.args;
  }
}

// An allocation that fails (std::bad_alloc) ends the command with a message that says so, exit 1
// and no file. The training set of 2e4 x 1e4 values (1.5 GiB) fits the machine, so the up-front
// memory check lets it through, but not the 1 GB address space the shell's ulimit gives the run.
TEST(SgdCli, RunningOutOfMemoryIsReportedAndWritesNothing) {
  const std::string out = TempDir() + "/never.h5";
  std::string output;
  EXPECT_EQ(RunCommand("ulimit -v 1000000; " + CliPath() + " sgd " + ModelPath("committee_erf_k2m2.ini") +
                           " --set sgd.samples=2e4 --set d=1e4 --set sgd.lr=0.1 -o " + out,
                       &output),
            1)
      << output;
  EXPECT_NE(output.find("moeflow sgd: error: out of memory: the run needs more memory than this machine gives it"),
            std::string::npos)
      << output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// sgd --dry-run checks what a flow --dry-run checks and the [sgd] options too: soft_routed_moe.ini
// is a gradient-flow model without sgd.lr, which the flow accepts and SGD cannot run.
TEST(SgdCli, ADryRunChecksTheSgdOptionsPrintsTheModelAndWritesNothing) {
  const std::string dir = TempDir();
  std::string output;
  ASSERT_EQ(
      RunCommand(CliPath() + " sgd " + ModelPath("committee_erf_k2m2.ini") + " -n -o " + dir + "/s.h5", &output), 0)
      << output;
  EXPECT_NE(output.find("resolved by moeflow sgd --dry-run"), std::string::npos) << output;
  EXPECT_NE(output.find("\n[sgd]\nlr_exponent = 1\n"), std::string::npos) << output;
  EXPECT_EQ(RunCommand(CliPath() + " flow " + ModelPath("soft_routed_moe.ini") + " -n", &output), 0) << output;
  EXPECT_EQ(RunCommand(CliPath() + " sgd " + ModelPath("soft_routed_moe.ini") + " -n", &output), 2) << output;
  EXPECT_NE(output.find("key 'sgd.lr' is missing"), std::string::npos) << output;
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

TEST(SgdCli, HelpDocumentsTheSgdKeys) {
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " sgd --help", &output), 0);
  for (const char* key : {"lr_exponent", "samples", "test_samples", "engine", "overlaps", "event_resolution"}) {
    EXPECT_NE(output.find(key), std::string::npos) << key;
  }
  ASSERT_EQ(RunCommand(CliPath() + " compare --help", &output), 0);
  EXPECT_NE(output.find("--d"), std::string::npos);
}

}  // namespace
}  // namespace moeflow

namespace moeflow {
namespace {

// Progress lines go to stderr on a terminal — or with MOEFLOW_PROGRESS=1, which this test uses
// because a build machine may have no pseudo-terminals (a chroot without devpts) — and never in
// a pipe or a CI log, nor with --quiet. (On a real terminal: `script -qc "build/moeflow sgd ..."`.)
TEST(SgdCli, ProgressOnlyOnATerminal) {
  const std::string dir = testing::TempDir();
  const std::string run = testing::CliPath() + " sgd " + testing::ModelPath("single_index_he3.ini") +
                          " --set d=256 --seeds 2 -o " + dir + "/p.h5";
  std::string output;
  ASSERT_EQ(testing::RunCommand("MOEFLOW_PROGRESS=1 " + run, &output), 0) << output;
  EXPECT_NE(output.find("SGD steps"), std::string::npos) << output;
  ASSERT_EQ(testing::RunCommand("MOEFLOW_PROGRESS=1 " + run + " --quiet", &output), 0) << output;
  EXPECT_EQ(output.find("SGD steps"), std::string::npos) << output;
  ASSERT_EQ(testing::RunCommand(run, &output), 0) << output;
  EXPECT_EQ(output.find("SGD steps"), std::string::npos) << output;
}

}  // namespace
}  // namespace moeflow
