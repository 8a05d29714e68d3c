// End to end through the moeflow executable: `moeflow flow` writes a file that Python's h5py
// reads; bad input exits non-zero with a message and leaves no file, and never touches an
// existing one.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::CliPath;
using testing::ModelPath;
using testing::RunCommand;
using testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t FilesIn(const std::string& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

TEST(FlowCli, WritesAFileThatH5pyReads) {
  const std::string out = TempDir() + "/he3.h5";
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " flow " + ModelPath("single_index_he3.ini") + " --set d=1e6 -o " + out, &output), 0)
      << output;
  EXPECT_NE(output.find("event escape: t = "), std::string::npos) << output;
  EXPECT_NE(output.find("accepted steps:"), std::string::npos) << output;
  // h5py: the datasets, the event and the self-describing attributes.
  const std::string script =
      "import h5py, numpy as np, math\n"
      "f = h5py.File('" + out + "', 'r')\n"
      "t = f['trajectory/time'][:]; m = f['trajectory/m'][:]; r = f['trajectory/risk'][:]\n"
      "assert t.shape == m.shape == r.shape and t[0] == 0 and np.all(np.diff(t) > 0)\n"
      "assert abs(m[0] - 1e-3) < 1e-15, m[0]\n"
      "assert abs(m[-1] - 0.5) < 1e-9, m[-1]\n"
      "assert np.all(np.diff(r) < 0)\n"
      "assert f['trajectory/Q'].shape == (len(t), 1, 1)\n"
      "T = f['events/escape'][()]\n"
      "exact = (-1/1.5 + math.atanh(0.5)/3) - (-1/3e-3 + math.atanh(1e-3)/3)\n"
      "assert abs(T - exact) < 1e-8 * exact, (T, exact)\n"
      "assert f['events/escape'].attrs['occurred'] == 1\n"
      "a = f.attrs\n"
      "assert isinstance(a['model'], str) and 'd = 1e6' in a['model'], a['model']\n"
      "assert a['version'] and 'moeflow flow' in a['command'] and a['d'] == 1000000\n"
      "assert a['termination'] == 'stopped_on_event' and a['seed'] == 1\n"
      "print('h5py ok', len(t), T)\n";
  ASSERT_EQ(moeflow::testing::RunPython(script, &output), 0) << output;
  EXPECT_NE(output.find("h5py ok"), std::string::npos) << output;
}

// The committee model has two events that happen one after the other: the plateau, then the
// specialisation. Their order is printed and stored as each event's `rank`.
TEST(FlowCli, EventOrderIsPrintedAndStoredAsRanks) {
  const std::string out = TempDir() + "/committee.h5";
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " flow " + ModelPath("committee_erf_k2m2.ini") + " -o " + out, &output), 0)
      << output;
  EXPECT_NE(output.find("event order:    plateau specialised"), std::string::npos) << output;
  const std::string script =
      "import h5py\n"
      "f = h5py.File('" + out + "', 'r')\n"
      "e = f['events']\n"
      "assert e['plateau'].attrs['rank'] == 1 and e['specialised'].attrs['rank'] == 2\n"
      "assert e['plateau'][()] < e['specialised'][()]\n"
      "print('ranks ok')\n";
  ASSERT_EQ(moeflow::testing::RunPython(script, &output), 0) << output;
}

struct BadCase {
  std::string args;
  std::string message;  // a part the error message must contain
};

TEST(FlowCli, BadInputExitsNonZeroLeavesNoFileAndKeepsAnExistingOne) {
  const std::string dir = TempDir();
  const std::string model = ModelPath("single_index_he3.ini");
  const std::vector<BadCase> cases = {
      {"/no/such/model.ini", "'/no/such/model.ini': cannot be opened"},
      {model + " --set bogus.key=1", "key 'bogus.key': value '1' is not used by this model"},
      {model + " --set d=0", "key 'd': value '0' must be an integer >= 1"},
      {model + " --set d=-3", "key 'd': value '-3' must be an integer >= 1"},
      {model + " --set student.link=nolink", "key 'student.link': value 'nolink' is not a valid link"},
      {model + " --set integrate.stepper=euler", "key 'integrate.stepper': value 'euler' is not a known stepper"},
      {model + " --set integrate.t_end=1x", "key 'integrate.t_end': value '1x' is not a finite number"},
      {model + " --no-such-option", "unrecognised option"},
      {model + " --qiuet", "unrecognised option '--qiuet'; did you mean '--quiet'?"},
      {model + " --set integrate.tend=3", "unknown key; did you mean 'integrate.t_end'?"},
  };
  for (const BadCase& c : cases) {
    const std::string fresh = dir + "/fresh.h5";
    std::string output;
    EXPECT_EQ(RunCommand(CliPath() + " flow " + c.args + " -o " + fresh, &output), 2) << c.args << "\n" << output;
    EXPECT_NE(output.find(c.message), std::string::npos) << c.args << "\n" << output;
    EXPECT_FALSE(std::filesystem::exists(fresh)) << c.args;
  }
  EXPECT_EQ(FilesIn(dir), 0u);

  // An existing file stays byte-identical when a later run fails.
  const std::string existing = dir + "/existing.h5";
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " flow " + model + " -o " + existing, &output), 0) << output;
  const std::string before = ReadAll(existing);
  EXPECT_EQ(RunCommand(CliPath() + " flow " + model + " --set d=0 -o " + existing, &output), 2);
  EXPECT_EQ(ReadAll(existing), before);
  EXPECT_EQ(FilesIn(dir), 1u);  // no temporary left behind
}

// `-o` naming the model file itself (or any file that is not a result) would have replaced it with
// the result: it is refused before the run and the file is kept byte for byte. An empty file, and
// an existing result of the same kind, are replaced as before.
TEST(FlowCli, AnExistingFileThatIsNotAResultIsNeverReplaced) {
  const std::string dir = TempDir();
  const std::string model = dir + "/model.ini";
  std::filesystem::copy_file(ModelPath("single_index_he3.ini"), model);
  const std::string text = ReadAll(model);
  std::string output;
  EXPECT_EQ(RunCommand(CliPath() + " flow " + model + " -q -o " + model, &output), 2) << output;
  EXPECT_NE(output.find("key '--output': value '" + model + "' is an existing non-HDF5 file (the model file? notes?): "
                        "moeflow replaces only HDF5 files"),
            std::string::npos)
      << output;
  EXPECT_EQ(ReadAll(model), text);
  std::ofstream(dir + "/empty.h5").close();
  ASSERT_EQ(RunCommand(CliPath() + " flow " + model + " -q -o " + dir + "/empty.h5", &output), 0) << output;
  ASSERT_EQ(RunCommand(CliPath() + " flow " + model + " -q -o " + dir + "/empty.h5", &output), 0) << output;
  // plot: the same rule for PNG files; the model and the result stay as they are.
  EXPECT_EQ(RunCommand(CliPath() + " plot " + dir + "/empty.h5 -o " + model, &output), 2) << output;
  EXPECT_NE(output.find("is an existing non-PNG file"), std::string::npos) << output;
  EXPECT_EQ(RunCommand(CliPath() + " plot " + dir + "/empty.h5 -o " + dir + "/empty.h5", &output), 2) << output;
  EXPECT_EQ(ReadAll(model), text);
  EXPECT_EQ(FilesIn(dir), 2u);  // the model and the result, no picture, no temporary
}

// The output path is checked before the run (exit 2, bad input), not when the run has ended
// (exit 1, a write error after the work): a mistyped folder costs no computing time.
TEST(FlowCli, AnOutputPathThatCannotBeWrittenIsRejectedBeforeTheRun) {
  const std::string dir = TempDir();
  const std::string model = ModelPath("single_index_he3.ini");
  std::ofstream(dir + "/plain") << "a file, not a folder";
  const std::vector<BadCase> cases = {
      {dir + "/no/such/out.h5", "key '--output': value '" + dir + "/no/such/out.h5' must be in an existing folder: '" +
                                    dir + "/no/such' does not exist"},
      {dir, "key '--output': value '" + dir + "' must name a file, not a folder"},
      {dir + "/", "must name a file, not a folder"},
      {dir + "/plain/out.h5", "must be in a folder: '" + dir + "/plain' is not one"},
      {dir + "/plain/sub/out.h5",
       "must be in an existing folder: '" + dir + "/plain/sub' does not exist ('" + dir + "/plain' is not a folder)"},
  };
  for (const BadCase& c : cases) {
    std::string output;
    EXPECT_EQ(RunCommand(CliPath() + " flow " + model + " -o " + c.args, &output), 2) << c.args << "\n" << output;
    EXPECT_NE(output.find(c.message), std::string::npos) << c.args << "\n" << output;
    EXPECT_EQ(output.find("accepted steps"), std::string::npos) << "the flow ran: " << output;
  }
  // Every command that writes a file checks it the same way, before it runs anything.
  std::string output;
  const std::string flow_file = dir + "/flow.h5";
  ASSERT_EQ(RunCommand(CliPath() + " flow " + model + " --quiet -o " + flow_file, &output), 0) << output;
  const std::string bad = dir + "/no/such/out";
  for (const std::string& command :
       {"sgd " + model, "compare " + model + " --d 100", "verify " + model, "sweep " + model + " --grid d=100,200",
        "plot " + flow_file}) {
    EXPECT_EQ(RunCommand(CliPath() + " " + command + " -o " + bad, &output), 2) << command << "\n" << output;
    EXPECT_NE(output.find("key '--output': value '" + bad + "' must be in an existing folder"), std::string::npos)
        << command << "\n" << output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/no"));
  EXPECT_EQ(FilesIn(dir), 2u);  // plain and flow.h5: no probe file left behind
}

// --dry-run checks the model like a run and prints it resolved, and writes nothing: the text it
// prints is a model file that reproduces the run, so printing that file again gives it back.
TEST(FlowCli, ADryRunPrintsTheResolvedModelAndWritesNothing) {
  const std::string dir = TempDir();
  const std::string model = ModelPath("single_index_he3.ini");
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " flow " + model + " --dry-run --set d=1e6 --set integrate.t_end=7 -o " + dir +
                           "/run.h5 2>/dev/null",
                       &output),
            0)
      << output;
  EXPECT_EQ(FilesIn(dir), 0u);
  // One student and one teacher: m = w·w* and Q = |w|².
  EXPECT_NE(output.find("State: 2 order parameters at d = 1000000. Events: 1. Stages: 1."), std::string::npos)
      << output;
  EXPECT_NE(output.find("\nt_end = 7\n"), std::string::npos) << output;
  EXPECT_NE(output.find("\nstepper = dopri5\n"), std::string::npos) << output;  // a default, written out
  const std::string resolved = dir + "/resolved.ini";
  std::ofstream(resolved) << output;
  std::string again;
  ASSERT_EQ(RunCommand(CliPath() + " flow " + resolved + " -n 2>/dev/null", &again), 0) << again;
  const auto body = [](const std::string& text) { return text.substr(text.find("\nd = ")); };
  EXPECT_EQ(body(again), body(output));
  // A model that would not run fails the same way, with nothing written.
  EXPECT_EQ(RunCommand(CliPath() + " flow " + model + " --dry-run --set d=0 -o " + dir + "/bad.h5", &output), 2);
  EXPECT_NE(output.find("key 'd': value '0' must be an integer >= 1"), std::string::npos) << output;
  EXPECT_EQ(FilesIn(dir), 1u);  // resolved.ini only
}

TEST(FlowCli, HelpDocumentsEveryOption) {
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " flow --help", &output), 0);
  for (const char* part :
       {"--output", "--set", "--quiet", "--dry-run", "dopri5", "bulirsch_stoer", "[event.NAME]", "relu"}) {
    EXPECT_NE(output.find(part), std::string::npos) << part;
  }
  ASSERT_EQ(RunCommand(CliPath() + " --help", &output), 0);
  EXPECT_NE(output.find("flow"), std::string::npos);
  EXPECT_EQ(RunCommand(CliPath() + " nosuchcommand", &output), 2);
  EXPECT_NE(output.find("unknown command 'nosuchcommand' (see moeflow --help)"), std::string::npos) << output;
  EXPECT_EQ(RunCommand(CliPath() + " flwo", &output), 2);
  EXPECT_NE(output.find("unknown command 'flwo'; did you mean 'flow'?"), std::string::npos) << output;
}

TEST(FlowCli, AnAbnormalEndingIsAnOutcomeWithNumbersAndTheFileIsWritten) {
  const std::string out = TempDir() + "/div.h5";
  std::string output;
  // A divergence threshold below the initial overlaps' scale forces the outcome.
  EXPECT_EQ(RunCommand(CliPath() + " flow " + ModelPath("single_index_he3.ini") +
                           " --set integrate.divergence=0.5 --set event.escape.stop=false -o " + out, &output),
            3)
      << output;
  EXPECT_NE(output.find("diverged: max |x| = "), std::string::npos) << output;
  EXPECT_TRUE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace moeflow
