// `moeflow plot` draws every file type (flow, sgd, compare, verify, sweep) to a PNG (checked by its signature
// and size), and rejects a missing file or a file of another kind with exit 2 and no picture.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::CliPath;
using testing::ModelPath;
using testing::RunCommand;
using testing::TempDir;

bool IsPng(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[8] = {};
  in.read(head, 8);
  return in.gcount() == 8 && std::string(head + 1, 3) == "PNG" && std::filesystem::file_size(path) > 10000;
}

TEST(PlotCli, DrawsFlowSgdCompareAndVerifyFiles) {
  const std::string dir = TempDir();
  const std::string model = ModelPath("committee_erf_k2m2.ini");
  std::string output;
  struct Case {
    std::string run, file;
  };
  for (const Case& c : std::vector<Case>{
           {" flow " + model + " --set integrate.t_end=50 -q -o ", dir + "/flow.h5"},
           {" sgd " + model + " --set d=200 --set integrate.t_end=20 --seeds 3 -q -o ", dir + "/sgd.h5"},
           {" compare " + model + " --d 100,400 --seeds 2 --set integrate.t_end=10 -q -o ", dir + "/compare.h5"},
           {" verify " + model + " -q -o ", dir + "/verify.h5"}}) {
    ASSERT_EQ(RunCommand(CliPath() + c.run + c.file, &output), 0) << output;
    const std::string png = c.file + ".png";
    ASSERT_EQ(RunCommand(CliPath() + " plot " + c.file + " --log-time -o " + png, &output), 0) << output;
    EXPECT_TRUE(IsPng(png)) << png;
  }
  // Not a moeflow result: exit 2, no picture.
  const std::string text = dir + "/not.h5";
  std::ofstream(text) << "hello";
  EXPECT_EQ(RunCommand(CliPath() + " plot " + text + " -o " + dir + "/not.png", &output), 2) << output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/not.png"));
  EXPECT_EQ(RunCommand(CliPath() + " plot " + dir + "/missing.h5", &output), 2) << output;
  EXPECT_NE(output.find("missing.h5"), std::string::npos) << output;
}

// A sweep's picture when some or all points failed (nan in their columns) and no event happened
// anywhere (every event column nan): the log axes once crashed the script on such files
// ("Data has no positive values").
TEST(PlotCli, DrawsASweepWhosePointsFailedOrSawNoEvent) {
  const std::string dir = TempDir();
  const std::string sweep = CliPath() + " sweep " + ModelPath("committee_erf_k2m2.ini") + " --set integrate.t_end=1 -q";
  std::string output;
  // By t = 1 neither event (plateau, specialised) has happened; d on a log axis.
  EXPECT_EQ(RunCommand(sweep + " --grid d=100,1000 -o " + dir + "/none.h5", &output), 0) << output;
  EXPECT_EQ(RunCommand(sweep + " --grid d=100,0 -o " + dir + "/some.h5", &output), 3) << output;  // d = 0 fails
  EXPECT_EQ(RunCommand(sweep + " --grid d=0,-1 -o " + dir + "/all.h5", &output), 2) << output;    // both fail
  for (const std::string name : {"none", "some", "all"}) {
    const std::string png = dir + "/" + name + ".png";
    EXPECT_EQ(RunCommand(CliPath() + " plot " + dir + "/" + name + ".h5 -o " + png, &output), 0) << output;
    EXPECT_TRUE(std::filesystem::exists(png) && std::filesystem::file_size(png) > 10000) << png;
  }
}

}  // namespace
}  // namespace moeflow
