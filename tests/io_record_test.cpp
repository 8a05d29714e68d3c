// HDF5 result files: exact round trip of every dataset rank and attribute kind, atomic
// replacement, and failures that leave an existing file untouched.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "moeflow/error.hpp"
#include "moeflow/io/record.hpp"
#include "test_util.hpp"

namespace moeflow::io {
namespace {

using moeflow::testing::CliPath;
using moeflow::testing::RunCommand;
using moeflow::testing::TempDir;

Group SampleTree() {
  Group root;
  root.attributes = {{"text", std::string("line one\nline two ü")},
                     {"number", 2.5},
                     {"count", std::int64_t{-7}},
                     {"list", std::vector<double>{1, 2, 3}}};
  root.datasets.push_back({"scalar", {}, {3.25}, {{"description", std::string("a scalar")}}});
  Group& a = root.Subgroup("a");
  a.datasets.push_back({"vector", {3}, {1, 2, 3}, {}});
  a.datasets.push_back({"matrix", {2, 3}, {1, 2, 3, 4, 5, 6}, {}});
  a.datasets.push_back({"cube", {2, 1, 2}, {-1, 0.5, 1e-300, 1e300}, {}});
  a.datasets.push_back({"empty", {0}, {}, {}});
  a.Subgroup("deeper").attributes["flag"] = std::int64_t{1};
  return root;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(Hdf5File, RoundTripIsExact) {
  const std::string path = TempDir() + "/tree.h5";
  const Group written = SampleTree();
  WriteFileAtomically(path, written);
  const Group read = ReadFile(path);
  EXPECT_EQ(read.attributes, written.attributes);
  for (const char* name : {"scalar", "a/vector", "a/matrix", "a/cube", "a/empty"}) {
    const Dataset* w = written.FindDataset(name);
    const Dataset* r = read.FindDataset(name);
    ASSERT_NE(r, nullptr) << name;
    EXPECT_EQ(r->shape, w->shape) << name;
    EXPECT_EQ(r->data, w->data) << name;
    EXPECT_EQ(r->attributes, w->attributes) << name;
  }
  ASSERT_NE(read.FindGroup("a/deeper"), nullptr);
  EXPECT_EQ(read.FindGroup("a/deeper")->attributes.at("flag"), AttributeValue(std::int64_t{1}));
}

TEST(Hdf5File, H5pyReadsStringsAsStrAndShapesAsWritten) {
  const std::string path = TempDir() + "/tree.h5";
  WriteFileAtomically(path, SampleTree());
  std::string output;
  const std::string script =
      "import h5py; f = h5py.File('" + path + "', 'r'); a = f.attrs\n"
      "assert isinstance(a['text'], str) and a['text'] == 'line one\\nline two \\u00fc', repr(a['text'])\n"
      "assert a['count'] == -7 and a['number'] == 2.5 and list(a['list']) == [1, 2, 3]\n"
      "assert f['a/cube'].shape == (2, 1, 2) and f['a/empty'].shape == (0,) and f['scalar'][()] == 3.25\n"
      "assert f['a/matrix'][1, 2] == 6 and f['a/matrix'].compression == 'gzip'\n"
      "print('ok')";
  ASSERT_EQ(moeflow::testing::RunPython(script, &output), 0) << output;
}

TEST(Hdf5File, WritingReplacesAnExistingFileWhole) {
  const std::string dir = TempDir();
  const std::string path = dir + "/out.h5";
  WriteFileAtomically(path, SampleTree());
  Group other;
  other.datasets.push_back({"only", {1}, {42}, {}});
  WriteFileAtomically(path, other);
  const Group read = ReadFile(path);
  EXPECT_EQ(read.datasets.size(), 1u);
  EXPECT_TRUE(read.groups.empty());
}

TEST(Hdf5File, AFailedWriteLeavesTheExistingFileAndNoTemporary) {
  const std::string dir = TempDir();
  const std::string path = dir + "/out.h5";
  WriteFileAtomically(path, SampleTree());
  const std::string before = ReadAll(path);
  Group bad = SampleTree();
  bad.Subgroup("a").datasets.push_back({"broken", {2, 2}, {1, 2, 3}, {}});  // 3 values for 4 places
  EXPECT_THROW(WriteFileAtomically(path, bad), Error);
  Group repeated;
  repeated.datasets.push_back({"x", {1}, {1}, {}});
  repeated.datasets.push_back({"x", {1}, {2}, {}});
  EXPECT_THROW(WriteFileAtomically(path, repeated), Error);
  EXPECT_EQ(ReadAll(path), before);
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1u);
}

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::size_t FilesIn(const std::string& dir) {
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  return files;
}

// A write that fails on its folder (removed during a run, or full) saves the result in $TMPDIR
// and says where, so a long run's result is not lost. Reference: the same tree written at a good
// path, both read back (Describe: every attribute and dataset). Data that cannot be written
// anywhere, and a missing $TMPDIR, leave no file and claim no rescue.
TEST(Hdf5File, AWriteThatFailsOnItsFolderSavesTheResultInTheTemporaryFolderAndSaysWhere) {
  const std::string dir = TempDir(), rescue_dir = TempDir();
  const ScopedEnv tmpdir("TMPDIR", rescue_dir);
  const std::string target = dir + "/removed/out.h5";
  std::string message;
  try {
    WriteFileAtomically(target, SampleTree());
    FAIL() << "the write to a missing folder succeeded";
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("cannot write '" + target + "'"), std::string::npos) << message;
  const std::string said = "the result is saved in '";
  const std::size_t at = message.find(said);
  ASSERT_NE(at, std::string::npos) << message;
  const std::string rescue = message.substr(at + said.size(), message.find('\'', at + said.size()) - at - said.size());
  EXPECT_EQ(std::filesystem::path(rescue).parent_path(), std::filesystem::path(rescue_dir)) << rescue;
  EXPECT_NE(rescue.find("out.h5"), std::string::npos) << rescue;
  WriteFileAtomically(dir + "/reference.h5", SampleTree());
  EXPECT_EQ(Describe(ReadFile(rescue)), Describe(ReadFile(dir + "/reference.h5")));
  EXPECT_EQ(FilesIn(rescue_dir), 1u) << "a temporary was left behind";

  Group bad = SampleTree();
  bad.Subgroup("a").datasets.push_back({"broken", {2, 2}, {1, 2, 3}, {}});
  try {
    WriteFileAtomically(target, bad);
    FAIL() << "a broken tree was written";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("saved in"), std::string::npos) << e.what();
  }
  EXPECT_EQ(FilesIn(rescue_dir), 1u);
  const ScopedEnv nowhere("TMPDIR", rescue_dir + "/missing");
  try {
    WriteFileAtomically(target, SampleTree());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("saved in"), std::string::npos) << e.what();
  }
  EXPECT_EQ(FilesIn(rescue_dir), 1u);
}

TEST(Hdf5File, ReadingAMissingOrForeignFileNamesIt) {
  const std::string dir = TempDir();
  try {
    ReadFile(dir + "/missing.h5");
    FAIL();
  } catch (const InputError& e) {  // a bad path given by the user: exit status 2
    EXPECT_NE(std::string(e.what()).find("missing.h5"), std::string::npos);
  }
  std::ofstream(dir + "/text.h5") << "not hdf5";
  EXPECT_THROW(ReadFile(dir + "/text.h5"), InputError);
}

TEST(InspectCli, PrintsDatasetsWithShapesAndFailsOnMissingFiles) {
  const std::string path = TempDir() + "/tree.h5";
  WriteFileAtomically(path, SampleTree());
  std::string output;
  ASSERT_EQ(RunCommand(CliPath() + " inspect " + path, &output), 0) << output;
  EXPECT_NE(output.find("/a/cube"), std::string::npos) << output;
  EXPECT_NE(output.find("(2 x 1 x 2)"), std::string::npos) << output;
  EXPECT_NE(output.find("line two"), std::string::npos) << output;
  // A missing or foreign file is bad input (2, as for `plot`), and nothing but the error is printed.
  EXPECT_EQ(RunCommand(CliPath() + " inspect " + path + ".missing", &output), 2);
  EXPECT_EQ(output, "moeflow inspect: error: cannot read '" + path + ".missing': no such file\n");
  std::ofstream(path + ".txt") << "not hdf5";
  EXPECT_EQ(RunCommand(CliPath() + " inspect " + path + ".txt", &output), 2);
  EXPECT_EQ(output, "moeflow inspect: error: cannot read '" + path + ".txt': not an HDF5 file\n");
  EXPECT_EQ(RunCommand(CliPath() + " inspect --help", &output), 0);
  EXPECT_EQ(RunCommand(CliPath() + " inspect", &output), 2);
}

}  // namespace
}  // namespace moeflow::io
