// student.init = informed and explicit: the initial Gram matrix is the one asked for (the
// single-index escape from a given m0 matches the closed form T(m0 → 0.5), theory.md §3.1), and
// impossible overlaps are rejected by key.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "moeflow/error.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/protocol.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

// The shipped model without the keys of other initialisations (m0, q0: a model file may not carry
// keys its choices do not use).
FlowSetup Build(const char* file, const std::vector<std::string>& overrides) {
  std::ifstream in(testing::ModelPath(file));
  std::stringstream text;
  text << in.rdbuf();
  std::string kept, line;
  const bool explicit_init =
      std::find(overrides.begin(), overrides.end(), std::string("student.init=explicit")) != overrides.end();
  while (std::getline(text, line)) {
    if (!(explicit_init && (line.rfind("m0", 0) == 0 || line.rfind("q0", 0) == 0))) kept += line + "\n";
  }
  io::ModelFile model = io::ModelFile::Parse(kept, file);
  for (const std::string& s : overrides) model.Set(s);
  return BuildFlow(model);
}

double EscapeTime(const FlowSetup& setup) {
  Trajectory trajectory;
  std::vector<StageRecord> stages;
  const RunSummary s =
      RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events, setup.stages, &trajectory, &stages);
  return s.events.front().time;
}

TEST(InitialOverlaps, ExplicitAndInformedStartWhereAsked) {
  auto primitive = [](double m) { return -1.0 / (3.0 * m) + std::atanh(m) / 3.0; };
  const double expected = primitive(0.5) - primitive(0.3);
  const FlowSetup e = Build("single_index_he3.ini", {"student.init=explicit", "student.M=0.3"});
  EXPECT_DOUBLE_EQ(e.initial_gram(0, 1), 0.3);
  EXPECT_NEAR(EscapeTime(e) / expected, 1.0, 1e-8);
  const FlowSetup i = Build("single_index_he3.ini", {"student.init=informed", "student.m0=0.3"});
  EXPECT_NEAR(EscapeTime(i) / expected, 1.0, 1e-8);
  // Informed committee: student i starts on teacher i only; q0 between students.
  const FlowSetup c = Build("committee_erf_k2m2.ini", {"student.init=informed", "student.m0=0.4", "student.q0=0.1"});
  Eigen::MatrixXd want(4, 4);
  want << 0.25, 0.025, 0.2, 0, 0.025, 0.25, 0, 0.2, 0.2, 0, 1, 0, 0, 0.2, 0, 1;  // free vectors, norm 0.5
  EXPECT_LE((c.initial_gram - want).cwiseAbs().maxCoeff(), 1e-15) << c.initial_gram;
  // Informed gated model: expert i with teacher expert i mod m*, router i with teacher router.
  const FlowSetup g = Build("soft_routed_moe.ini", {"student.units=3", "teacher.units=2", "student.init=informed",
                                                    "student.m0=0.5", "student.routers_orthogonal=false"});
  // Vectors: experts 0-2, routers 3-5, teacher experts 6-7, teacher routers 8-9.
  EXPECT_EQ(g.initial_gram(2, 6), 0.5);  // expert 2 → teacher expert 0
  EXPECT_EQ(g.initial_gram(4, 9), 0.5);  // router 1 → teacher router 1
  EXPECT_EQ(g.initial_gram(0, 8), 0.0);  // no expert-router overlap
}

TEST(InitialOverlaps, ImpossibleOverlapsAreRejectedByKey) {
  struct Case {
    std::vector<std::string> overrides;
    const char* key;
  };
  for (const Case& c : std::vector<Case>{{{"student.init=explicit", "student.M=0.3, 0.2"}, "student.M"},
                                        {{"student.init=explicit", "student.M=1.5"}, "positive semi-definite"},
                                        {{"student.init=explicit", "student.M=0.3", "student.Q=2"}, "student.Q"},
                                        {{"student.init=informed", "student.m0=2"}, "student.m0"},
                                        {{"student.init=guess"}, "student.init"}}) {
    try {
      Build("single_index_he3.ini", c.overrides);
      ADD_FAILURE() << "accepted " << c.overrides.back();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.key), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace moeflow
