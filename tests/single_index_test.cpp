// The single-index He3 model against its closed-form escape time (theory.md §3.1):
//   T(m0 -> m1) = [-1/(3m) + atanh(m)/3]_{m0}^{m1},  m0 = d^(-1/2), m1 = 0.5.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <sstream>

#include "moeflow/integrate/integrator.hpp"
#include "moeflow/io/model_file.hpp"
#include "moeflow/models/model_builder.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::ModelPath;
using testing::RelativeError;

// Acceptance bound of issue #2: escape time within 1e-8 relative at default tolerances.
constexpr double kEscapeRelTol = 1e-8;

std::string Str(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

double ClosedFormEscape(double m0, double m1) {
  auto primitive = [](double m) { return -1.0 / (3.0 * m) + std::atanh(m) / 3.0; };
  return primitive(m1) - primitive(m0);
}

struct EscapeRun {
  double time = 0;
  long long steps = 0;
  Termination termination = Termination::kReachedEnd;
};

EscapeRun RunEscape(const std::vector<std::string>& overrides) {
  io::ModelFile model = io::ModelFile::Load(ModelPath("single_index_he3.ini"));
  for (const std::string& s : overrides) model.Set(s);
  const FlowSetup setup = BuildFlow(model);
  Trajectory trajectory;
  const RunSummary summary =
      Integrate(*setup.system, setup.initial_state, setup.options, setup.events, &trajectory);
  EXPECT_EQ(summary.events.size(), 1u);
  EXPECT_TRUE(summary.events[0].occurred) << summary.message;
  return {summary.events[0].time, summary.accepted_steps, summary.termination};
}

TEST(SingleIndexHe3, EscapeTimeMatchesClosedFormAtDefaultTolerances) {
  std::map<double, long long> steps;
  for (double d : {1e2, 1e4, 1e6, 1e8}) {
    const EscapeRun run = RunEscape({"d=" + Str(d)});
    const double expected = ClosedFormEscape(1.0 / std::sqrt(d), 0.5);
    EXPECT_EQ(run.termination, Termination::kStoppedOnEvent);
    EXPECT_LT(RelativeError(run.time, expected), kEscapeRelTol)
        << "d = " << d << ": escape " << run.time << " vs closed form " << expected;
    steps[d] = run.steps;
  }
  // Steps grow no faster than logarithmically in d: each factor 100 in d adds at most as many
  // steps as the first factor 100 did (plus slack of 25% for the controller's rounding).
  const double first_increment = static_cast<double>(steps[1e4] - steps[1e2]);
  EXPECT_LE(steps[1e6] - steps[1e4], 1.25 * first_increment + 5);
  EXPECT_LE(steps[1e8] - steps[1e6], 1.25 * first_increment + 5);
  for (const auto& [d, n] : steps) std::cout << "d = " << d << ": " << n << " accepted steps\n";
}

// Each stepper's error against the closed form falls as the tolerances are tightened.
class StepperConvergence : public ::testing::TestWithParam<std::string> {};

TEST_P(StepperConvergence, EscapeErrorFallsAsToleranceTightens) {
  const double d = 1e4;
  const double expected = ClosedFormEscape(1e-2, 0.5);
  double previous_error = 1.0;
  for (double tol : {1e-5, 1e-7, 1e-9, 1e-11}) {
    const EscapeRun run = RunEscape({"d=" + Str(d), "integrate.stepper=" + GetParam(),
                                     "integrate.rel_tol=" + Str(tol),
                                     "integrate.abs_tol=" + Str(tol * 1e-4)});
    const double error = RelativeError(run.time, expected);
    std::cout << GetParam() << " rel_tol " << tol << ": error " << error << ", " << run.steps << " steps\n";
    EXPECT_LT(error, 1e3 * tol) << GetParam() << " at rel_tol " << tol;
    // Strictly better at each tighter tolerance, until round-off (1e-13) dominates.
    if (previous_error > 1e-12) {
      EXPECT_LT(error, previous_error) << GetParam() << " at rel_tol " << tol;
    }
    previous_error = error;
  }
}

INSTANTIATE_TEST_SUITE_P(AllSteppers, StepperConvergence,
                         ::testing::Values("dopri5", "cash_karp54", "fehlberg78", "bulirsch_stoer"));

}  // namespace
}  // namespace moeflow
