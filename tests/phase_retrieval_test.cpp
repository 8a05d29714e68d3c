// Phase retrieval with one spherical neuron in the online-SGD limit (models/phase_retrieval.ini):
// the exit-time reference of peers.md, and the relative event threshold it is defined with.
//
// Reference of the ODE: the closed form of the one-dimensional equation (derived in the model
// file from theory.md §1, independent of the engine),
//   dm/dt = m [a(1 − m²) − b],  a = 4 − 24η̃,  b = 2η̃σ²,   R(m) = 2(1 − m²) + σ²/2,
// so with u = m², T(u0 → u1) = ln(u1 (c − a u0) / (u0 (c − a u1))) / (2c), c = a − b.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <vector>

#include "moeflow/error.hpp"
#include "moeflow/integrate/integrator.hpp"
#include "moeflow/models/model_builder.hpp"
#include "moeflow/models/protocol.hpp"
#include "moeflow/sgd/simulator.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::BuildFromFile;
using testing::RelativeError;

constexpr double kD = 3000, kLr = 0.1, kNoise = 1e-4, kDrop = 0.99;

double ClosedFormExitTime(double m0) {
  const double a = 4.0 - 24.0 * kLr, b = 2.0 * kLr * kNoise, c = a - b;
  auto risk = [](double u) { return 2.0 * (1.0 - u) + kNoise / 2.0; };
  const double u0 = m0 * m0;
  const double u1 = 1.0 - (kDrop * risk(u0) - kNoise / 2.0) / 2.0;  // risk(u1) = 0.99 risk(u0)
  return std::log(u1 * (c - a * u0) / (u0 * (c - a * u1))) / (2.0 * c);
}

const EventRecord& Event(const RunSummary& summary, const std::string& name) {
  for (const EventRecord& e : summary.events) {
    if (e.spec.name == name) return e;
  }
  throw Error("no event " + name);
}

// The ODE's exit time (risk 1 % below its value at t = 0) from m0 = d^(-1/2), and from a larger m0,
// against the closed form: 1e-8 relative (the integration's tolerance is 1e-10). The threshold the
// run fixed is 0.99 times its initial risk. peers.md's ODE figure, 1.091, is 1.4 % later than our
// 1.07618: its m0 and its way of locating the drop are not given, so it is not asserted.
TEST(PhaseRetrieval, OdeExitTimeMatchesTheClosedFormOfTheOnlineSgdLimit) {
  for (double m0 : {1.0 / std::sqrt(kD), 0.05}) {
    std::ostringstream value;
    value.precision(17);
    value << m0;
    const FlowSetup setup = BuildFromFile("phase_retrieval.ini", {"student.m0=" + value.str()});
    Trajectory trajectory;
    std::vector<StageRecord> stages;
    const RunSummary summary = RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events,
                                           setup.stages, &trajectory, &stages);
    const EventRecord& exit = Event(summary, "exit");
    ASSERT_TRUE(exit.occurred) << summary.message;
    const double initial_risk = 2.0 * (1.0 - m0 * m0) + kNoise / 2.0;
    EXPECT_LT(RelativeError(exit.spec.reference, initial_risk), 1e-12);
    EXPECT_LT(RelativeError(exit.spec.threshold, kDrop * initial_risk), 1e-12);
    EXPECT_LT(RelativeError(exit.value, kDrop * initial_risk), 1e-9);
    EXPECT_LT(RelativeError(exit.time, ClosedFormExitTime(m0)), 1e-8)
        << "m0 = " << m0 << ": ODE " << exit.time << ", closed form " << ClosedFormExitTime(m0);
  }
  EXPECT_NEAR(ClosedFormExitTime(1.0 / std::sqrt(kD)), 1.07618, 1e-5);
}

// Online SGD at d = 3000 from random starts (each seed its own, with its own initial risk as the
// reference of the 1 % drop), 100 seeds: the mean exit time against peers.md's 1.327 ± 0.252 over
// 10 seeds. The seeds' spread (about 0.7) makes that ± the standard error of a mean of 10, so the
// test asks for agreement within 2 combined standard errors (ours from the seeds' spread). It fails
// if our SGD's exit came 40 % early or late. Each seed's threshold is its own initial risk × 0.99.
TEST(PhaseRetrieval, SgdMeanExitTimeAgreesWithThePublishedFigure) {
  const FlowSetup setup = BuildFromFile("phase_retrieval.ini", {"student.init=random", "student.m0="});
  const std::vector<SgdRun> runs = SimulateModelSgd(setup, 100, 0);
  std::vector<double> times;
  for (const SgdRun& run : runs) {
    const EventRecord& exit = Event(run.summary, "exit");
    ASSERT_TRUE(exit.occurred) << "seed " << run.seed << ": " << run.summary.message;
    // The reference is this seed's own initial risk, 2(1 − m0²) + σ²/2 with its own m0.
    const double m0 = run.initial_gram(0, 1);
    EXPECT_LT(RelativeError(exit.spec.reference, 2.0 * (1.0 - m0 * m0) + kNoise / 2.0), 1e-12) << run.seed;
    times.push_back(exit.time);
  }
  const double n = static_cast<double>(times.size());
  const double mean = std::accumulate(times.begin(), times.end(), 0.0) / n;
  double squares = 0;
  for (double t : times) squares += (t - mean) * (t - mean);
  const double sd = std::sqrt(squares / (n - 1));
  const double published = 1.327, published_error = 0.252;
  const double combined = std::sqrt(published_error * published_error + sd * sd / n);
  std::cout << "SGD exit time over " << times.size() << " seeds: mean " << mean << ", sd " << sd
            << "; published " << published << " +- " << published_error << "\n";
  EXPECT_LT(std::abs(mean - published), 2.0 * combined) << "mean " << mean << ", sd " << sd;
  // The spread over seeds is what makes the published ± a standard error: far above 0.252.
  EXPECT_GT(sd, 2.0 * published_error);
}

// In a staged run the threshold is fixed at the run's start, not at each stage's: with a first
// stage of t = 0.5 the exit comes at the same time as in one stage (the stages here change nothing
// else), within 1e-8 of the closed form. (Fixed at the second stage's start, 0.99 of the risk at
// t = 0.5, it would come later.)
TEST(PhaseRetrieval, AStagedRunFixesTheRelativeThresholdAtItsStart) {
  const FlowSetup setup = BuildFromFile("phase_retrieval.ini", {"stage.first.duration=0.5", "stage.second.lr=1"});
  ASSERT_EQ(setup.stages.size(), 2u);
  Trajectory trajectory;
  std::vector<StageRecord> stages;
  const RunSummary summary =
      RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events, setup.stages, &trajectory, &stages);
  const EventRecord& exit = Event(summary, "exit");
  ASSERT_TRUE(exit.occurred) << summary.message;
  EXPECT_GT(exit.time, 0.5);
  EXPECT_LT(RelativeError(exit.time, ClosedFormExitTime(1.0 / std::sqrt(kD))), 1e-8) << exit.time;
}

// A relative threshold needs an observable that is finite and not 0 at the start: the event
// `learned` made relative from m0 = 0 is rejected by key with the value it read; from m0 > 0 it is
// accepted (and holds at once: |m| ≥ 0.9 m0 at t = 0).
TEST(PhaseRetrieval, ARelativeThresholdOfAnObservableThatStartsAtZeroIsRejectedByKey) {
  try {
    BuildFromFile("phase_retrieval.ini", {"student.m0=0", "event.learned.relative=true"});
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("event.learned.relative"), std::string::npos) << message;
    EXPECT_NE(message.find("m_abs = 0"), std::string::npos) << message;
  }
  const FlowSetup setup = BuildFromFile("phase_retrieval.ini", {"event.learned.relative=true"});
  Trajectory trajectory;
  std::vector<StageRecord> stages;
  const RunSummary summary =
      RunProtocol(*setup.system, setup.initial_state, setup.options, setup.events, setup.stages, &trajectory, &stages);
  EXPECT_TRUE(Event(summary, "learned").occurred);
  EXPECT_EQ(Event(summary, "learned").time, 0.0);
  EXPECT_LT(RelativeError(Event(summary, "learned").spec.threshold, 0.9 / std::sqrt(kD)), 1e-12);
}

}  // namespace
}  // namespace moeflow
