// Model files: parsing, overrides, typed access, and the messages for bad input (each names
// the key, the value and the rule).
#include <gtest/gtest.h>

#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::ModelPath;

// Builds the single-index model with overrides; returns the InputError message ("" if none).
std::string BuildError(const std::vector<std::string>& overrides) {
  try {
    io::ModelFile model = io::ModelFile::Load(ModelPath("single_index_he3.ini"));
    for (const std::string& s : overrides) model.Set(s);
    BuildFlow(model);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// The InputError message of f() ("" if it throws none).
template <typename F>
std::string CatchInputError(F f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

void ExpectMessageHas(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos) << "message: " << message << "\nexpected: " << part;
}

TEST(ModelFile, SectionsBecomeDottedKeysAndCommentsAreIgnored) {
  const io::ModelFile m = io::ModelFile::Parse("d = 10  # comment\n[student]\nlink = h(2)\n", "text");
  EXPECT_EQ(m.GetInteger("d", 1), 10);
  EXPECT_EQ(m.GetString("student.link"), "h(2)");
}

TEST(ModelFile, OverridesReplaceAndAddKeys) {
  io::ModelFile m = io::ModelFile::Parse("d = 10\n", "text");
  m.Set("d=1e6");
  m.Set("student.q0 = 0.25");
  EXPECT_EQ(m.GetInteger("d", 1), 1000000);
  EXPECT_EQ(m.GetDouble("student.q0", 0.0), 0.25);
  EXPECT_THROW(m.Set("no-equals-sign"), InputError);
}

TEST(ModelFile, AnEmptyOverrideRemovesTheKey) {
  io::ModelFile m = io::ModelFile::Parse("d = 10\n[integrate]\nt_end = 5\n", "text");
  m.Set("integrate.t_end=");
  EXPECT_FALSE(m.Has("integrate.t_end"));
  EXPECT_EQ(m.GetDouble("integrate.t_end", 7.0), 7.0);  // the default
  m.Set("absent= ");                                    // removing an absent key is harmless
  EXPECT_FALSE(m.Has("absent"));
  EXPECT_EQ(m.Overrides(), (std::vector<std::string>{"integrate.t_end=", "absent="}));
}

// cluster_moe.ini sets population.gate_nodes, a key of the quadrature backend: switched to the
// sampled backend, the model names why the key is not read and how to drop it.
TEST(BadInput, AKeyOfAnotherBackendSaysWhichBackendReadsIt) {
  io::ModelFile model = io::ModelFile::Load(ModelPath("cluster_moe.ini"));
  model.Set("population.backend=sampled");
  try {
    BuildFlow(model);
    ADD_FAILURE() << "population.gate_nodes was accepted by the sampled backend";
  } catch (const InputError& e) {
    ExpectMessageHas(e.what(), "key 'population.gate_nodes': value '65' is not used by this model: it applies to "
                               "population.backend = quadrature, and this run uses sampled (remove it, or drop it "
                               "with --set population.gate_nodes=)");
  }
  model.Set("population.gate_nodes=");
  EXPECT_NO_THROW(BuildFlow(model));
  ExpectMessageHas(BuildError({"population.samples=100"}),
                   "key 'population.samples': value '100' is not used by this model: it applies to "
                   "population.backend = sampled, and this run uses exact");
  ExpectMessageHas(BuildError({"dynamics.lr=0.5"}), "it applies to dynamics.kind = online_sgd, and this run is "
                                                    "gradient_flow");
  ExpectMessageHas(BuildError({"student.init=random"}), "key 'student.m0': value 'auto' is not used by this model: it "
                                                         "applies to student.init = uniform or informed, and this "
                                                         "model's is random");
}

TEST(ModelFile, ResolvedTextReproducesTheModel) {
  io::ModelFile m = io::ModelFile::Load(ModelPath("single_index_he3.ini"));
  m.Set("d=1e6");
  const FlowSetup a = BuildFlow(m);
  const io::ModelFile again = io::ModelFile::Parse(m.ResolvedText(), "resolved");
  const FlowSetup b = BuildFlow(again);
  EXPECT_EQ(a.d, b.d);
  EXPECT_EQ(a.initial_state, b.initial_state);
  EXPECT_EQ(a.options.output_times, b.options.output_times);
  EXPECT_EQ(again.ResolvedText(), m.ResolvedText());
}

// The message of Parse(text), or "" if it parses.
std::string ParseError(const std::string& text) {
  try {
    io::ModelFile::Parse(text, "m.ini");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(ModelFile, DuplicateKeysAreRejectedWithBothLines) {
  EXPECT_EQ(ParseError("d = 1\n\n# a comment\nd = 2\n"),
            "model file 'm.ini', line 4: key 'd' is given twice (first on line 1; each key may appear once)");
  // The same name in two sections is two keys; a section given twice continues it.
  EXPECT_EQ(ParseError("[student]\nlink = relu\n[teacher]\nlink = relu\n"), "");
  EXPECT_EQ(ParseError("[student]\nlink = relu\n[teacher]\nunits = 2\n[student]\nlink = tanh\n"),
            "model file 'm.ini', line 6: key 'student.link' is given twice (first on line 2; each key may appear "
            "once)");
}

TEST(ModelFile, ASyntaxErrorNamesItsLine) {
  EXPECT_EQ(ParseError("d = 10\n[student\nlink = relu\n"),
            "model file 'm.ini', line 2: '[student' opens a section but does not close it: write [name] alone on "
            "its line");
  EXPECT_EQ(ParseError("d = 10\n\nd_max 10   # no '='\n"),
            "model file 'm.ini', line 3: 'd_max 10' is not key = value, a [section] or a comment (# ...)");
  EXPECT_EQ(ParseError("d = 10\n = 3\n"), "model file 'm.ini', line 2: '= 3' has no key before '='");
  EXPECT_EQ(ParseError("[ ]\nd = 10\n"), "model file 'm.ini', line 1: '[ ]' names no section: write [name]");
}

// Reference: Boost.Program_options' INI reader (parse_config_file), which read the model files
// until moeflow's parser gave line numbers. Both must read the same keys and values from every
// shipped model and from a text with each rule's corner: comments after values and on their own
// lines, CRLF line ends, a dotted section, '=' inside a value, blanks around everything.
TEST(ModelFile, ParsesEveryShippedModelAsBoostProgramOptionsDoes) {
  std::vector<std::pair<std::string, std::string>> texts;  // (origin, text)
  for (const auto& entry : std::filesystem::directory_iterator(MOEFLOW_MODELS_DIR)) {
    if (entry.path().extension() != ".ini") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    texts.emplace_back(entry.path().filename().string(), text.str());
  }
  ASSERT_GE(texts.size(), 7u);
  texts.emplace_back("corners",
                     "d = 10 # after a value\r\n  # a comment line = 3\n\t seed=  7\t\n[check.a]\nset = seed=2, d=3\n"
                     "[integrate.]\nt_end=5#\nlist = 1, 2 ,3\n[student]   \nlink = hermite(0, 1)  \n");
  for (const auto& [origin, text] : texts) {
    SCOPED_TRACE(origin);
    std::istringstream in(text);
    const boost::program_options::parsed_options reference =
        boost::program_options::parse_config_file(in, boost::program_options::options_description(), true);
    const io::ModelFile model = io::ModelFile::Parse(text, origin);
    for (const boost::program_options::option& o : reference.options) {
      ASSERT_TRUE(model.Has(o.string_key)) << o.string_key;
      EXPECT_EQ(model.GetString(o.string_key), o.value.front()) << o.string_key;
    }
    EXPECT_NO_THROW(model.CheckAllKeysUsed());  // and no key Boost did not read
    if (origin == "corners") {
      EXPECT_EQ(reference.options.size(), 6u);
    }
  }
}

TEST(ModelFile, MissingFileIsRejectedWithItsPath) {
  try {
    io::ModelFile::Load("/no/such/model.ini");
    FAIL();
  } catch (const InputError& e) {
    ExpectMessageHas(e.what(), "/no/such/model.ini");
  }
}

// What is not a model file is called so, not read as one with "key 'd' is required but missing"
// (a folder) or a syntax error quoting binary bytes (a result file given by mistake).
TEST(ModelFile, AFolderAResultOrABinaryFileIsNamedAsSuch) {
  const std::string dir = testing::TempDir();
  ExpectMessageHas(CatchInputError([&] { io::ModelFile::Load(dir); }), "model file '" + dir + "': is a folder, not a file");
  std::ofstream(dir + "/result.h5", std::ios::binary) << std::string("\x89HDF\r\n\x1a\n\0\0", 10);
  ExpectMessageHas(CatchInputError([&] { io::ModelFile::Load(dir + "/result.h5"); }),
                   "model file '" + dir + "/result.h5': is an HDF5 file (a result: moeflow inspect reads it)");
  ExpectMessageHas(CatchInputError([&] { io::ModelFile::Parse(std::string("d = 10\n\0\x01\n", 10), "bin"); }),
                   "model file 'bin': is not text (it holds NUL bytes)");
}

TEST(BadInput, UnknownKeyNamesTheKeyAndValue) {
  ExpectMessageHas(BuildError({"student.lnik=relu"}), "key 'student.lnik': value 'relu' is not used by this model");
}

// Reference: distances counted by hand (one edit per inserted, deleted, replaced or swapped
// character).
TEST(DidYouMean, EditDistanceCountsInsertionsDeletionsSubstitutionsAndSwaps) {
  EXPECT_EQ(detail::EditDistance("", ""), 0u);
  EXPECT_EQ(detail::EditDistance("", "abc"), 3u);
  EXPECT_EQ(detail::EditDistance("abc", ""), 3u);
  EXPECT_EQ(detail::EditDistance("t_end", "tend"), 1u);         // a deletion
  EXPECT_EQ(detail::EditDistance("dopri5", "dorpi5"), 1u);      // a swap of neighbours
  EXPECT_EQ(detail::EditDistance("kitten", "sitting"), 3u);     // the textbook case
  EXPECT_EQ(detail::EditDistance("Integrate", "integrate"), 0u);  // ASCII case is ignored
  EXPECT_EQ(detail::EditDistance("ca", "abc"), 3u);             // a swap is not edited again (OSA)
}

TEST(DidYouMean, NearestNamesHintOnlyWhatIsNear) {
  const std::vector<std::string> keys = {"d", "seed", "student.lr", "sgd.lr", "integrate.t_end", "integrate.rel_tol"};
  using V = std::vector<std::string>;
  EXPECT_EQ(detail::NearestNames("integrate.tend", keys), V{"integrate.t_end"});
  EXPECT_EQ(detail::NearestNames("integrate.reltol", keys), V{"integrate.rel_tol"});
  EXPECT_EQ(detail::NearestNames("sede", keys), V{"seed"});
  // Nothing near: no hint, not the least bad guess.
  EXPECT_EQ(detail::NearestNames("bogus.key", keys), V{});
  EXPECT_EQ(detail::NearestNames("integrate.stepsize", keys), V{});
  // The right name in the wrong section, or without one; every section that has it.
  EXPECT_EQ(detail::NearestNames("sgd.t_end", keys), V{"integrate.t_end"});
  EXPECT_EQ(detail::NearestNames("t_end", keys), V{"integrate.t_end"});
  EXPECT_EQ(detail::NearestNames("lr", keys), (V{"student.lr", "sgd.lr"}));
  EXPECT_EQ(detail::DidYouMean("lr", keys), "; did you mean 'student.lr' or 'sgd.lr'?");
  EXPECT_EQ(detail::DidYouMean("integrate.tend", keys), "; did you mean 'integrate.t_end'?");
  EXPECT_EQ(detail::DidYouMean("bogus.key", keys), "");
}

// Every message for a misspelt name gives the nearest right one, with the full list as before.
TEST(BadInput, AMisspeltNameIsAnsweredWithTheNearestRightOne) {
  const std::string key = BuildError({"integrate.tend=3"});
  ExpectMessageHas(key, "key 'integrate.tend': value '3' is not used by this model: unknown key; did you mean "
                        "'integrate.t_end'? (known keys: d, seed,");
  ExpectMessageHas(BuildError({"sgd.t_end=3"}), "did you mean 'integrate.t_end'?");
  ExpectMessageHas(BuildError({"integrate.stepper=dorpi5"}), "is not a known stepper; did you mean 'dopri5'? (known:");
  ExpectMessageHas(BuildError({"student.link=sigmiod"}),
                   "unknown link name 'sigmiod'; did you mean 'sigmoid'? (known:");
  // A parameterised link's argument run on to its name: the call it was meant to be.
  ExpectMessageHas(BuildError({"student.link=he3"}), "unknown link name 'he3'; did you mean 'he(3)'? (known:");
  ExpectMessageHas(BuildError({"student.link=h12"}), "unknown link name 'h12'; did you mean 'h(12)'? (known:");
  // Not for a link without arguments ('relu6' is no relu(6)): the nearest name as before.
  ExpectMessageHas(BuildError({"student.link=relu6"}), "unknown link name 'relu6'; did you mean 'relu'? (known:");
  ExpectMessageHas(BuildError({"event.escape.observable=m_ab"}), "names no observable 'm_ab'; did you mean 'm_abs'?");
  ExpectMessageHas(BuildError({"output.grid=lgo"}), "is not one of: log, linear; did you mean 'log'?");
  // Far from every name: the message stays as it was, with no guess.
  EXPECT_EQ(BuildError({"bogus.key=1"}).find("did you mean"), std::string::npos);
}

TEST(BadInput, NonPositiveDimensionIsRejected) {
  ExpectMessageHas(BuildError({"d=0"}), "key 'd': value '0' must be an integer >= 1");
  ExpectMessageHas(BuildError({"d=-5"}), "key 'd': value '-5' must be an integer >= 1");
  ExpectMessageHas(BuildError({"d=2.5"}), "key 'd': value '2.5' must be an integer >= 1");
}

// A count is rejected above its maximum, never wrapped: output.points =
// 4294967297 (2^32 + 1) was read as 1 point, 1e10 as 1410065408 and 3e9 as a negative count.
TEST(BadInput, ACountTooLargeForItsTypeIsRejectedNotWrapped) {
  ExpectMessageHas(BuildError({"output.points=4294967297"}),
                   "key 'output.points': value '4294967297' must be an integer in [1, 10000000]");
  ExpectMessageHas(BuildError({"output.points=2e7"}), "key 'output.points': value '2e7' must be an integer in [1, 10000000]");
  ExpectMessageHas(BuildError({"student.units=4294967297"}),
                   "key 'student.units': value '4294967297' must be an integer in [1, 2147483647]");
  // A 64-bit count says its range too: above 9e15 (2^53) integers are not exact in a double.
  ExpectMessageHas(BuildError({"d=1e30"}), "key 'd': value '1e30' must be an integer in [1, 9e15]");
  EXPECT_EQ(BuildError({"output.points=1e7"}), "");  // the maximum itself is fine (the model is small)
  io::ModelFile model = io::ModelFile::Parse("n = 2147483647\nm = 2147483648\n", "counts");
  EXPECT_EQ(model.GetInt("n", 1, 1), 2147483647);
  ExpectMessageHas(CatchInputError([&] { model.GetInt("m", 1, 1); }), "key 'm': value '2147483648' must be an integer in [1, 2147483647]");
  ExpectMessageHas(CatchInputError([&] { model.GetInt("n", 1, 1, 100); }), "key 'n': value '2147483647' must be an integer in [1, 100]");
}

TEST(BadInput, MalformedNumberIsRejected) {
  ExpectMessageHas(BuildError({"integrate.rel_tol=1e-x"}), "key 'integrate.rel_tol': value '1e-x' is not a finite number");
  ExpectMessageHas(BuildError({"d=ten"}), "key 'd': value 'ten' is not a number");
}

TEST(BadInput, UnknownLinkAndStepperAreRejected) {
  ExpectMessageHas(BuildError({"student.link=swish2"}), "key 'student.link': value 'swish2' is not a valid link");
  ExpectMessageHas(BuildError({"integrate.stepper=rk99"}), "key 'integrate.stepper': value 'rk99' is not a known stepper");
}

TEST(BadInput, ImpossibleInitialOverlapsAreRejected) {
  // Two students with overlap 0.9 to the teacher but orthogonal to each other: not a Gram matrix.
  ExpectMessageHas(BuildError({"student.units=2", "student.m0=0.9", "student.q0=0"}), "not positive semi-definite");
  ExpectMessageHas(BuildError({"student.m0=1.5"}), "key 'student.m0': value '1.5'");
}

TEST(BadInput, BadEventsAreRejected) {
  ExpectMessageHas(BuildError({"event.escape.observable=mm"}), "key 'event.escape.observable': value 'mm' names no observable 'mm'");
  ExpectMessageHas(BuildError({"event.escape.op==="}), "key 'event.escape.op'");
  ExpectMessageHas(BuildError({"event.bad.op=>="}), "key 'event.bad.observable' is required");
}

}  // namespace
}  // namespace moeflow
