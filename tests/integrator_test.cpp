// The integration loop on systems with known solutions: grid output, events, outcomes.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "moeflow/error.hpp"
#include "moeflow/integrate/integrator.hpp"
#include "test_util.hpp"

namespace moeflow {
namespace {

using testing::RelativeError;

// A one-dimensional system dx/dt = f(x), observed as "x".
class ScalarSystem final : public FlowSystem {
 public:
  explicit ScalarSystem(std::function<double(double)> f) : f_(std::move(f)) {}
  int StateSize() const override { return 1; }
  void Drift(const Eigen::VectorXd& x, Eigen::VectorXd& dxdt) const override {
    dxdt.resize(1);
    dxdt[0] = f_(x[0]);
  }
  const std::vector<ObservableInfo>& Observables() const override { return observables_; }
  void Observe(const Eigen::VectorXd& x, Eigen::VectorXd* values) const override { *values = x; }

 private:
  std::function<double(double)> f_;
  std::vector<ObservableInfo> observables_{{"x", 1, 1, "the state"}};
};

constexpr double kDenseOutputTol = 1e-9;  // dopri5 dense output at rel_tol 1e-10 vs exp(-t)

IntegratorOptions Options(double t_end) {
  IntegratorOptions o;
  o.t_end = t_end;
  o.output_times = MakeTimeGrid("linear", 10, 0.0, t_end);
  return o;
}

TEST(Integrator, GridRowsAreAtTheRequestedTimesAndMatchTheSolution) {
  const ScalarSystem decay([](double x) { return -x; });
  Trajectory trajectory;
  const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), Options(3.0), {}, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kReachedEnd);
  ASSERT_EQ(trajectory.time.size(), 11u);
  for (std::size_t r = 0; r < trajectory.time.size(); ++r) {
    EXPECT_DOUBLE_EQ(trajectory.time[r], 0.3 * static_cast<double>(r));
    EXPECT_LT(RelativeError(trajectory.values[r][0], std::exp(-trajectory.time[r])), kDenseOutputTol);
  }
}

TEST(Integrator, EveryStepOutputAddsTheAcceptedStepsInOrder) {
  const ScalarSystem decay([](double x) { return -x; });
  IntegratorOptions o = Options(3.0);
  o.output_every_step = true;
  Trajectory trajectory;
  const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), o, {}, &trajectory);
  EXPECT_GT(trajectory.time.size(), 11u);
  EXPECT_LE(trajectory.time.size(), 11u + static_cast<std::size_t>(summary.accepted_steps));
  for (std::size_t r = 1; r < trajectory.time.size(); ++r) EXPECT_LT(trajectory.time[r - 1], trajectory.time[r]);
}

TEST(Integrator, EventIsLocatedOnTheDenseOutputForEveryStepper) {
  const ScalarSystem decay([](double x) { return -x; });
  for (const std::string& name : StepperNames()) {
    IntegratorOptions o = Options(10.0);
    ASSERT_TRUE(FromString(name, &o.stepper));
    EventSpec half{"half", "x", Comparison::kLessEqual, 0.5, true};
    Trajectory trajectory;
    const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), o, {half}, &trajectory);
    EXPECT_EQ(summary.termination, Termination::kStoppedOnEvent) << name;
    ASSERT_TRUE(summary.events[0].occurred) << name;
    EXPECT_LT(RelativeError(summary.events[0].time, std::log(2.0)), kDenseOutputTol) << name;
    EXPECT_DOUBLE_EQ(trajectory.time.back(), summary.events[0].time) << name;  // the last row is the event
  }
}

TEST(Integrator, NonStoppingEventsAreAllRecordedInTheirOrder) {
  const ScalarSystem growth([](double x) { return x; });
  std::vector<EventSpec> events = {{"e2", "x", Comparison::kGreaterEqual, 2.0, false},
                                   {"e4", "x", Comparison::kGreaterEqual, 4.0, false},
                                   {"never", "x", Comparison::kLess, 0.0, false}};
  Trajectory trajectory;
  const RunSummary summary = Integrate(growth, Eigen::VectorXd::Constant(1, 1.0), Options(2.0), events, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kReachedEnd);
  EXPECT_LT(RelativeError(summary.events[0].time, std::log(2.0)), kDenseOutputTol);
  EXPECT_LT(RelativeError(summary.events[1].time, std::log(4.0)), kDenseOutputTol);
  EXPECT_FALSE(summary.events[2].occurred);
  EXPECT_TRUE(std::isnan(summary.events[2].time));
}

TEST(Integrator, BlowUpIsReportedAsDivergenceWithNumbers) {
  const ScalarSystem blowup([](double x) { return x * x; });  // x = 1/(1 - t)
  Trajectory trajectory;
  const RunSummary summary = Integrate(blowup, Eigen::VectorXd::Constant(1, 1.0), Options(2.0), {}, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kDiverged);
  EXPECT_FALSE(summary.Ok());
  EXPECT_LT(summary.t_final, 1.0);
  EXPECT_NE(summary.message.find("divergence threshold 1e+08"), std::string::npos) << summary.message;
}

TEST(Integrator, NanInTheDriftIsReportedAsNotFinite) {
  const ScalarSystem bad([](double x) { return x > 2.0 ? std::nan("") : 1.0; });
  Trajectory trajectory;
  const RunSummary summary = Integrate(bad, Eigen::VectorXd::Constant(1, 1.0), Options(5.0), {}, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kNotFinite) << summary.message;
  EXPECT_NE(summary.message.find("nan"), std::string::npos) << summary.message;
}

TEST(Integrator, ASingularityIsReportedAsStepSizeUnderflow) {
  // dx/dt = -1/x from x = 1: x = sqrt(1 - 2t) reaches 0 with infinite slope at t = 1/2.
  const ScalarSystem singular([](double x) { return -1.0 / x; });
  for (const std::string& name : StepperNames()) {
    IntegratorOptions o = Options(1.0);
    ASSERT_TRUE(FromString(name, &o.stepper));
    Trajectory trajectory;
    const RunSummary summary = Integrate(singular, Eigen::VectorXd::Constant(1, 1.0), o, {}, &trajectory);
    EXPECT_EQ(summary.termination, Termination::kStepUnderflow) << name << ": " << summary.message;
    EXPECT_LE(summary.t_final, 0.5 + 1e-6) << name << ": " << summary.message;
    std::cout << name << ": " << ToString(summary.termination) << ": " << summary.message << "\n";
  }
}

TEST(Integrator, MaxStepsStopsTheRun) {
  const ScalarSystem decay([](double x) { return -x; });
  IntegratorOptions o = Options(100.0);
  o.max_steps = 3;
  Trajectory trajectory;
  const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), o, {}, &trajectory);
  EXPECT_EQ(summary.termination, Termination::kMaxSteps);
  EXPECT_EQ(summary.accepted_steps, 3);
}

TEST(Integrator, InterruptFlagStopsTheRun) {
  const ScalarSystem decay([](double x) { return -x; });
  std::atomic<bool> interrupt{true};
  Trajectory trajectory;
  IntegrationControl control;
  control.interrupt = &interrupt;
  const RunSummary summary = Integrate(decay, Eigen::VectorXd::Constant(1, 1.0), Options(1.0), {}, &trajectory, control);
  EXPECT_EQ(summary.termination, Termination::kInterrupted);
}

TEST(IntegratorOptions, DefaultsAreValidAndBadValuesNameTheKey) {
  IntegratorOptions o;
  EXPECT_NO_THROW(o.Validate());
  o.rel_tol = -1;
  try {
    o.Validate();
    FAIL() << "negative rel_tol accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("key 'integrate.rel_tol': value '-1'"), std::string::npos) << e.what();
  }
  o = IntegratorOptions();
  o.t_end = 0;
  EXPECT_THROW(o.Validate(), InputError);
}

TEST(ObservableSelector, BadExpressionsAreRejectedWithTheKnownObservables) {
  const std::vector<ObservableInfo> obs = {{"risk", 1, 1, ""}, {"Q", 2, 2, "", true}, {"m", 3, 1, ""}};
  EXPECT_NO_THROW(ObservableSelector("Q[1,0]", obs, "k"));
  EXPECT_NO_THROW(ObservableSelector("m[2]", obs, "k"));
  EXPECT_NO_THROW(ObservableSelector("max(Q)", obs, "k"));
  EXPECT_THROW(ObservableSelector("Q", obs, "k"), InputError);      // a matrix needs an element
  EXPECT_THROW(ObservableSelector("Q[2,0]", obs, "k"), InputError); // out of range
  EXPECT_THROW(ObservableSelector("m[3]", obs, "k"), InputError);
  EXPECT_THROW(ObservableSelector("nope", obs, "k"), InputError);
  EXPECT_THROW(ObservableSelector("m +", obs, "k"), InputError);
  Eigen::VectorXd values(8);
  values << 0.5, 1, 2, 3, 4, -7, 0.1, 0.2;
  EXPECT_EQ(ObservableSelector("Q[1,0]", obs, "k").Evaluate(values), 3);
  EXPECT_EQ(ObservableSelector("maxabs(m)", obs, "k").Evaluate(values), 7);
  EXPECT_EQ(ObservableSelector("min(Q)", obs, "k").Evaluate(values), 1);
  // Ranges of a vector: elements i..j-1 (m = -7, 0.1, 0.2).
  EXPECT_EQ(ObservableSelector("max(m[1:3])", obs, "k").Evaluate(values), 0.2);
  EXPECT_EQ(ObservableSelector("maxabs(m[0:2])", obs, "k").Evaluate(values), 7);
  EXPECT_EQ(ObservableSelector("min(m[1:2])", obs, "k").Evaluate(values), 0.1);
  EXPECT_THROW(ObservableSelector("max(m[2:2])", obs, "k"), InputError);  // empty
  EXPECT_THROW(ObservableSelector("max(m[1:4])", obs, "k"), InputError);  // past the end
  EXPECT_THROW(ObservableSelector("max(Q[0:2])", obs, "k"), InputError);  // not a vector
}

}  // namespace
}  // namespace moeflow
